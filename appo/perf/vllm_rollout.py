"""vLLM figure: rollout tokens/s of :class:`~appo.engine.vllm.VLLMEngine` (vLLM's CPU build) against our
:class:`~appo.engine.hf.HFEngine`, on the same model weights, prompts, lengths and sampling, in one process.

Two shapes per batch size B (rows per call):

- ``plain``: B prompts (lengths in ``[prompt_len/2, prompt_len]``), ``new_tokens`` each, EOS off;
- ``forks``: B/K parent rows generated first (untimed, each engine its own), then the timed call: K forks of
  each parent from the middle of its response (prefix = prompt + ``new_tokens // 2`` sampled ids), each
  continued for ``new_tokens // 2`` tokens. HFEngine copies the parents' kept KV (``cache_key``); vLLM finds
  the same prefixes in its prefix cache by content (the hit counter is recorded).

Tokens/s counts generated tokens only (prefill included in the time). Both engines are fp32 on the CPU; vLLM
runs its engine core in another process (its own threads: ``VLLM_CPU_OMP_THREADS_BIND`` unset, i.e. vLLM's
default) while HFEngine uses ``threads`` torch threads. Log-probs, top-k (vLLM: K = 20) and entropies are
computed by both. A model that is not a Hugging Face folder (a GGUF file) is converted to one first
(:func:`hf_folder`), fp32, into the model cache.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from appo.engine.base import GenerationRequest, SamplingParams
from appo.engine.hf import HFEngine
from appo.perf.harness import Contender, figure, interleave, skipped, timed
from appo.perf.models import load_bench_model, model_path, text_prompts


def vllm_unavailable() -> str | None:
    """None when vLLM imports here, else why (the figure is then recorded as skipped)."""
    from appo.engine.registry import vllm_importable

    return None if vllm_importable() else "vLLM is not installed in this Python (make vllm-env; run from .venv-vllm)"


def hf_folder(name: str) -> str:
    """A Hugging Face folder of benchmark model ``name`` that vLLM can load: the tiny model's own folder, a
    folder as given, else the model as appo loads it saved (fp32 safetensors) into ``<cache>/vllm-<stem>``."""
    path = model_path(name)
    if Path(path).is_dir():
        return path
    from appo.models.loading import cache_root

    out = cache_root() / f"vllm-{Path(str(name)).stem}"
    if not (out / "config.json").is_file():
        model, tok = load_bench_model(name)
        model.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
    return str(out)


def vllm_rollout_figures(model_name: str, threads: int, batch_sizes=(32, 128), new_tokens: int = 64,
                         prompt_len: int = 48, forks: int = 4, repeats: int = 3,
                         gpu_memory_utilization: float = 0.05) -> list[dict]:
    """One figure per (batch size, shape): VLLMEngine tok/s vs HFEngine tok/s (> 1 = vLLM faster)."""
    why = vllm_unavailable()
    if why:
        return [skipped("vllm", f"{model_name} vLLM vs HFEngine", why)]
    import torch

    from appo.engine.vllm import VLLMEngine

    folder = hf_folder(model_name)
    model, tok = load_bench_model(model_name)
    torch.set_num_threads(threads)
    top = max(batch_sizes)
    hf = HFEngine(model, tok, eos_token_ids=(), max_batch_size=top, num_threads=threads,
                  cache_budget_tokens=top * (prompt_len + 2 * new_tokens))
    from appo.engine.registry import CPU_LLM_KWARGS

    vl = VLLMEngine(folder, dtype="float32", gpu_memory_utilization=gpu_memory_utilization, eos_token_ids=(),
                    seed=0, max_model_len=prompt_len + 2 * new_tokens + 16,
                    **({} if torch.cuda.is_available() else CPU_LLM_KWARGS))
    half = max(1, new_tokens // 2)
    out = []
    for B in batch_sizes:
        ids = text_prompts(tok, B, max(1, prompt_len // 2), prompt_len, seed=B)
        plain = [GenerationRequest(tuple(p)) for p in ids]
        n_par = max(1, B // forks)
        par_prompts = [tuple(p) for p in ids[:n_par]]
        fork_reqs: dict[str, list[GenerationRequest]] = {}
        for label, eng in (("hf", hf), ("vllm", vl)):
            eng.release()
            keys = [f"p{i}" for i in range(n_par)]
            parents = eng.generate([GenerationRequest(p, cache_key=k) for p, k in zip(par_prompts, keys)],
                                   SamplingParams(temperature=1.0, max_new_tokens=new_tokens, seed=0))
            fork_reqs[label] = [GenerationRequest(p + g.token_ids[:half]) for p, g in zip(par_prompts, parents)
                                for _ in range(forks)]
        hits: list[float] = []
        for shape in ("plain", "forks"):
            n_tok = (B if shape == "plain" else n_par * forks) * (new_tokens if shape == "plain" else half)

            def run(label, eng, r, shape=shape, n_tok=n_tok):
                reqs = plain if shape == "plain" else fork_reqs[label]
                params = SamplingParams(temperature=1.0, max_new_tokens=new_tokens if shape == "plain" else half,
                                        seed=r + 1)
                before = vl.prefix_cache_counters()["hits"] if label == "vllm" and shape == "forks" else None
                dt = timed(lambda: eng.generate(reqs, params))
                if before is not None:
                    hits.append(vl.prefix_cache_counters()["hits"] - before)
                return n_tok / dt

            ours = Contender("VLLMEngine.generate (vLLM CPU)", lambda r: run("vllm", vl, r))
            base = Contender("HFEngine.generate", lambda r: run("hf", hf, r))
            interleave(ours, base, repeats)
            out.append(figure("vllm", f"{model_name} t{threads} B={B} {shape}", "tok/s", ours, base,
                              higher_is_better=True, target=None, target_text="",
                              details={"model": model_name, "threads": threads, "batch": B, "shape": shape,
                                       "new_tokens": new_tokens if shape == "plain" else half,
                                       "forks_per_parent": forks if shape == "forks" else None,
                                       "vllm_prefix_cache_hit_tokens": statistics.median(hits) if hits else None}))
    return out
