"""vLLM figure: rollout tokens/s of :class:`~appo.engine.vllm.VLLMEngine` (vLLM's CPU build) against our
:class:`~appo.engine.hf.HFEngine`, on the same model weights, prompts, lengths and sampling, in one process.

Two shapes per batch size B (rows per call):

- ``plain``: B prompts (lengths in ``[prompt_len/2, prompt_len]``), ``new_tokens`` each, EOS off, every call
  from empty caches (``release()`` before it, untimed: vLLM's prefix cache would otherwise serve the previous
  repeat's prompts);
- ``forks``: B/K parent rows generated first (untimed, each engine its own), then the timed call: K forks of
  each parent from the middle of its response (prefix = prompt + ``new_tokens // 2`` sampled ids), each
  continued for ``new_tokens // 2`` tokens. HFEngine copies the parents' kept KV (``cache_key``); vLLM finds
  the same prefixes in its prefix cache by content (its hit counter, and HFEngine's reused and prefilled
  prefix tokens, are recorded per call).

Tokens/s counts generated tokens only (prefill included in the time). Both engines are fp32 on the CPU with the
same number of threads: HFEngine ``threads`` torch threads, vLLM's engine-core worker (its own process) bound
to ``threads`` cores (``VLLM_CPU_OMP_THREADS_BIND``, :func:`cpu_bind`). Log-probs, top-k (K = 20) and entropies
are computed by both. vLLM's KV cache is sized in bytes for the largest call (:func:`kv_cache_bytes`).

Before timing, a check record (``check``): vLLM's sampled-token log-probs against teacher forcing of the
HFEngine's model (the model the trainer would train) on 8 rows, max and mean |difference|: the two engines
must run the same weights for the ratio to mean anything (a GGUF model: both load the fp32 folder of
:func:`hf_folder`).

Figures are yielded one at a time (:func:`iter_vllm_rollout_figures`), so a run that dies late keeps the
figures it measured; an engine failure is recorded as a ``skipped`` record naming the error, and ends the
section (a dead vLLM engine core does not come back).
"""

from __future__ import annotations

import contextlib
import os
import statistics
from collections.abc import Iterator

from appo.engine.base import GenerationRequest, SamplingParams
from appo.engine.hf import HFEngine
from appo.perf.harness import Contender, figure, interleave, skipped, timed
from appo.perf.models import load_bench_model, model_path, text_prompts

SECTION = "vllm"


def vllm_unavailable() -> str | None:
    """None when vLLM imports here, else why (the figure is then recorded as skipped)."""
    from appo.engine.registry import vllm_importable

    return None if vllm_importable() else "vLLM is not installed in this Python (make vllm-env; run from .venv-vllm)"


def hf_folder(name: str) -> str:
    """A Hugging Face folder of benchmark model ``name`` that vLLM can load: the tiny model's own folder, a folder
    as given, an alias or ``.gguf`` file dequantized once into an fp32 folder
    (:func:`appo.models.loading.resolve_model_path`, the same folder appo loads the model from)."""
    from appo.models.loading import resolve_model_path

    return str(resolve_model_path(model_path(name)))


def cpu_bind(threads: int) -> str:
    """``VLLM_CPU_OMP_THREADS_BIND`` for ``threads`` cores: the first ``threads`` cores this process may run on
    (``"0-1"`` for 2), so vLLM's worker runs as many OpenMP threads as HFEngine runs torch threads."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    return ",".join(str(c) for c in cores[:max(1, threads)])


@contextlib.contextmanager
def _env(key: str, value: str | None):
    """``os.environ[key] = value`` inside the block (nothing when ``value`` is None), restored after."""
    old = os.environ.get(key)
    if value is not None:
        os.environ[key] = value
    try:
        yield
    finally:
        if value is not None:
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def kv_cache_bytes(config, tokens: int) -> int:
    """Bytes of fp32 KV for ``tokens`` tokens of a decoder with ``config``'s shape (2 x layers x KV heads x head
    dim x 4), plus half again (vLLM rounds to whole blocks and keeps finished parents' blocks cached), at least
    64 MiB."""
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * heads * head_dim * 4
    return max(64 << 20, int(1.5 * per_token * tokens))


def logprob_check(vl, model, prompts: list[list[int]], new_tokens: int, name: str) -> dict:
    """A check record: vLLM's sampled-token log-probs (T = 1) against teacher forcing of ``model`` on the same
    ids (:func:`appo.engine.scoring.score_sequences`): ``max_abs_diff`` and ``mean_abs_diff`` over all tokens."""
    from appo.engine.scoring import score_sequences

    gens = vl.generate([GenerationRequest(tuple(p)) for p in prompts],
                       SamplingParams(temperature=1.0, max_new_tokens=new_tokens, seed=123))
    seqs = [list(p) + list(g.token_ids) for p, g in zip(prompts, gens)]
    scored = score_sequences(model, seqs, [len(p) for p in prompts])
    diffs = [abs(a - float(b)) for g, (logp, _) in zip(gens, scored) for a, b in zip(g.logprobs, logp.tolist())]
    return {"section": SECTION, "name": name, "check": "vLLM sampled-token log-probs vs teacher forcing (fp32)",
            "rows": len(prompts), "tokens": len(diffs), "max_abs_diff": max(diffs),
            "mean_abs_diff": statistics.fmean(diffs)}


def iter_vllm_rollout_figures(model_name: str, threads: int, batch_sizes=(32, 128), new_tokens: int = 64,
                              prompt_len: int = 48, forks: int = 4, repeats: int = 3) -> Iterator[dict]:
    """The log-prob check record, then one figure per (batch size, shape): VLLMEngine tok/s vs HFEngine tok/s
    (speedup > 1 = vLLM faster), each yielded as soon as it is measured."""
    why = vllm_unavailable()
    if why:
        yield skipped(SECTION, f"{model_name} vLLM vs HFEngine", why)
        return
    import torch

    from appo.engine.registry import CPU_LLM_KWARGS
    from appo.engine.vllm import VLLMEngine

    folder = hf_folder(model_name)
    model, tok = load_bench_model(model_name)
    torch.set_num_threads(threads)
    top = max(batch_sizes)
    max_len = prompt_len + 2 * new_tokens + 16
    hf = HFEngine(model, tok, eos_token_ids=(), max_batch_size=top, num_threads=threads,
                  cache_budget_tokens=top * (prompt_len + 2 * new_tokens))
    cpu = not torch.cuda.is_available()
    bind = cpu_bind(threads) if cpu else None
    kv = kv_cache_bytes(model.config, top * max_len)
    try:
        with _env("VLLM_CPU_OMP_THREADS_BIND", bind):  # read when vLLM starts its worker process
            vl = VLLMEngine(folder, dtype="float32", eos_token_ids=(), seed=0, max_model_len=max_len,
                            kv_cache_memory_bytes=kv, **(CPU_LLM_KWARGS if cpu else {}))
        yield logprob_check(vl, model, text_prompts(tok, 8, max(1, prompt_len // 2), prompt_len, seed=7),
                            min(new_tokens, 32), f"{model_name} log-probs vs teacher forcing")
    except Exception as e:  # noqa: BLE001 - recorded, not raised: the figures of other sections stand
        yield skipped(SECTION, f"{model_name} vLLM engine", f"failed: {type(e).__name__}: {e}")
        return
    half = max(1, new_tokens // 2)
    common = {"model": model_name, "hf_folder": folder, "threads": threads,
              "vllm_cpu_bind": bind, "kv_cache_memory_bytes": kv}
    for B in batch_sizes:
        try:
            yield from _batch_figures(model_name, threads, hf, vl, tok, B, new_tokens, half, prompt_len, forks,
                                      repeats, common)
        except Exception as e:  # noqa: BLE001 - a dead engine core ends the section; what was measured stays
            yield skipped(SECTION, f"{model_name} t{threads} B={B}", f"failed: {type(e).__name__}: {e}")
            return


def _batch_figures(model_name, threads, hf, vl, tok, B, new_tokens, half, prompt_len, forks, repeats, common):
    ids = text_prompts(tok, B, max(1, prompt_len // 2), prompt_len, seed=B)
    plain = [GenerationRequest(tuple(p)) for p in ids]
    n_par = max(1, B // forks)
    par_prompts = [tuple(p) for p in ids[:n_par]]
    fork_reqs: dict[str, list[GenerationRequest]] = {}

    def make_parents():  # after the plain shape: its calls start from empty caches
        for label, eng in (("hf", hf), ("vllm", vl)):
            eng.release()
            keys = [f"p{i}" for i in range(n_par)]
            parents = eng.generate([GenerationRequest(p, cache_key=k) for p, k in zip(par_prompts, keys)],
                                   SamplingParams(temperature=1.0, max_new_tokens=new_tokens, seed=0))
            fork_reqs[label] = [GenerationRequest(p + g.token_ids[:half]) for p, g in zip(par_prompts, parents)
                                for _ in range(forks)]

    for shape in ("plain", "forks"):
        if shape == "forks":
            make_parents()
        hits: list[float] = []
        hf_reused: list[float] = []
        hf_prefilled: list[float] = []
        n_new = new_tokens if shape == "plain" else half
        n_tok = (B if shape == "plain" else n_par * forks) * n_new

        def run(label, eng, r, shape=shape, n_tok=n_tok, n_new=n_new, hits=hits, hf_reused=hf_reused,
                hf_prefilled=hf_prefilled):
            reqs = plain if shape == "plain" else fork_reqs[label]
            params = SamplingParams(temperature=1.0, max_new_tokens=n_new, seed=r + 1)
            if shape == "plain":  # untimed: no KV kept from earlier calls (vLLM would hit the last repeat's blocks)
                eng.release()
            before = vl.prefix_cache_counters()["hits"] if label == "vllm" and shape == "forks" else None
            hf_before = (hf.stats.reused_tokens, hf.stats.prefill_tokens)
            dt = timed(lambda: eng.generate(reqs, params))
            if before is not None:
                hits.append(vl.prefix_cache_counters()["hits"] - before)
            if label == "hf":
                hf_reused.append(hf.stats.reused_tokens - hf_before[0])
                hf_prefilled.append(hf.stats.prefill_tokens - hf_before[1])
            return n_tok / dt

        ours = Contender("VLLMEngine.generate (vLLM CPU)", lambda r, run=run: run("vllm", vl, r))
        base = Contender("HFEngine.generate", lambda r, run=run: run("hf", hf, r))
        interleave(ours, base, repeats)
        yield figure(SECTION, f"{model_name} t{threads} B={B} {shape}", "tok/s", ours, base,
                     higher_is_better=True, target=None, target_text="",
                     details={**common, "batch": B, "shape": shape, "rows": n_tok // n_new, "new_tokens": n_new,
                              "forks_per_parent": forks if shape == "forks" else None,
                              "prompt_tokens": sum(len(q.prefix_ids) for q in (plain if shape == "plain"
                                                                                   else fork_reqs["hf"])),
                              "vllm_prefix_cache_hit_tokens": statistics.median(hits) if hits else None,
                              "hf_reused_tokens": statistics.median(hf_reused),
                              "hf_prefilled_tokens": statistics.median(hf_prefilled)})


def vllm_rollout_figures(model_name: str, threads: int, batch_sizes=(32, 128), new_tokens: int = 64,
                         prompt_len: int = 48, forks: int = 4, repeats: int = 3) -> list[dict]:
    """All of :func:`iter_vllm_rollout_figures` as a list."""
    return list(iter_vllm_rollout_figures(model_name, threads, batch_sizes, new_tokens, prompt_len, forks, repeats))
