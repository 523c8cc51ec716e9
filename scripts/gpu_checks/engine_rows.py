"""Engine rows: HFEngine (fp32, bf16) and VLLMEngine log-probs against teacher forcing; a fork with kept KV
against the same fork recomputed."""

from __future__ import annotations

from pathlib import Path

from gpu_checks.common import Sizes, max_diff, prompts, teacher_forced


def check_engine(base: Path, dtype: str, tol: float, args, sizes: Sizes) -> dict:
    """Engine log-probs/entropies vs teacher forcing; a fork with kept KV vs the same fork on a fresh engine."""
    from appo.engine.base import GenerationRequest, SamplingParams
    from appo.engine.hf import HFEngine
    from appo.models.loading import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(base, dtype, args.device)
    engine = HFEngine(model, tok, eos_token_ids=())
    reqs = [GenerationRequest(p, cache_key=f"r{i}") for i, p in enumerate(prompts(tok))]
    gens = engine.generate(reqs, SamplingParams(temperature=1.0, max_new_tokens=sizes.engine_tokens, seed=0))
    worst_lp = worst_h = 0.0
    for req, gen in zip(reqs, gens):
        lp, h = teacher_forced(model, req.prefix_ids, gen.token_ids)
        worst_lp, worst_h = max(worst_lp, max_diff(lp, gen.logprobs)), max(worst_h, max_diff(h, gen.entropies))
    # Fork of rollout 0 at position 5: reuses the kept KV of prompt + response[:-1].
    fork = GenerationRequest(reqs[0].prefix_ids + gens[0].token_ids[:5], seed=7)
    params = SamplingParams(temperature=1.0, max_new_tokens=sizes.engine_tokens // 2, seed=1)
    before = engine.stats.reused_tokens
    reused = engine.generate([fork], params)[0]
    reused_tokens = engine.stats.reused_tokens - before
    fresh = HFEngine(model, tok, eos_token_ids=(), cache_budget_tokens=0).generate([fork], params)[0]
    same = reused.token_ids == fresh.token_ids
    n = next((i for i, (a, b) in enumerate(zip(reused.token_ids, fresh.token_ids)) if a != b), len(reused.token_ids))
    fork_lp = max_diff(reused.logprobs[:n], fresh.logprobs[:n])
    lp_tf, _ = teacher_forced(model, fork.prefix_ids, reused.token_ids)
    fork_tf = max_diff(lp_tf, reused.logprobs)
    tokens_rule = same if dtype == "float32" else n > 0  # bf16: a draw on a CDF boundary may flip a token
    ok = (worst_lp <= tol and worst_h <= tol and fork_lp <= tol and fork_tf <= tol and reused_tokens > 0
          and tokens_rule and all(len(g.token_ids) == sizes.engine_tokens for g in gens))
    return {"ok": ok, "dtype": dtype, "tol": tol, "max_logprob_diff": worst_lp, "max_entropy_diff": worst_h,
            "fork_reused_tokens": reused_tokens, "fork_same_tokens_as_recompute": same,
            "fork_tokens_compared": n, "fork_logprob_diff_vs_recompute": fork_lp,
            "fork_logprob_diff_vs_teacher_forced": fork_tf, "tokens": sum(len(g.token_ids) for g in gens),
            "device": str(engine.device)}


def check_vllm(base: Path, args) -> dict:
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        return {"ok": None, "skipped": f"vllm does not import: {e}"}
    import torch

    from appo.engine.base import GenerationRequest, SamplingParams
    from appo.engine.vllm import VLLMEngine
    from appo.models.loading import load_model_and_tokenizer

    policy, tok = load_model_and_tokenizer(base, "float32", args.device)
    engine = VLLMEngine(str(base), policy=policy, logprobs_k=5, gpu_memory_utilization=0.3, dtype="float16",
                        enforce_eager=True, max_model_len=512)
    params = SamplingParams(temperature=1.0, max_new_tokens=16, seed=0)
    reqs = [GenerationRequest(p) for p in prompts(tok)]

    def worst() -> float:
        gens = engine.generate(reqs, params)
        diffs = [max_diff(teacher_forced(policy, r.prefix_ids, g.token_ids)[0], g.logprobs)
                 for r, g in zip(reqs, gens) if g.token_ids]
        return max(diffs, default=float("nan"))

    before = worst()
    with torch.no_grad():  # an in-place "update", as an optimizer step: the next generate pushes it
        policy.lm_head.weight.mul_(1.5)
    after = worst()
    ok = before <= args.vllm_tol and after <= args.vllm_tol and engine.weight_pushes == 1
    return {"ok": ok, "max_logprob_diff": before, "max_logprob_diff_after_push": after,
            "weight_pushes": engine.weight_pushes}
