"""`make smollm2-demo`: SmolLM2-135M-Instruct learns to call the Python tool, end to end, and a report.

Stages (each a function; ``--stages`` picks some, each writes its JSON under ``--out`` so later stages and the
report read what earlier ones measured):

1. ``data``   - demonstrations (:mod:`appo.train.tool_demos`): GSM8K worked solutions from row 200 on turned
               into Python programs, procedural word problems; every one run in the sandbox, scored 1.0. Also
               the RL task (:mod:`appo.train.word_rl`): variant word problems, train and held-out streams.
2. ``sft``    - ``appo sft -c smollm2_coldstart`` (:func:`appo.train.sft_run.run_sft`), full fine-tune, fp32, on
               ``--sft-examples`` demonstrations, ``--word-share`` of them procedural (default 160, 0.8).
3. ``rl``     - ``appo train -c smollm2_rl`` from the SFT model (``--rl-start``), APPO then GRPO (``--arms``) per
               seed (``--seeds``), ``--rl-steps`` steps of 4 prompts x 8 rows each on the variants' train
               stream, the same rollout budget for both arms (:func:`stage_rl`); final policies in
               ``<out>/rl/<arm>_s<seed>``.
4. ``eval``   - the models of ``--models`` (default SFT, APPO s0, GRPO s0; add ``base``), greedy, on the sets of
               ``--sets`` (default the variants' 200 held-out problems; also held-out GSM8K (rows
               0..N-1, never trained on) and the demonstrations' held-out word problems), through the same
               agent loop as training and ``appo eval``, chunk by chunk (models and sets interleaved, results
               saved after each chunk); every rollout of a trained model is also checked id for id against
               the chat template and ``appo serve``'s rendering (:func:`appo.agent.render_check.check_rollout`).
5. ``serve``  - ``appo serve`` the trained model (``--serve-model``, default ``grpo_s0``) and ``appo eval
               --endpoint`` it on the first K problems of ``--serve-set`` (default the variants); the answers
               must equal the local evaluation's (greedy, same ids).
6. ``report`` - accuracy and tool calls per answer with 95% bootstrap intervals, the paired difference of every
               later model against every earlier one (``appo_s0 - sft``, ...), the id check, the wall time of
               each stage -> ``<out>/report.md``.

The defaults are the one-command shape (``make smollm2-demo``: about 92 minutes summed from stage times measured at
load 6-10 on the shared 2-core CPU, not yet timed end to end); the
full-size measurements of docs/results.md (SmolLM2 section: stage times, results, the exact commands) add
seeds (``--seeds 0,1``), models (``--models base,...``) and sets (``--sets wordnew,gsm8k --gsm8k 200``).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

SYSTEM = "Use <python>code</python> to compute; answer as <answer>\\boxed{answer}</answer>."
"""The system prompt of the demonstrations, the evaluations and the served model (configs/smollm2_coldstart.yaml)."""
BASE = "smollm2-135m-instruct"
SETS = ("gsm8k", "word", "wordnew")
"""Held-out sets: GSM8K rows 0..N-1, the demonstrations' word-problem templates, the RL task's variants."""


def _timed(out: Path, stage: str, fn, *args, **kw):
    t0 = time.perf_counter()
    result = fn(*args, **kw)
    times_file = out / "stage_times.json"
    times = json.loads(times_file.read_text()) if times_file.is_file() else {}
    times[stage] = round(time.perf_counter() - t0, 1)
    times_file.write_text(json.dumps(times, indent=1))
    print(f"[smollm2-demo] {stage}: {times[stage]:.0f} s", file=sys.stderr, flush=True)
    return result


def stage_data(out: Path, sft_examples: int, word_share: float, sft_seed: int = 1) -> None:
    """Build the demonstrations and the held-out word problems (``<out>/data``, seed 0); ``sft_examples`` of
    them, ``word_share`` procedural, drawn with ``sft_seed``, go to ``demos_sft.jsonl`` for the SFT stage (seed 1,
    160, 0.8 is the documented ``sft_word160`` set, byte for byte)."""
    from appo.train import word_rl
    from appo.train.tool_demos import main

    main(["--out", str(out / "data"), "--sft-examples", str(sft_examples), "--word-share", str(word_share)])
    if sft_seed != 0:
        main(["--out", str(out / "data"), "--subset-only", "--sft-examples", str(sft_examples), "--word-share",
              str(word_share), "--seed", str(sft_seed)])
    word_rl.main(["--out", str(out / "data")])


def stage_sft(out: Path, overrides: list[str]) -> None:
    """SFT the base model on ``<out>/data/demos_sft.jsonl`` into ``<out>/sft/sft_model``."""
    from appo.config import load_config
    from appo.train.sft_run import run_sft

    cfg = load_config("smollm2_coldstart", [f"data.train_files=[{out / 'data' / 'demos_sft.jsonl'}]",
                                            f"trainer.default_local_dir={out / 'sft'}", *overrides])
    res = run_sft(cfg, progress=True)
    (out / "sft_metrics.json").write_text(json.dumps({"num_examples": res.num_examples, **res.metrics}))


def rl_run_dir(out: Path, arm: str, seed: int) -> Path:
    """Where the RL stage's run of ``arm`` (``appo`` or ``grpo``) and ``seed`` writes (``<out>/rl/<arm>_s<seed>``)."""
    return out / "rl" / f"{arm}_s{seed}"


def rl_model(out: Path, arm: str, seed: int) -> Path:
    """The final policy of that run: its newest checkpoint's ``model`` folder (what eval and serve load)."""
    ckpts = sorted((rl_run_dir(out, arm, seed) / "checkpoints").glob("step_*"))
    if not ckpts:
        raise SystemExit(f"no checkpoint under {rl_run_dir(out, arm, seed)}; run the rl stage first")
    return ckpts[-1] / "model"


def rl_overrides(out: Path, start: str, arm: str, seed: int, steps: int) -> list[str]:
    """The ``appo train -c smollm2_rl`` overrides of one arm and seed: the same start model, prompts, rollout
    budget (``rollout.n`` rows per prompt: GRPO samples them all, APPO ``n_initial`` and branches the rest)
    and steps for both arms; only ``algorithm.name`` and the seed differ. The last step is saved."""
    return [f"model.path={start}", f"algorithm.name={arm}", f"trainer.seed={seed}", f"data.seed={seed}",
            f"data.train_files=[{out / 'data' / 'word_new_train.jsonl'}]",
            f"data.val_files=[{out / 'data' / 'word_new_heldout.jsonl'}]",
            f"trainer.total_training_steps={steps}", f"trainer.save_freq={steps}",
            f"trainer.default_local_dir={rl_run_dir(out, arm, seed)}",
            f"trainer.experiment_name=smollm2_rl_{arm}_s{seed}"]


def stage_rl(out: Path, start: str, arms: list[str], seeds: list[int], steps: int, overrides: list[str]) -> None:
    """APPO and GRPO (``arms``) from the SFT model ``start`` on the variant word problems
    (:mod:`appo.train.word_rl`), one run per seed and arm, arms interleaved within a seed (arm A seed 0, arm B
    seed 0, then seed 1 ...), each through :func:`appo.train.trainer.train` with ``-c smollm2_rl``."""
    from appo.config import load_config
    from appo.train.trainer import train

    for seed in seeds:
        for arm in arms:
            t0 = time.perf_counter()
            cfg = load_config("smollm2_rl", [*rl_overrides(out, start, arm, seed, steps), *overrides])
            train(cfg)
            print(f"[rl] {arm} seed {seed}: {steps} steps in {time.perf_counter() - t0:.0f} s", file=sys.stderr,
                  flush=True)


def load_engine(model: str, batch_size: int):
    """(engine, tokenizer) for ``model`` on the CPU, fp32."""
    from appo.engine.hf import HFEngine
    from appo.models.loading import load_model_and_tokenizer

    lm, tok = load_model_and_tokenizer(model, device="cpu")
    return HFEngine(lm, tok, max_batch_size=batch_size), tok


def eval_chunk(engine, tok, examples, start: int, max_tokens: int, check_ids: bool, tools) -> tuple[list, int, list]:
    """Greedy rollouts of ``examples`` with the Python tool through the agent loop ``appo eval`` runs
    (:func:`appo.eval.evaluate`'s steps, seed ``start``), scored by the ``default`` reward; with ``check_ids``
    every rollout that did not run out of budget is also compared id for id with the chat template's and
    ``appo serve``'s rendering of its conversation. Returns (rows, rollouts checked, mismatches)."""
    from appo.agent import LoopLimits, RolloutContext, StrategyConfig, prompt_specs, run_strategy
    from appo.agent.render_check import check_rollout
    from appo.engine.base import SamplingParams
    from appo.rewards import get_reward
    from appo.serve.chat import render_prompt

    params = SamplingParams(temperature=0.0, max_new_tokens=max_tokens)
    limits = LoopLimits(max_tool_calls=2, max_response_tokens=max_tokens)
    ctx = RolloutContext.create(engine, tok, "tags", tools, params, limits, seed=start, key_prefix=f"eval{start}/")
    prompts = prompt_specs(ctx, examples, range(start, start + len(examples)), system_prompt=SYSTEM)
    rollouts = run_strategy("independent", ctx, prompts, StrategyConfig(n_total=1, n_initial=1)).rows
    engine.release()
    scored = get_reward("default")([examples[r.group] for r in rollouts], [r.response_text for r in rollouts])
    rows, checked, mismatches = [], 0, []
    for r, s in zip(rollouts, scored):
        ex = examples[r.group]
        rows.append({"id": ex.id, "score": s.score, "acc": s.metrics.get("acc", 0.0),
                     "format_ok": s.metrics.get("format_ok", 0.0), "tool_calls": r.num_tool_calls,
                     "stop_reason": r.stop_reason, "response": r.response_text})
        if check_ids and r.stop_reason != "max_length":
            checked += 1
            msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": ex.question}]
            found = check_rollout(tok, "tags", tools, msgs, r, render_prompt)
            mismatches += [{"id": ex.id, **m.__dict__} for m in found]
    return rows, checked, mismatches


def model_paths(out: Path, which: list[str]) -> dict[str, str]:
    """``name -> model`` for the eval stage's ``--models`` entries: ``base`` (SmolLM2), ``sft``
    (``<out>/sft/sft_model``), ``appo_s0`` / ``grpo_s1`` ... (the RL stage's final policy of that arm and seed,
    :func:`rl_model`), or ``name=path`` (another SFT or RL model)."""
    known = {"base": BASE, "sft": str(out / "sft" / "sft_model")}
    paths = {}
    for w in which:
        name, _, path = w.partition("=")
        arm, _, seed = name.partition("_s")
        if not path and arm in ("appo", "grpo") and seed.isdigit():
            paths[name] = str(rl_model(out, arm, int(seed)))
            continue
        if not path and name not in known:
            raise SystemExit(f"--models entry {w!r}: use base, sft, appo_s<seed>, grpo_s<seed> or name=path")
        paths[name] = path or known[name]
    return paths


def stage_eval(out: Path, which: list[str], gsm8k: int, word: int, max_tokens: int, chunk: int,
               order: tuple[str, ...] = ("gsm8k", "word"), word_new: int = 0, gsm8k_from: int = 0) -> None:
    """Evaluate ``which`` (see :func:`model_paths`) on the same held-out problems, ``chunk`` problems at a
    time, alternating models and sets (in ``order``: GSM8K test rows ``gsm8k_from`` .. ``gsm8k_from + gsm8k - 1``
    (a later range can run in another process beside an earlier one), word problems), so that whatever
    has finished when the run is stopped is a paired comparison; each model's rows so far are rewritten to
    ``<out>/eval_<model>_<set>.json`` after every chunk. Every model but ``base`` gets the id check."""
    from appo.data.sources import load_examples
    from appo.tools.registry import build_tools

    models = model_paths(out, which)
    which = list(models)
    engines = {w: load_engine(models[w], chunk) for w in which}
    loaders = {"gsm8k": lambda: load_examples(["gsm8k"], "test", gsm8k_from + gsm8k)[gsm8k_from:] if gsm8k > 0 else [],
               "word": lambda: (load_examples([str(out / "data" / "word_heldout.jsonl")], "test", word)
                                if word > 0 else []),
               "wordnew": lambda: (load_examples([str(out / "data" / "word_new_heldout.jsonl")], "test", word_new)
                                   if word_new > 0 else [])}
    sets = {name: loaders[name]() for name in order}
    results = {(w, name): {"model": models[w], "set": name, "max_tokens": max_tokens, "rows": [],
                           "ids_checked": 0, "id_mismatches": []} for w in which for name in sets}
    tools = build_tools(["python"])
    plan = [(name, start) for start in range(0, max(len(v) for v in sets.values()), chunk)
            for name in sets if start < len(sets[name])]
    try:
        for name, start in plan:
            for w in which:
                t0 = time.perf_counter()
                engine, tok = engines[w]
                rows, checked, mism = eval_chunk(engine, tok, sets[name][start: start + chunk], start, max_tokens,
                                                 w != "base", tools)
                res = results[(w, name)]
                res["rows"] += rows
                res["ids_checked"] += checked
                res["id_mismatches"] += mism
                (out / f"eval_{w}_{name}.json").write_text(json.dumps(res, indent=1))
                n = len(res["rows"])
                print(f"[eval] {w} {name}: {n} done ({time.perf_counter() - t0:.0f} s for {len(rows)}); acc "
                      f"{sum(r['acc'] for r in res['rows']) / n:.3f}, tool calls/answer "
                      f"{sum(r['tool_calls'] for r in res['rows']) / n:.2f}", file=sys.stderr, flush=True)
    finally:
        for t in tools:
            t.close()


SET_FILES = {"word": "word_heldout.jsonl", "wordnew": "word_new_heldout.jsonl"}
"""The held-out sets the serve stage can send through the endpoint (files under ``<out>/data``)."""


def stage_serve(out: Path, k: int, max_tokens: int, port: int = 8765, model: str = "grpo_s0",
                held_out: str = "wordnew") -> None:
    """``appo serve`` a model (``model``: a ``--models`` entry, by default the trained GRPO policy), evaluate the
    first ``k`` problems of the ``held_out`` set through ``appo eval --endpoint``'s Python call
    (:func:`appo.serve.client.evaluate_endpoint_benchmarks`), and compare each answer (correctness and text) with
    the local evaluation's ``<out>/eval_<name>_<held_out>.json`` (``<out>/serve.json``)."""
    from appo.serve.client import evaluate_endpoint_benchmarks

    if held_out not in SET_FILES:
        raise SystemExit(f"--serve-set {held_out!r}: use one of {', '.join(SET_FILES)}")
    (name, path), = model_paths(out, [model]).items()
    spec = str(out / "data" / SET_FILES[held_out])
    proc = subprocess.Popen([sys.executable, "-m", "appo", "serve", path, "--port", str(port), "--protocol", "tags",
                             "--device", "cpu", "--log-level", "warning"])
    try:
        import urllib.request

        deadline = time.time() + 600
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("appo serve did not come up") from None
                time.sleep(2)
        res = evaluate_endpoint_benchmarks(f"http://127.0.0.1:{port}/v1", [spec], limit=k, tools=["python"],
                                           protocol="tags", system_prompt=SYSTEM, max_response_tokens=max_tokens,
                                           max_tool_calls=2, workers=1)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    local_file = out / f"eval_{name}_{held_out}.json"
    local = {r["id"]: r for r in json.loads(local_file.read_text())["rows"]} if local_file.is_file() else {}
    same = [r.id in local and local[r.id]["acc"] == r.metrics.get("acc", 0.0) for r in res.rows]
    same_text = [r.id in local and local[r.id]["response"] == r.response for r in res.rows]
    (out / "serve.json").write_text(json.dumps({
        "model": name, "path": path, "set": held_out, "k": k, "summary": res.summary, "same_acc_as_local": sum(same),
        "same_response_as_local": sum(same_text), "local_rows": sum(r.id in local for r in res.rows),
        "rows": [{"id": r.id, "acc": r.metrics.get("acc"), "tool_calls": r.tool_calls, "response": r.response,
                  "local_response": local.get(r.id, {}).get("response")} for r in res.rows]}, indent=1))


# ------------------------------------------------------------------------------------------- report
def bootstrap_ci(values: list[float], reps: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95% percentile-bootstrap interval (resampling rows with replacement, ``reps`` times)."""
    if not values:
        return float("nan"), float("nan"), float("nan")
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(reps))
    return sum(values) / n, means[int(0.025 * reps)], means[int(0.975 * reps) - 1]


def paired_ci(a: dict[str, float], b: dict[str, float], reps: int = 10_000, seed: int = 0):
    """Mean of ``b - a`` over the ids both have, with its 95% bootstrap interval (rows resampled in pairs)."""
    ids = sorted(set(a) & set(b))
    return bootstrap_ci([b[i] - a[i] for i in ids], reps, seed) + (len(ids),)


def pooled_seeds(data: dict, names: tuple[str, ...], held_out: str) -> list[str]:
    """Report lines for RL arms with 2+ seeds among ``names`` on ``held_out``: each arm's per-problem accuracy
    averaged over its seeds (``appo_s*``), paired with every other model (``appo_s* - sft``) and with the other
    arm's average (``grpo_s* - appo_s*``), on the problems every model involved answered. The bootstrap resamples
    problems, so the interval holds the problem sampling of these seeds, not the seed-to-seed spread."""
    arms: dict[str, list[str]] = {}
    for w in names:
        arm, _, seed = w.partition("_s")
        if arm in ("appo", "grpo") and seed.isdigit() and (w, held_out) in data:
            arms.setdefault(arm, []).append(w)
    arms = {a: ws for a, ws in arms.items() if len(ws) >= 2}
    if not arms:
        return []

    def acc(w: str) -> dict[str, float]:
        return {r["id"]: float(r["acc"]) for r in data[(w, held_out)]["rows"]}

    pooled = {}
    for arm, ws in arms.items():
        per = [acc(w) for w in ws]
        ids = set.intersection(*(set(a) for a in per))
        pooled[f"{arm}_s*"] = ({i: sum(a[i] for a in per) / len(per) for i in ids}, ws)
    others = [w for w in names if (w, held_out) in data and not any(w in ws for _, ws in pooled.values())]
    lines = []
    for name, (vals, ws) in pooled.items():
        m, lo, hi = bootstrap_ci(list(vals.values()))
        lines.append(f"- {held_out}: {name} (mean of {', '.join(ws)}) accuracy {m:.3f} [{lo:.3f}, {hi:.3f}] "
                     f"({len(vals)} problems)")
        for w in others:
            m, lo, hi, n = paired_ci(acc(w), vals)
            lines.append(f"- {held_out}: {name} - {w} accuracy {m:+.3f} [{lo:+.3f}, {hi:+.3f}] (paired, {n} problems)")
    if len(pooled) == 2:
        (na, (va, _)), (nb, (vb, _)) = sorted(pooled.items())
        m, lo, hi, n = paired_ci(va, vb)
        lines.append(f"- {held_out}: {nb} - {na} accuracy {m:+.3f} [{lo:+.3f}, {hi:+.3f}] (paired, {n} problems)")
    return lines


def stage_report(out: Path, names: tuple[str, ...] = ("base", "sft")) -> None:
    """``<out>/report.md`` from the stages' JSON files: one row per model in ``names`` and set, the paired
    difference of every later model against every earlier one (``sft - base``, ...)."""
    lines = ["# SmolLM2-135M-Instruct: cold start on tool demonstrations", "",
             "Greedy, Python tool only, tags protocol, system prompt `" + SYSTEM + "`.", "",
             "| model | set | n | accuracy [95% CI] | tool calls / answer [95% CI] | format ok | truncated |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    data: dict = {}
    for w in names:
        for name in SETS:
            f = out / f"eval_{w}_{name}.json"
            if not f.is_file():
                continue
            res = json.loads(f.read_text())
            rows = res["rows"]
            acc = bootstrap_ci([r["acc"] for r in rows])
            calls = bootstrap_ci([float(r["tool_calls"]) for r in rows])
            fmt = sum(r["format_ok"] for r in rows) / len(rows)
            trunc = sum(r["stop_reason"] == "max_length" for r in rows) / len(rows)
            data[(w, name)] = res
            lines.append(f"| {w} | {name} | {len(rows)} | {acc[0]:.3f} [{acc[1]:.3f}, {acc[2]:.3f}] | "
                         f"{calls[0]:.2f} [{calls[1]:.2f}, {calls[2]:.2f}] | {fmt:.2f} | {trunc:.2f} |")
    lines.append("")
    for name in SETS:
        for i, early in enumerate(names):
            for late in names[i + 1:]:
                if (early, name) in data and (late, name) in data:
                    for key, what in (("acc", "accuracy"), ("tool_calls", "tool calls / answer")):
                        a = {r["id"]: float(r[key]) for r in data[(early, name)]["rows"]}
                        b = {r["id"]: float(r[key]) for r in data[(late, name)]["rows"]}
                        m, lo, hi, n = paired_ci(a, b)
                        lines.append(f"- {name}: {late} - {early} {what} {m:+.3f} [{lo:+.3f}, {hi:+.3f}] "
                                     f"(paired, {n} problems)")
    for name in SETS:
        lines += pooled_seeds(data, names, name)
    for (w, name), res in data.items():
        if w != "base":
            lines.append(f"- id check, {w} on {name}: {res['ids_checked']} rollouts compared with the chat template "
                         f"and `appo serve`'s rendering, {len(res['id_mismatches'])} mismatches")
    sf = out / "serve.json"
    if sf.is_file():
        s = json.loads(sf.read_text())
        lines.append(f"- `appo serve` {s.get('model', 'sft')} + `appo eval --endpoint`, first {s['k']} "
                     f"{s.get('set', 'word')} problems: "
                     f"same answer text as the local evaluation on {s.get('same_response_as_local', '?')} of "
                     f"{s['k']}; accuracy "
                     f"{s['summary']['all'].get('acc', float('nan')):.3f}, tool calls / answer "
                     f"{s['summary']['all']['tool_calls']:.2f}; same correctness as the local evaluation on "
                     f"{s['same_acc_as_local']} of {s['k']}")
    tf = out / "stage_times.json"
    if tf.is_file():
        times = json.loads(tf.read_text())
        lines += ["", "Wall time per stage (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items())]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/smollm2")
    ap.add_argument("--stages", default="data,sft,rl,eval,serve,report")
    ap.add_argument("--sft-examples", type=int, default=160, help="demonstrations the SFT stage trains on")
    ap.add_argument("--word-share", type=float, default=0.8, help="share of procedural word problems in them")
    ap.add_argument("--rl-start", default="", help="the RL stage's start model (default: the SFT stage's model)")
    ap.add_argument("--arms", default="appo,grpo", help="RL algorithms, run one after the other per seed")
    ap.add_argument("--seeds", default="0", help="RL seeds (comma-separated)")
    ap.add_argument("--rl-steps", type=int, default=6, help="RL steps per run (4 prompts x 8 rows each)")
    ap.add_argument("--models", default="sft,appo_s0,grpo_s0",
                    help="which models the eval stage runs (base, sft, appo_s<seed>, grpo_s<seed>, name=path)")
    ap.add_argument("--sets", default="wordnew", help="held-out sets in the order their chunks alternate")
    ap.add_argument("--word-new", type=int, default=200, help="held-out variant word problems (the RL task)")
    ap.add_argument("--gsm8k", type=int, default=200, help="held-out GSM8K problems (test rows F..F+N-1)")
    ap.add_argument("--gsm8k-from", type=int, default=0, help="first GSM8K test row F (default 0)")
    ap.add_argument("--word", type=int, default=100, help="held-out word problems")
    ap.add_argument("--max-tokens", type=int, default=160, help="response budget (model and tool tokens)")
    ap.add_argument("--report-models", default="", help="models in the report, in order (default: --models)")
    ap.add_argument("--chunk", type=int, default=25, help="problems per engine batch (and per saved chunk)")
    ap.add_argument("--serve-k", type=int, default=10)
    ap.add_argument("--serve-model", default="grpo_s0", help="the --models entry the serve stage serves")
    ap.add_argument("--serve-set", default="wordnew", choices=sorted(SET_FILES),
                    help="the held-out set it sends through the endpoint")
    ap.add_argument("--sft-seed", type=int, default=1, help="seed of the SFT subset's draw (1: sft_word160's)")
    ap.add_argument("--rl-override", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for the RL stage (repeatable): actor.optim.lr=2e-5")
    ap.add_argument("overrides", nargs="*", help="config overrides for the SFT stage (sft.lr=...)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stages = args.stages.split(",")
    if "data" in stages:
        _timed(out, "data", stage_data, out, args.sft_examples, args.word_share, args.sft_seed)
    if "sft" in stages:
        _timed(out, "sft", stage_sft, out, args.overrides)
    if "rl" in stages:
        _timed(out, "rl", stage_rl, out, args.rl_start or str(out / "sft" / "sft_model"), args.arms.split(","),
               [int(x) for x in args.seeds.split(",")], args.rl_steps, args.rl_override)
    if "eval" in stages:
        _timed(out, "eval", stage_eval, out, args.models.split(","), args.gsm8k, args.word, args.max_tokens,
               args.chunk, tuple(args.sets.split(",")), args.word_new, args.gsm8k_from)
    if "serve" in stages:
        _timed(out, "serve", stage_serve, out, args.serve_k, args.max_tokens, model=args.serve_model,
               held_out=args.serve_set)
    if "report" in stages:
        stage_report(out, tuple(args.report_models.split(",")) if args.report_models
                     else tuple(model_paths(out, args.models.split(","))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
