"""Procedural tasks: determinism, disjoint splits, demonstration shape, verification, BM25 retrieval, budget."""

import json
import re

import bm25s
import pytest

from appo.data.procedural import (
    TASKS,
    ArithTask,
    ChainTask,
    MultihopTask,
    Task,
    build_kb,
    get_task,
    register_task,
    split_of,
)
from appo.data.procedural.multihop import TEMPLATES, walk

NAMES = ("arith", "chain", "multihop", "combo", "mix")


def test_registry():
    assert set(NAMES) <= set(TASKS)
    with pytest.raises(ValueError, match="already registered"):
        register_task(type("Dup", (ArithTask,), {"name": "arith"}))
    with pytest.raises(KeyError, match="unknown procedural task"):
        get_task("sudoku")


def test_split_rule_is_a_stable_hash():
    # SHA-256("abc")[:12 hex] / 16**12 = 0xba7816bf8f01 / 16**12 = 0.728... -> train at held_out 0.1
    assert split_of("abc", 0.1) == "train" and split_of("abc", 0.8) == "test"


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_examples(name):
    task = get_task(name)
    a, b = task.generate(40, seed=3), get_task(name).generate(40, seed=3)
    assert a == b
    assert [e.question for e in task.generate(40, seed=4)] != [e.question for e in a]
    assert len({e.id for e in a}) == 40 and a[0].id == f"{name}/3/0"
    assert get_task(name).generate(3, seed=3, split="test")[0].id == f"{name}-test/3/0"


def _split_key(example):
    return example.extra_info.get("anchor") or example.extra_info["expression"]


@pytest.mark.parametrize("name", NAMES)
def test_train_and_test_never_overlap(name):
    task = get_task(name)
    train = {_split_key(e) for seed in (0, 1) for e in task.generate(600, seed=seed)}
    test = {_split_key(e) for seed in (0, 1, 2) for e in task.generate(150, seed=seed, split="test")}
    assert train and test and not train & test


def test_held_out_anchors_agree_across_tasks():
    # a company held out of multihop is held out of combo (same key, same rule)
    mh_test = {e.extra_info["anchor"] for e in get_task("multihop").generate(200, seed=0, split="test")}
    combo_train = {e.extra_info["anchor"] for e in get_task("combo").generate(600, seed=0)}
    assert mh_test and not mh_test & combo_train


def test_arith_knobs_and_values():
    task = ArithTask(n_operands=(3, 3), digits=(3, 3), ops=("*",))
    for e in task.generate(30, seed=0):
        numbers = re.findall(r"\d+", e.question)
        assert len(numbers) == 3 and all(len(n) == 3 for n in numbers)
        a, b, c = map(int, numbers)
        assert e.answers == (str(a * b * c),)
    with pytest.raises(ValueError, match="ops"):
        ArithTask(ops=("/",))
    with pytest.raises(ValueError, match="n_operands"):
        ArithTask(n_operands=(1, 2))


@pytest.mark.parametrize("name", NAMES)
def test_demonstration_shape(name):
    task = get_task(name)
    for e in task.generate(30, seed=0):
        turns = task.demonstration(e)
        assert len(turns) >= 2
        for turn in turns:
            assert turn.startswith("<think>") and turn.count("</think>") == 1
            assert "<result>" not in turn
        for turn in turns[:-1]:
            assert re.search(r"<(python|search)>[^<]+</\1>$", turn), turn
        assert re.search(r"<answer>\\boxed\{[^{}]+\}</answer>$", turns[-1])
        if e.data_source == "proc_multihop":
            assert len(turns) == len(e.extra_info["hops"]) + 1


class Bm25:
    """A stand-in for the search tool: bm25s over the corpus, top-k texts one per line."""

    def __init__(self, docs, with_title=False, stopwords="en"):
        self.docs, self.stopwords = docs, stopwords
        texts = [f"{d['title']}\n{d['text']}" if with_title else d["text"] for d in docs]
        self.bm25 = bm25s.BM25()
        self.bm25.index(bm25s.tokenize(texts, stopwords=stopwords, show_progress=False), show_progress=False)

    def top(self, queries, k=2):
        tokens = bm25s.tokenize(queries, stopwords=self.stopwords, show_progress=False)
        ids, scores = self.bm25.retrieve(tokens, k=k, show_progress=False)
        return ids, scores


def run_demo(task, example, search, k=2):
    """The full response the agent loop would produce: turns with tool results between them."""
    turns = task.demonstration(example)
    parts = []
    for turn in turns[:-1]:
        parts.append(turn)
        if turn.endswith("</python>"):
            code = turn.split("<python>")[1][: -len("</python>")]
            assert code.startswith("print(")
            value = eval(code[len("print("):-1], {"__builtins__": {}})  # digits and + - * only
            parts.append(f"\n<result>\n{value}\n</result>\n")
        else:
            query = turn.split("<search>")[1][: -len("</search>")]
            ids, _ = search.top([query], k=k)
            parts.append("\n<result>\n" + "\n".join(search.docs[i]["text"] for i in ids[0]) + "\n</result>\n")
    return "".join(parts) + turns[-1]


@pytest.fixture(scope="module")
def mix_search():
    return Bm25(get_task("mix").corpus())


def test_verifier_accepts_demonstrated_answers(mix_search):
    task = get_task("mix")
    examples = task.generate(60, seed=0) + task.generate(20, seed=0, split="test")
    responses = [run_demo(task, e, mix_search) for e in examples]
    scores = task.verify(examples, responses)
    for e, r, s in zip(examples, responses, scores):
        expected = 1.1 if e.data_source == "proc_combo" else 1.0  # combo uses both tools: +0.1
        assert s.score == pytest.approx(expected), (e.question, r, s)
        assert s.metrics["format_ok"] == 1.0 and s.metrics["acc"] == 1.0
    assert {e.data_source for e in examples} == {"proc_arith", "proc_multihop", "proc_combo"}
    wrong = task.verify(examples[:1], [responses[0].replace("\\boxed{", "\\boxed{9")])
    assert wrong[0].score < 1.0


def _all_hops(kb):
    for kind, anchor in kb.anchors:
        for template in TEMPLATES:
            if template.anchor == kind:
                yield from walk(kb, anchor, template.chain)
    for company in kb.companies:
        fact = kb.fact("founding year", company)
        yield {"query": f"founding year of {company}", "doc_id": fact.doc_id}


@pytest.mark.parametrize(
    "knobs, with_title, stopwords",
    [
        ({}, False, "en"),
        ({}, True, "en"),
        ({}, False, None),
        ({"kb_seed": 5, "distractors": 3, "shared_surname_p": 0.7, "kb_size": 120}, False, "en"),
        ({"kb_seed": 6, "distractors": 2, "shared_surname_p": 0.9, "kb_size": 120}, True, "en"),
    ],
)
def test_every_demonstrated_query_retrieves_its_fact_first(knobs, with_title, stopwords):
    task = MultihopTask(hops=(2, 3), doc_titles=with_title, **knobs)
    docs = task.corpus()
    assert all(bool(d["title"]) == with_title for d in docs)
    search = Bm25(docs, with_title=with_title, stopwords=stopwords)
    hops = list(_all_hops(task.kb()))
    ids, scores = search.top([h["query"] for h in hops], k=2)
    misses = [(h["query"], docs[i[0]]["text"]) for h, i, s in zip(hops, ids, scores)
              if docs[i[0]]["id"] != h["doc_id"] or s[0] <= s[1]]  # strictly first, no tie
    assert not misses, misses[:5]


def test_kb_is_deterministic_and_well_formed(tmp_path):
    kb = build_kb(0)
    assert kb == build_kb.__wrapped__(0)
    assert len(kb.films) == len(kb.companies) == 100
    docs = kb.docs()
    assert len({d["id"] for d in docs}) == len(docs)
    assert len({(f.relation, f.subject) for f in kb.facts}) == len(kb.facts)  # one value per relation
    heads = {kb.fact("director", f).value for f in kb.films} | {kb.fact("founder", c).value for c in kb.companies}
    mothers = {f.value for f in kb.facts if f.relation == "mother"}
    assert not heads & mothers  # "mother of X" has one matching document
    path = get_task("multihop").write_corpus(tmp_path / "kb.jsonl")
    assert [json.loads(line) for line in path.read_text().splitlines()] == docs
    assert get_task("arith").corpus() == []
    with pytest.raises(ValueError, match="distractors"):
        build_kb(0, distractors=4)
    with pytest.raises(ValueError, match="hops"):
        MultihopTask(hops=(4,))


def test_token_budget(mix_search):
    from appo.models.tiny import train_tokenizer

    task = get_task("mix")
    examples = task.generate(300, seed=0)
    responses = [run_demo(task, e, mix_search, k=2) for e in examples]
    tok = train_tokenizer([e.question for e in examples] + responses, vocab_size=512)
    prompt_tokens = max(len(tok(e.question)["input_ids"]) for e in examples)
    demo_tokens = max(len(tok(r)["input_ids"]) for r in responses)
    assert prompt_tokens < 120 and demo_tokens < 200, (prompt_tokens, demo_tokens)


def test_chain_carries_each_result_into_the_next_call():
    task = ChainTask()
    examples = task.generate(200, seed=0)
    precedence_traps = 0
    for e in examples:
        info = e.extra_info
        turns = task.demonstration(e)
        calls = [re.search(r"<python>print\((\d+) ([-+*]) (\d+)\)</python>$", t).groups() for t in turns[:-1]]
        assert 3 <= len(calls) == len(info["steps"]) <= 4
        assert calls[0][0] == str(info["start"])
        for (x, _, _), previous in zip(calls[1:], info["values"]):
            assert x == str(previous)  # the carried value is the previous call's result
        assert [[op, int(k)] for _, op, k in calls] == info["steps"]
        assert all(0 <= v <= 999 for v in info["values"]) and e.answers == (str(info["values"][-1]),)
        assert all(f"{op} {k}" in e.question for op, k in info["steps"])
        one_shot = " ".join([str(info["start"])] + [f"{op} {k}" for op, k in info["steps"]])
        precedence_traps += eval(one_shot) != info["values"][-1]  # digits and + - * only
    assert precedence_traps > 40  # one flat expression is often wrong: the task must be chained
    assert {len(e.extra_info["steps"]) for e in examples} == {3, 4}


def test_chain_knobs():
    task = ChainTask(steps=(2, 2), start_digits=(2, 2), ops=("*",), multiplier=(2, 3), max_value=10_000)
    for e in task.generate(20, seed=1):
        assert len(e.extra_info["steps"]) == 2 and 10 <= e.extra_info["start"] <= 99
        assert all(op == "*" and 2 <= k <= 3 for op, k in e.extra_info["steps"])
    with pytest.raises(ValueError, match="ops"):
        ChainTask(ops=("/",))
    with pytest.raises(ValueError, match="steps"):
        ChainTask(steps=(0, 2))
    with pytest.raises(ValueError, match="max_value"):
        ChainTask(start_digits=(3, 3), max_value=99)


def test_chain_verifier_and_token_budget():
    from appo.models.tiny import train_tokenizer

    task = get_task("chain")
    examples = task.generate(200, seed=0) + task.generate(20, seed=0, split="test")
    responses = [run_demo(task, e, None) for e in examples]
    scores = task.verify(examples, responses)
    assert all(s.score == pytest.approx(1.0) and s.metrics["acc"] == 1.0 for s in scores)
    tok = train_tokenizer([x.question for x in examples] + responses, vocab_size=512)
    prompt_tokens = max(len(tok(x.question)["input_ids"]) for x in examples)
    demo_tokens = max(len(tok(x)["input_ids"]) for x in responses)
    assert prompt_tokens < 60 and demo_tokens < 170, (prompt_tokens, demo_tokens)


def test_task_contract_rejects_bad_held_out():
    with pytest.raises(ValueError, match="held_out"):
        ArithTask(held_out=0.0)
    assert isinstance(get_task("mix"), Task)


def test_chain_labels_number_each_operation_and_the_thought_names_it():
    task = ChainTask(labels=True)
    for e in task.generate(50, seed=3):
        steps = e.extra_info["steps"]
        listed = " ".join(f"Step {k + 1}: {op} {n}." for k, (op, n) in enumerate(steps))
        assert e.question == f"Start with {e.extra_info['start']}. {listed} What is the result?"
        turns = task.demonstration(e)
        for k, ((op, n), turn) in enumerate(zip(steps, turns)):
            assert turn.startswith(f"<think>Step {k + 1}: {op} {n}.</think>\n<python>print(")
            assert turn.endswith(f" {op} {n})</python>")
        assert task.verify([e], [run_demo(task, e, None)])[0].score == pytest.approx(1.0)
    plain = ChainTask().generate(5, seed=3)
    assert all("Step" not in e.question and "Then" in e.question for e in plain)
    with pytest.raises(ValueError, match="labels"):
        ChainTask(labels="yes")


def test_chain_labels_from_a_proc_spec():
    from appo.data.sources import task_of

    assert task_of("proc:chain?labels=true&steps=[3,3]").labels is True
    assert task_of("proc:chain").labels is False


def test_depth_records_its_decisive_step_and_noise_flips_only_that_call():
    from appo.data.procedural.depth import DECISIVE_PATTERN

    task = get_task("depth", steps=5, depth=[1, 3, 5], noise=0.45)
    examples = task.generate(2000, seed=0)
    noisy = [task.noisy(e) for e in examples]
    assert 0.42 < sum(noisy) / len(noisy) < 0.48  # the share of demonstrations with the wrong operator
    assert {e.extra_info["decisive_step"] for e in examples} == {1, 3, 5}
    for e, flipped in zip(examples[:200], noisy[:200]):
        d = e.extra_info["decisive_step"]
        assert e.extra_info["decisive"] == {"pattern": DECISIVE_PATTERN, "occurrence": d - 1, "group": 1}
        assert f"Step {d}: Check " in e.question and e.question.count("Check") == 1
        plain = [(op, a) for k, (op, a) in enumerate(e.extra_info["steps"]) if k + 1 != d]
        assert plain == [("+", 1)] * 4  # every other step is + 1: nothing to copy but the carried value
        calls = [re.search(DECISIVE_PATTERN, t) for t in task.demonstration(e)[:-1]]
        ops = [m.group(1) for m in calls]
        want = [op for op, _ in e.extra_info["steps"]]
        wrong = [k + 1 for k, (a, b) in enumerate(zip(ops, want)) if a != b]
        assert wrong == ([d] if flipped else [])
        demo_answer = re.search(r"boxed\{(-?\d+)\}", task.demonstration(e)[-1]).group(1)
        assert (demo_answer == e.answers[0]) == (not flipped)
    clean = get_task("depth", noise=0.0)
    assert not any(clean.noisy(e) for e in clean.generate(200, seed=0))


def test_depth_knobs_and_verifier():
    with pytest.raises(ValueError, match="depth"):
        get_task("depth", steps=3, depth=[4])
    with pytest.raises(ValueError, match="noise"):
        get_task("depth", noise=1.0)
    with pytest.raises(ValueError, match="steps"):
        get_task("depth", steps=0)
    task = get_task("depth", depth=[2], noise=0.0)
    examples = task.generate(50, seed=1) + task.generate(10, seed=1, split="test")
    assert all(e.extra_info["decisive_step"] == 2 for e in examples)
    scores = task.verify(examples, [run_demo(task, e, None) for e in examples])
    assert all(s.score == pytest.approx(1.0) for s in scores)


def test_depth_leaves_one_decision_and_nothing_to_copy_by_default():
    # two start models could not copy digits from the question (first call wrong 91-100%); by default the start
    # and the decisive operand are fixed, so a question is (decisive step, its operator) and nothing else
    task = get_task("depth", steps=5, depth=[3], noise=0.0)
    examples = task.generate(300, seed=3)
    assert {e.question for e in examples} == {
        f"Start with 5. Step 1: + 1. Step 2: + 1. Step 3: Check {op} 1. Step 4: + 1. Step 5: + 1. What is the result?"
        for op in "+-"}
    assert {e.answers[0] for e in examples} == {"8", "10"}
    test = task.generate(30, seed=3, split="test")  # both splits draw the same two questions, under disjoint keys
    assert {e.question for e in test} == {e.question for e in examples}
    e = examples[0]
    thoughts = [re.search(r"<think>(.*?)</think>", t).group(1) for t in task.demonstration(e)[:-1]]
    assert thoughts[2].startswith("Step 3: Check ") and all(t in e.question for t in thoughts)
    wide = get_task("depth", depth=[1, 3, 5], start=[1, 9], operand=[1, 9], noise=0.0).generate(500, seed=0)
    assert {x.extra_info["start"] for x in wide} == set(range(1, 10))
    assert {x.extra_info["steps"][x.extra_info["decisive_step"] - 1][1] for x in wide} == set(range(1, 10))
    assert all(a == 1 for x in wide for k, (_, a) in enumerate(x.extra_info["steps"])
               if k + 1 != x.extra_info["decisive_step"])
    with pytest.raises(ValueError, match="operand"):
        get_task("depth", operand=[0, 3])
    with pytest.raises(ValueError, match="start"):
        get_task("depth", start=[9, 1])


def test_depth_from_a_proc_spec():
    from appo.data.sources import task_of

    task = task_of("proc:depth?steps=5&depth=[5]&noise=0.3&start=[1,9]&operand=[2,4]")
    assert (task.steps, task.depth, task.noise, task.start, task.operand) == (5, (5,), 0.3, (1, 9), (2, 4))


def test_depth_error_profile_by_hand():
    from appo.data.procedural.depth import error_profile, first_wrong_step

    task = get_task("depth", steps=3, depth=[2], noise=0.0)
    ex = task.generate(1, seed=0)[0]
    right = run_demo(task, ex, None)
    assert first_wrong_step(ex, right) == 0
    info = ex.extra_info
    op2, a2 = info["steps"][1]
    wrong_op = "-" if op2 == "+" else "+"
    bad_call = right.replace(f"print({info['values'][0]} {op2} {a2})", f"print({info['values'][0]} {wrong_op} {a2})")
    assert first_wrong_step(ex, bad_call) == 2
    bad_answer = right.replace(f"boxed{{{info['values'][-1]}}}", "boxed{12345}")
    assert first_wrong_step(ex, bad_answer) == 4
    assert first_wrong_step(ex, "<answer>\\boxed{1}</answer>") == 1
    prof = error_profile([ex] * 4, [right, bad_call, bad_call, bad_answer])
    assert prof["acc"] == 0.25 and prof["step_1"] == 0.0 and prof["step_2"] == 0.5 and prof["decisive"] == 0.5
    assert prof["step_3"] == 0.0 and prof["answer"] == 0.5 and prof["n"] == 4.0
    assert prof["op_step_1"] == 0.0 and prof["op_step_2"] == 0.5 and prof["op_step_3"] == 0.0
    wrong_value = right.replace(f"print({info['values'][0]} ", "print(999 ")  # carried value wrong, operator right
    prof = error_profile([ex, ex], [wrong_value, "<answer>\\boxed{1}</answer>"])
    assert prof["step_2"] == 1.0 and prof["op_step_2"] == 0.0 and prof["op_step_1"] == 0.0
    with pytest.raises(ValueError, match="one response per example"):
        error_profile([ex], [])
