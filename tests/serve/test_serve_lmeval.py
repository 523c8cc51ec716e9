"""EleutherAI's lm-evaluation-harness (the real ``lm_eval``, from ``.venv-lmeval``: ``make lmeval-env``) runs its
``local-completions`` model against ``appo serve``, with its defaults (token-id prompts, ``echo`` +
``logprobs`` for log-likelihoods), on two small local tasks: a ``generate_until`` one and a
``multiple_choice`` one. The log-likelihoods lm-eval logs must equal the served model's own, computed here
with transformers.

Also without lm-eval: the completions endpoint's prompt shapes and ``echo`` checked over HTTP.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import torch
from serve_helpers import free_port, start_server

ROOT = Path(__file__).parents[2]
LMEVAL = ROOT / ".venv-lmeval" / "bin" / "lm_eval"
TASKS = Path(__file__).parent / "lmeval_task"


@pytest.fixture(scope="module")
def served_random(tiny_model_dir):
    port = free_port()
    proc = start_server([str(tiny_model_dir), "--name", "tiny"], port)
    yield f"http://127.0.0.1:{port}/v1"
    proc.terminate()
    proc.wait(15)


def _completions(url, **body):
    r = httpx.post(url + "/completions", json={"model": "tiny", **body}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def _samples(out: Path, task: str) -> list[dict]:
    return [json.loads(line) for f in out.rglob(f"samples_{task}_*.jsonl") for line in f.read_text().splitlines()]


def _reference_logprobs(model_dir, ids: list[int]) -> list[float]:
    """log p(ids[t] | ids[:t]) for t >= 1 with transformers (the served weights, temperature 1)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    return [float(logp[t - 1, ids[t]]) for t in range(1, len(ids))]


def test_token_id_prompts_batches_and_echo(served_random, tiny_model_dir, tiny_tokenizer):
    ids = tiny_tokenizer.encode("Q: What is 2+3?\nA: 5", add_special_tokens=False)
    one = _completions(served_random, prompt=ids, max_tokens=3, temperature=0)
    nested = _completions(served_random, prompt=[ids], max_tokens=3, temperature=0)
    text = _completions(served_random, prompt=tiny_tokenizer.decode(ids), max_tokens=3, temperature=0)
    assert one["choices"][0]["text"] == nested["choices"][0]["text"] == text["choices"][0]["text"]
    batch = _completions(served_random, prompt=[ids, ids[:5]], max_tokens=3, temperature=0, n=2)
    assert [c["index"] for c in batch["choices"]] == [0, 1, 2, 3]
    assert batch["choices"][0]["text"] == one["choices"][0]["text"]
    strings = _completions(served_random, prompt=["hello", "world"], max_tokens=2, temperature=0)
    assert len(strings["choices"]) == 2
    # echo + logprobs + max_tokens=0: the prompt's own log-probs, the first token's None
    scored = _completions(served_random, prompt=ids, max_tokens=0, echo=True, logprobs=1)["choices"][0]
    lp = scored["logprobs"]
    assert scored["text"] == tiny_tokenizer.decode(ids) and len(lp["tokens"]) == len(ids)
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert lp["token_logprobs"][1:] == pytest.approx(_reference_logprobs(tiny_model_dir, ids), abs=1e-4)
    # echo with one generated token (lm-eval's loglikelihood request): prompt scores, then the token's
    gen = _completions(served_random, prompt=[ids], max_tokens=1, echo=True, logprobs=1, temperature=0)["choices"][0]
    assert len(gen["logprobs"]["token_logprobs"]) == len(ids) + 1
    assert gen["logprobs"]["token_logprobs"][1:len(ids)] == pytest.approx(lp["token_logprobs"][1:], abs=1e-4)


@pytest.mark.skipif(not (LMEVAL.parents[1] / ".installed").exists(),
                    reason="lm-eval is not installed: run `make lmeval-env` (.venv-lmeval)")
def test_lm_eval_local_completions_runs_generate_and_loglikelihood_tasks(served_random, tiny_model_dir,
                                                                         tiny_tokenizer, tmp_path):
    tasks = tmp_path / "tasks"
    shutil.copytree(TASKS, tasks)
    for y in tasks.glob("*.yaml"):
        y.write_text(y.read_text().replace("DATA_DIR", str(tasks)))
    out = tmp_path / "out"
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("PYTHONPATH", None)
    cmd = [str(LMEVAL), "--model", "local-completions", "--tasks", "appo_tiny_gen,appo_tiny_mc",
           "--include_path", str(tasks), "--output_path", str(out), "--log_samples",
           "--model_args", f"model=tiny,base_url={served_random}/completions,tokenizer={tiny_model_dir},"
                           "tokenizer_backend=huggingface,num_concurrent=1,max_retries=1"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-3000:])
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]
    assert "exact_match,none" in results["appo_tiny_gen"] and "acc,none" in results["appo_tiny_mc"]
    samples = _samples(out, "appo_tiny_mc")
    assert len(samples) == 3
    for s in samples:  # every choice's log-likelihood is the model's own
        args = s["arguments"]
        pairs = ([(a["arg_0"], a["arg_1"]) for a in args.values()] if isinstance(args, dict)
                 else [tuple(a) for a in args])
        assert len(pairs) == len(s["doc"]["choices"]) == len(s["resps"])
        for (context, continuation), resp in zip(pairs, s["resps"]):
            ll = float(resp[0][0])
            whole = tiny_tokenizer.encode(context + continuation, add_special_tokens=False)
            n_ctx = len(tiny_tokenizer.encode(context, add_special_tokens=False))
            ref = sum(_reference_logprobs(tiny_model_dir, whole)[n_ctx - 1:])
            assert math.isclose(ll, ref, abs_tol=1e-3), (context, continuation, ll, ref)
    gens = _samples(out, "appo_tiny_gen")
    assert len(gens) == 3 and all(isinstance(g["resps"][0][0], str) for g in gens)
