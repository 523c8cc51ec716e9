import json, sys
a = json.load(open(sys.argv[1])); b = json.load(open(sys.argv[2]))
rows = lambda d: [(p["id"], r["uid"], r["tokens"], r["reward"], r["advantage"]) for p in d["prompts"] for r in p["rows"]]
ra, rb = rows(a), rows(b)
print("rows", len(ra), len(rb), "same prompts", [x[0] for x in ra] == [x[0] for x in rb])
same_tok = sum(x[2] == y[2] for x, y in zip(ra, rb)); same_rew = sum(x[3] == y[3] for x, y in zip(ra, rb))
maxdadv = max(max((abs(p - q) for p, q in zip(x[4], y[4])), default=0) for x, y in zip(ra, rb))
print("rows with equal tokens", same_tok, "equal reward", same_rew, "max |adv diff|", maxdadv)
