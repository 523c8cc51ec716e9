"""Speed rows: the device's ceilings, HFEngine vs ``model.generate``, and the whole RL step vs TRL."""

from __future__ import annotations

import time
from pathlib import Path

from gpu_checks.common import Sizes


def speed_ceilings(args, sizes: Sizes) -> dict:
    from appo.perf.gpu import H200_SPEC, measure_ceilings

    c = measure_ceilings(args.device, sizes.matmul_n, sizes.copy_bytes)
    return {"ok": True, **c, "spec": H200_SPEC}


def speed_rollout(model_dir: Path, args, sizes: Sizes, dtype: str, ceilings: dict) -> dict:
    """HFEngine vs model.generate on the same rows, fixed lengths (EOS off), interleaved repeats."""
    import statistics

    import torch

    from appo.engine.base import GenerationRequest, SamplingParams
    from appo.engine.hf import HFEngine
    from appo.models.loading import load_model_and_tokenizer
    from appo.perf.gpu import H200_SPEC, ModelShape, gpu_peak_mb, reset_gpu_peak, sync
    from appo.perf.models import left_pad, pad_id, text_prompts

    model, tok = load_model_and_tokenizer(model_dir, dtype, args.device)
    shape = ModelShape.of(model)
    B, N = sizes.rollout_rows, sizes.new_tokens
    ids = text_prompts(tok, B, sizes.prompt_len // 2, sizes.prompt_len, seed=B)
    mean_prompt = statistics.mean(map(len, ids))
    reqs = [GenerationRequest(tuple(p)) for p in ids]
    input_ids, attn = (t.to(args.device) for t in left_pad(ids, pad_id(tok)))
    engine = HFEngine(model, tok, eos_token_ids=(), max_batch_size=B, cache_budget_tokens=0)
    res = {"engine": [], "generate": [], "engine_decode_s": [], "engine_prefill_s": []}
    peak = {"engine": 0.0, "generate": 0.0}

    def run_engine(r: int) -> None:
        engine.reset_stats()
        reset_gpu_peak(args.device)
        t = time.perf_counter()
        gens = engine.generate(reqs, SamplingParams(temperature=1.0, max_new_tokens=N, seed=r + 1))
        sync(args.device)
        dt = time.perf_counter() - t
        assert all(len(g.token_ids) == N for g in gens)
        if r >= 0:
            res["engine"].append(dt)
            res["engine_decode_s"].append(engine.stats.decode_seconds)
            res["engine_prefill_s"].append(engine.stats.prefill_seconds)
            peak["engine"] = max(peak["engine"], gpu_peak_mb(args.device) or 0.0)

    def run_generate(r: int) -> None:
        torch.manual_seed(r + 1)
        reset_gpu_peak(args.device)
        t = time.perf_counter()
        with torch.inference_mode():
            o = model.generate(input_ids=input_ids, attention_mask=attn, do_sample=True, temperature=1.0, top_k=0,
                               top_p=1.0, max_new_tokens=N, min_new_tokens=N, pad_token_id=pad_id(tok))
        sync(args.device)
        dt = time.perf_counter() - t
        assert o.shape[1] == input_ids.shape[1] + N
        if r >= 0:
            res["generate"].append(dt)
            peak["generate"] = max(peak["generate"], gpu_peak_mb(args.device) or 0.0)

    run_engine(-1)
    run_generate(-1)
    for r in range(sizes.rollout_repeats):
        for fn in ((run_engine, run_generate) if r % 2 == 0 else (run_generate, run_engine)):
            fn(r)
    med = {k: statistics.median(v) for k, v in res.items()}
    tokens = B * N
    flops = shape.decode_flops(B, mean_prompt, N)
    bytes_ = shape.decode_bytes(B, mean_prompt, N)
    ratios = [g / e for e, g in zip(res["engine"], res["generate"])]

    def frac(x: float, key: str, spec: float) -> dict:
        return {"measured": x / ceilings[key] if ceilings.get(key) else None, "spec": x / spec}

    eng_tflops = flops / med["engine_decode_s"] / 1e12
    eng_tb_s = bytes_ / med["engine_decode_s"] / 1e12
    return {
        "ok": True, "model_params": shape.params, "dtype": dtype, "rows": B, "new_tokens": N,
        "prompt_tokens": [min(map(len, ids)), max(map(len, ids))], "mean_prompt_tokens": mean_prompt,
        "eos": "disabled on both sides (engine eos_token_ids=(), generate min_new_tokens=max_new_tokens)",
        "engine_tok_s": tokens / med["engine"], "generate_tok_s": tokens / med["generate"],
        "speedup_vs_generate": statistics.median(ratios), "speedup_min_max": [min(ratios), max(ratios)],
        "engine_s": res["engine"], "generate_s": res["generate"], "engine_decode_s": res["engine_decode_s"],
        "engine_prefill_s": res["engine_prefill_s"],
        "engine_decode_ms_per_step": med["engine_decode_s"] / N * 1e3,
        "generate_ms_per_token_step": med["generate"] / N * 1e3,
        "decode_tflops": eng_tflops,
        "decode_tflops_fraction": frac(eng_tflops, "matmul_tflops", H200_SPEC["bf16_dense_tflops"]),
        "decode_tb_s": eng_tb_s, "decode_bandwidth_fraction": {
            "measured": eng_tb_s * 1e3 / ceilings["copy_gb_s"] if ceilings.get("copy_gb_s") else None,
            "spec": eng_tb_s / H200_SPEC["hbm_tb_s"]},
        "generate_tflops_incl_prefill": (flops + shape.forward_flops(B * mean_prompt, mean_prompt / 2))
        / med["generate"] / 1e12,
        "gpu_peak_mb": peak, "repeats": sizes.rollout_repeats,
        "estimates": "FLOP 2P+4Ldc per token; bytes per step = weights + live KV (appo.perf.gpu)",
    }


def speed_rl_step(model_dir: Path, args, sizes: Sizes, dtype: str, deadline: float, log) -> dict:
    """Whole RL step, ours (grpo, appo) vs TRL GRPOTrainer, interleaved (appo.perf.rl_step); no round starts
    after ``deadline`` (``time.perf_counter()``); ``log`` gets a line per step of each side."""
    from appo.models.loading import load_model_and_tokenizer
    from appo.perf.gpu import ModelShape
    from appo.perf.rl_step import rl_step_figures
    from appo.perf.trl_side import trl_available

    reason = trl_available()
    if reason is not None:
        return {"ok": None, "skipped": reason}
    model, _ = load_model_and_tokenizer(model_dir, dtype, "cpu")
    shape = ModelShape.of(model)
    del model
    figs = rl_step_figures(str(model_dir), 1 if args.device != "cpu" else 2, prompts=sizes.rl_prompts,
                           rows=sizes.rl_rows, max_response=sizes.rl_response, micro_rows=sizes.rl_micro_rows,
                           repeats=sizes.rl_repeats, device=args.device, dtype=dtype, label="speed-model",
                           gradient_checkpointing=False, deadline=deadline, progress=log)
    out = {"ok": True, "dtype": dtype, "prompts": sizes.rl_prompts, "rows_per_prompt": sizes.rl_rows,
           "max_response": sizes.rl_response, "micro_rows": sizes.rl_micro_rows, "repeats": sizes.rl_repeats}
    for f in figs:
        alg = "appo" if " appo vs" in f["name"] else "grpo"
        d = f["details"]
        if "skipped" in f:
            out[alg] = {"skipped": f["skipped"], "warmup_s": d.get("warmup_s")}
            continue
        ms = d.get("metrics_ours") or [{}]
        rows = sum(m.get("rollout/rows", 0) for m in ms) / len(ms)
        resp = sum(m.get("response_length/mean", 0) for m in ms) / len(ms)
        prompt = sum(m.get("prompt_length/mean", 0) for m in ms) / len(ms)
        step_s = f["ours"]["median"]
        # generation (decode) + old log-probs (forward) + update (forward + backward), ours; model FLOP only
        flops = (shape.decode_flops(int(rows), prompt, int(resp)) + shape.forward_flops(rows * (prompt + resp), prompt)
                 + shape.train_flops(rows * (prompt + resp), prompt))
        upd = d.get("phases_median_s", {}).get("update")
        out[alg] = {"ours_s_per_step": step_s, "trl_s_per_step": f["baseline"]["median"] if f.get("baseline") else None,
                    "speedup_vs_trl": f.get("speedup"), "speedup_min_max": [f.get("speedup_min"), f.get("speedup_max")],
                    "ours_s": f["ours"], "trl_s": f.get("baseline"), "tokens_ours": d.get("tokens_ours"),
                    "tokens_trl": d.get("tokens_trl"), "phases_median_s": d.get("phases_median_s"),
                    "trl_phases_median_s": d.get("trl_phases_median_s"),
                    "rows": rows, "response_mean": resp, "prompt_mean": prompt,
                    "model_tflops_whole_step": flops / step_s / 1e12,
                    "update_tflops": (shape.train_flops(rows * (prompt + resp), prompt) / upd / 1e12) if upd else None,
                    "gpu_peak_mb": d.get("gpu_peak_mb"), "warmup_s": d.get("warmup_s")}
    if all("skipped" in out[a] for a in ("grpo", "appo")):
        out.update(ok=None, skipped="no timed repeat finished before the time budget")
    return out
