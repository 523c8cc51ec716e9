"""Mixed precision (``model.compute_dtype``): float32 master weights keep AdamW's small steps that bfloat16
weights lose, bf16 compute stays within bf16 rounding of float32, and the config key round-trips and warns."""

from __future__ import annotations

import copy
import dataclasses
import random
import warnings

import pytest
import torch

from appo.config import load_config, save_config
from appo.models.lm_logits import keep_logits
from appo.models.precision import autocast_dtype, compute_autocast, set_compute_dtype
from appo.presets import shipped_config_path
from appo.train.batching import collate, with_fields
from appo.train.layout import layout_micro_batches, micro_logprobs
from appo.train.logprobs import compute_logprobs
from appo.train.update import UpdateOptions, ppo_update
from appo.types import Rollout

V = 64


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=2, tie_word_embeddings=True, pad_token_id=0, attn_implementation="sdpa")
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


def batch_for(model, n_groups: int = 2, rows: int = 3):
    """Random rows with random advantages; old log-probs = the model's own + noise (ratios move)."""
    rng = random.Random(0)
    out = []
    for g in range(n_groups):
        prompt = tuple(rng.randrange(1, V) for _ in range(rng.randint(3, 6)))
        for u in range(rows):
            n = rng.randint(4, 12)
            out.append(Rollout(group=g, uid=u, prompt_ids=prompt, response_ids=tuple(rng.randrange(1, V) for _ in
                                                                                     range(n)),
                               logprobs=(0.0,) * n, entropies=(0.0,) * n, loss_mask=(1,) * n, stop_reason="eos"))
    gen = torch.Generator().manual_seed(0)
    batch = collate(out, pad_id=0, advantages_NT=torch.randn(len(out), 12, generator=gen))
    with torch.no_grad():
        logp, _ = compute_logprobs(model, batch)
    return with_fields(batch, old_logp_BR=logp + 0.3 * torch.randn(logp.shape, generator=gen) * batch.response_mask_BR)


def changed_fraction(before: torch.nn.Module, after: torch.nn.Module) -> float:
    """Share of weights (all parameters together) whose stored value changed."""
    a = torch.cat([p.detach().flatten() for p in before.parameters()])
    b = torch.cat([p.detach().flatten() for p in after.parameters()])
    return float((a != b).float().mean())


def one_adamw_step(model, batch) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.01)
    ppo_update(model, opt, batch, UpdateOptions(ppo_mini_batch_size=2, micro_batch_rows=6))


def test_fp32_master_weights_keep_small_adamw_steps_that_bf16_weights_lose():
    base = tiny_llama()
    batch = batch_for(base)
    bf16 = copy.deepcopy(base).to(torch.bfloat16)
    mixed = copy.deepcopy(base)
    set_compute_dtype(mixed, "bfloat16")
    bf16_before, mixed_before = copy.deepcopy(bf16), copy.deepcopy(mixed)
    one_adamw_step(bf16, batch)
    one_adamw_step(mixed, batch)
    assert all(p.dtype == torch.float32 for p in mixed.parameters())  # master weights stay float32
    assert changed_fraction(mixed_before, mixed) > 0.97  # (nearly) every weight moved by ~lr
    assert changed_fraction(bf16_before, bf16) < 0.05  # the issue-18 bug: the step rounds away


def test_compute_dtype_autocasts_forwards_only_where_asked():
    model = tiny_llama()
    ids = torch.tensor([[3, 4, 5, 6]])
    assert keep_logits(model, 2, input_ids=ids).dtype == torch.float32
    set_compute_dtype(model, "bfloat16")
    assert autocast_dtype(model) == torch.bfloat16
    assert keep_logits(model, 2, input_ids=ids).dtype == torch.bfloat16  # the LM head ran in bf16
    assert autocast_dtype(copy.deepcopy(model)) == torch.bfloat16  # reference / FSDP2 copies keep it
    assert autocast_dtype(copy.deepcopy(model).to(torch.bfloat16)) is None  # already bf16: nothing to cast
    set_compute_dtype(model, "float32")
    assert autocast_dtype(model) is None
    assert isinstance(compute_autocast(model), type(compute_autocast(tiny_llama())))  # a no-op context
    with pytest.raises(ValueError, match="not one of"):
        set_compute_dtype(model, "fp8")


@pytest.mark.parametrize("pack", [False, True])
def test_bf16_compute_logprobs_and_loss_within_bf16_tolerance_of_fp32(pack):
    fp32 = tiny_llama()
    mixed = copy.deepcopy(fp32)
    set_compute_dtype(mixed, "bfloat16")
    batch = batch_for(fp32)
    mask = batch.response_mask_BR.bool()
    opts = UpdateOptions(max_tokens=200 if pack else None, layout="packed" if pack else "padded")
    with torch.no_grad():
        (m,) = layout_micro_batches(batch, opts.layout, opts.max_tokens, None if pack else 64)
        ref, ref_ent = micro_logprobs(fp32, m, 1.0, with_entropy=True)
        got, got_ent = micro_logprobs(mixed, m, 1.0, with_entropy=True)
    assert got.dtype == torch.float32
    diff = (got - ref)[mask].abs()
    assert 0 < float(diff.max()) < 0.05  # differs (bf16 ran) by bf16 rounding only (|logp| ~ log 64 = 4.2)
    assert float((got_ent - ref_ent)[mask].abs().max()) < 0.05
    # the PPO loss of one micro-batch, as the update computes it
    losses = []
    for model in (fp32, mixed):
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        losses.append(ppo_update(model, opt, batch, dataclasses.replace(opts, ppo_mini_batch_size=2,
                                                                        micro_batch_rows=64))["actor/pg_loss"])
    assert losses[0] == pytest.approx(losses[1], abs=0.02)


def test_compute_dtype_config_round_trip_and_paper_preset(tmp_path):
    cfg = load_config(overrides=["model.compute_dtype=bfloat16"])
    assert (cfg.model.dtype, cfg.model.compute_dtype) == ("float32", "bfloat16")
    assert load_config(save_config(cfg, tmp_path / "c.yaml")) == cfg
    assert load_config().model.compute_dtype is None
    from appo.config.typed_yaml import ConfigError

    with pytest.raises(ConfigError, match="compute_dtype"):
        load_config(overrides=["model.compute_dtype=fp8"])
    paper = load_config(shipped_config_path("paper_7b"), ["model.device=cpu"])
    assert (paper.model.dtype, paper.model.compute_dtype) == ("float32", "bfloat16")


def test_bf16_params_warn_once_naming_the_fix(tiny_model_dir):
    from appo.train.components import build_model

    cfg = load_config(overrides=[f"model.path={tiny_model_dir}", "model.device=cpu", "model.dtype=bfloat16"])
    with pytest.warns(UserWarning) as record:
        build_model(cfg)
    (w,) = [r for r in record if "model.dtype=bfloat16" in str(r.message)]
    assert "fix: model.dtype=float32 model.compute_dtype=bfloat16" in str(w.message)
    assert "\n" not in str(w.message)
    cfg = load_config(overrides=[f"model.path={tiny_model_dir}", "model.device=cpu", "model.compute_dtype=bfloat16"])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="model.dtype")
        model, _ = build_model(cfg)
    assert next(model.parameters()).dtype == torch.float32 and autocast_dtype(model) == torch.bfloat16


def test_one_appo_step_in_mixed_precision(tmp_path):
    """The whole trainer (engine, old / reference log-probs, update, checkpoint) with bf16 compute: weights
    and their checkpoint stay float32 and move."""
    from run_helpers import tiny_base, tiny_config
    from safetensors.torch import load_file

    from appo.train.trainer import train

    base = tiny_base(tmp_path / "base")
    cfg = tiny_config(base, tmp_path / "run", "model.compute_dtype=bfloat16", "actor.use_kl_loss=true",
                      "trainer.total_training_steps=1")
    before = load_file(base / "model.safetensors")
    m = train(cfg).history[0]
    assert all(torch.isfinite(torch.tensor(m[k])) for k in ("actor/pg_loss", "actor/grad_norm", "actor/kl_loss"))
    after = load_file(tmp_path / "run" / "checkpoints" / "step_000001" / "model" / "model.safetensors")
    assert all(v.dtype == torch.float32 for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before)
