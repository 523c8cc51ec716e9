"""A model evaluated locally and through a real ``vllm serve`` (``appo vllm-serve``), with the token ids vLLM
feeds it checked against the ids of the local rollouts.

Run from the vLLM venv (``make vllm-env``), e.g. on the demo's trained model::

    .venv-vllm/bin/python scripts/vllm_serve_check.py runs/demo/train/checkpoints/step_000040/model \\
        --out runs/vllm_serve_check.json [--own-template]

1. the local evaluation ``appo eval --model MODEL --benchmarks BENCH --limit 32 --tools python --system-prompt
   short --max-response-tokens 96`` runs (the same steps: :func:`appo.eval.run_benchmarks` with the agent loop of
   :func:`appo.eval.evaluate`), keeping its rollouts;
2. ``vllm serve`` starts (:func:`appo.serve.vllm_serve.start_vllm_server`: our tool parser and, for ``tags``, our
   chat template; ``--own-template`` serves with the model's own chat template instead, to see what it changes);
3. every local rollout that did not run out of budget is compared id for id with what the server renders for the
   conversation a chat client holds before each model turn (vLLM's own ``/tokenize`` on those messages, through
   :func:`appo.agent.render_check.check_rollout`);
4. ``appo eval --endpoint`` (:func:`appo.serve.client.evaluate_endpoint_benchmarks`) runs through the server with
   the same settings, and its rows are compared with the local ones.

Prints a summary and writes it (with every mismatch) as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

BENCH = "proc:arith?n_operands=[2,2]&digits=[1,2]&direct_p=0.5"


def local_eval(model: str, bench: str, limit: int, max_tokens: int, system_prompt: str):
    """``appo eval --model`` with the given settings; returns (EvalResult, [(rollout, prompt messages)], tokenizer)."""
    from appo.agent import RolloutContext, StrategyConfig, prompt_specs, run_strategy
    from appo.engine.hf import HFEngine
    from appo.eval import EvalResult, EvalRow, run_benchmarks, summarize
    from appo.models.loading import load_model_and_tokenizer
    from appo.prompts import resolve_system_prompt

    lm, tok = load_model_and_tokenizer(model, "float32", "cpu")
    engine = HFEngine(lm, tok, max_batch_size=32)
    kept = []

    def run_one(examples, reward_fn, tools, params, limits, cb):
        system = resolve_system_prompt(system_prompt, tools, "tags")
        ctx = RolloutContext.create(engine, tok, "tags", tools, params, limits, seed=0, key_prefix="eval0/")
        prompts = prompt_specs(ctx, examples, range(len(examples)), system_prompt=system)
        rollouts = run_strategy("independent", ctx, prompts, StrategyConfig(n_total=1, n_initial=1)).rows
        scored = reward_fn([examples[r.group] for r in rollouts], [r.response_text for r in rollouts])
        rows = []
        for r, s in zip(rollouts, scored):
            ex = examples[r.group]
            rows.append(EvalRow(id=ex.id, source=ex.data_source, score=float(s.score), metrics=dict(s.metrics),
                                tool_calls=r.num_tool_calls, stop_reason=r.stop_reason, response=r.response_text))
            kept.append((r, [{"role": "system", "content": system}, {"role": "user", "content": ex.question}]))
        return EvalResult(summary=summarize(rows), rows=rows)

    result = run_benchmarks([bench], run_one, limit=limit, tools=["python"], reward="default",
                            max_response_tokens=max_tokens, max_tool_calls=3, temperature=0.0, seed=0, on_batch=None)
    return result, kept, tok


def server_render(base: str, name: str):
    """``serve_render`` for :func:`check_rollout`: the ids vLLM's ``/tokenize`` gives the messages."""
    def render(tokenizer, protocol, messages, tools):
        body = {"model": name, "messages": messages, "tools": [t.schema() for t in tools.values()],
                "add_generation_prompt": True}
        req = urllib.request.Request(f"{base}/tokenize", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(req, timeout=60).read())["tokens"]
    return render


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--bench", default=BENCH)
    ap.add_argument("--limit", type=int, default=32)
    ap.add_argument("--max-response-tokens", type=int, default=96)
    ap.add_argument("--system-prompt", default="short")
    ap.add_argument("--own-template", action="store_true", help="serve with the model's own chat template")
    ap.add_argument("--out", default="runs/vllm_serve_check.json")
    args = ap.parse_args()

    from appo.agent.render_check import check_rollout
    from appo.serve.client import evaluate_endpoint_benchmarks
    from appo.serve.vllm_serve import VLLMServeOptions, start_vllm_server, stop_vllm_server
    from appo.tools.registry import build_tools

    t0 = time.perf_counter()
    local, kept, tok = local_eval(args.model, args.bench, args.limit, args.max_response_tokens, args.system_prompt)
    t_local = time.perf_counter() - t0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="appo-vllm-check-") as work, open(Path(work) / "server.log", "w") as log:
        extra = ()
        if args.own_template:
            (Path(work) / "own.jinja").write_text(tok.chat_template)
            extra = ("--chat-template", str(Path(work) / "own.jinja"))
        t0 = time.perf_counter()
        proc = start_vllm_server(args.model, VLLMServeOptions(port=port, name="m", protocol="tags",
                                                              kv_cache_memory_bytes=256 * 2**20, extra_args=extra),
                                 work, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            while True:
                if proc.poll() is not None:
                    tail = (Path(work) / "server.log").read_text()[-3000:]
                    raise SystemExit(f"vLLM exited {proc.returncode}: {tail}")
                try:
                    urllib.request.urlopen(f"{base}/health", timeout=2).read()
                    break
                except OSError:
                    time.sleep(1)
            t_start = time.perf_counter() - t0
            tools = {t.name: t for t in build_tools(["python"])}
            checked, mismatches = 0, []
            for row, msgs in kept:
                if row.stop_reason == "max_length":
                    continue
                checked += 1
                found = [m for m in check_rollout(tok, "tags", tools, msgs, row, server_render(base, "m"))
                         if m.check == "serve"]
                mismatches += [{"group": row.group, **m.__dict__} for m in found]
            t0 = time.perf_counter()
            served = evaluate_endpoint_benchmarks(f"{base}/v1", [args.bench], limit=args.limit, tools=["python"],
                                                  system_prompt=args.system_prompt,
                                                  max_response_tokens=args.max_response_tokens)
            t_served = time.perf_counter() - t0
        finally:
            stop_vllm_server(proc)
    same = sum(a.response == b.response for a, b in zip(local.rows, served.rows))
    summary = {"model": args.model, "bench": args.bench, "limit": args.limit, "own_template": args.own_template,
               "acc_local": local.summary["all"]["acc"], "acc_vllm_serve": served.summary["all"]["acc"],
               "responses_identical": same, "rows": len(local.rows), "rollouts_id_checked": checked,
               "rollouts_with_id_mismatch": len({m["group"] for m in mismatches}),
               "seconds": {"local_eval": round(t_local, 1), "vllm_start": round(t_start, 1),
                           "endpoint_eval": round(t_served, 1)}}
    print(json.dumps(summary, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({**summary, "mismatches": mismatches[:50]}, indent=1))


if __name__ == "__main__":
    main()
