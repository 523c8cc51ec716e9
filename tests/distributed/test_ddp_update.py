"""One PPO update on a fixed batch: 2 gloo ranks (DDP, FSDP2) against 1 process on the combined batch.

The batch has 4 prompts x 3 rows, two mini-batches of 2 prompts; rank 0 holds the long rows, rank 1
the short ones, so the ranks have different loss-token counts (a per-rank token-mean would weight them
wrongly) and, under a token budget, different micro-batch counts (the lockstep padding must keep the
collectives in step). Parameters must agree to float32 round-off; a negative control shows that
averaging per-rank token-means (no global normaliser) misses by far more.
"""

from __future__ import annotations

import copy
import dataclasses
import random

import pytest
import torch
from ddp_harness import run_ranks

from appo.distributed.ddp import DistEnv
from appo.models.lm_logits import keep_logits
from appo.models.precision import set_compute_dtype
from appo.train.batching import collate, select_rows, with_fields
from appo.train.logprobs import compute_logprobs
from appo.train.update import UpdateOptions, ppo_update
from appo.types import Rollout

WORLD = 2
PROMPTS_PER_STEP = 2  # global ppo_mini_batch_size
TOL = 5e-5  # AdamW at lr 1e-3: ~lr * sign(g) where |g| ~ eps, so round-off of near-zero gradients can flip a step
TOL_SGD = 1e-6  # SGD (lr 0.1, moves up to ~1e-2): what float32 round-off of different micro-batch shapes leaves
PADDED = UpdateOptions(ppo_mini_batch_size=PROMPTS_PER_STEP, micro_batch_rows=2, future_kl=True, grad_clip=1.0)
PACKED = dataclasses.replace(PADDED, max_tokens=40, layout="packed")


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=2, tie_word_embeddings=True, pad_token_id=0, attn_implementation="sdpa")
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


def fixed_batch(model):
    """4 prompts x 3 rows: groups 0 and 2 long (rank 0's), 1 and 3 short (rank 1's); random advantages,
    old log-probs = current ones + noise (so ratios move and clip)."""
    rng = random.Random(0)
    rows = []
    for g in range(4):
        long = g % 2 == 0
        prompt = tuple(rng.randrange(1, 64) for _ in range(rng.randint(3, 6)))
        for u in range(3):
            n = rng.randint(20, 28) if long else rng.randint(3, 8)
            mask = tuple(int(rng.random() < 0.8) for _ in range(n))
            response = tuple(rng.randrange(1, 64) for _ in range(n))
            rows.append(Rollout(group=g, uid=u, prompt_ids=prompt, response_ids=response,
                                logprobs=(0.0,) * n, entropies=(0.0,) * n, loss_mask=mask, stop_reason="eos"))
    gen = torch.Generator().manual_seed(0)
    adv = torch.randn(len(rows), 28, generator=gen)
    batch = collate(rows, pad_id=0, advantages_NT=adv)
    with torch.no_grad():
        logp, _ = compute_logprobs(model, batch)
    noise = 0.3 * torch.randn(logp.shape, generator=gen) * batch.response_mask_BR
    return with_fields(batch, old_logp_BR=logp + noise)


def rank_batch(batch, rank: int):
    """The rows of ``rank``'s prompts (as the trainer shards them), groups renumbered 0..G/W-1."""
    n_groups = int(batch.group_B.max()) + 1
    groups = DistEnv(rank=rank, world_size=WORLD).shard_positions(n_groups, PROMPTS_PER_STEP)
    rows = [i for g in groups for i in torch.nonzero(batch.group_B == g).flatten().tolist()]
    sub = select_rows(batch, rows).batch
    local = {g: j for j, g in enumerate(groups)}
    return dataclasses.replace(sub, group_B=torch.tensor([local[int(g)] for g in sub.group_B]))


def adamw(model):
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.01)


def sgd(model):  # linear in the gradient: the difference left is the gradients' own round-off
    return torch.optim.SGD(model.parameters(), lr=0.1)


def full_params(model) -> dict[str, torch.Tensor]:
    return {k: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
            for k, p in model.named_parameters()}


def one_process(state, batch, opts, optim=adamw, compute_dtype=None) -> dict[str, torch.Tensor]:
    model = tiny_llama()
    model.load_state_dict(state)
    set_compute_dtype(model, compute_dtype)
    ppo_update(model, optim(model), batch, opts)
    return full_params(model)


def _ranks_update(state, batch):
    """On each rank: the update of its shard under DDP (padded and packed budgets), FSDP2, and the
    negative control (DDP averaging per-rank token-means)."""
    from appo.distributed.ddp import ddp_wrap, fsdp2_shard, init_distributed

    env = init_distributed("ddp", "cpu")
    local = rank_batch(batch, env.rank)
    out = {}
    tree = dataclasses.replace(PADDED, layout="tree")  # shared-prefix tries inside DDP
    for name, opts, optim in (("ddp_padded", PADDED, adamw), ("ddp_packed", PACKED, adamw), ("ddp_sgd", PADDED, sgd),
                              ("ddp_tree", tree, adamw)):
        model = tiny_llama()
        model.load_state_dict(state)
        ppo_update(ddp_wrap(model), optim(model), local, opts, dist=env)
        out[name] = full_params(model)
    model = tiny_llama()
    model.load_state_dict(state)
    model.gradient_checkpointing_enable()  # recomputation inside DDP's no_sync passes
    ppo_update(ddp_wrap(model), adamw(model), local, PACKED, dist=env)
    out["ddp_packed_checkpointing"] = full_params(model)
    model = tiny_llama()
    model.load_state_dict(state)
    ppo_update(ddp_wrap(model), adamw(model), local,
               dataclasses.replace(PADDED, ppo_mini_batch_size=PROMPTS_PER_STEP // WORLD))  # no dist: local means
    out["naive"] = full_params(model)
    try:
        model = tiny_llama()
        model.load_state_dict(state)
        sharded = fsdp2_shard(model, "cpu", WORLD)
        ppo_update(sharded, adamw(sharded), local, PADDED, dist=dataclasses.replace(env, strategy="fsdp2"))
        out["fsdp2"] = full_params(sharded)
    except (RuntimeError, NotImplementedError) as exc:  # FSDP2 on CPU/gloo needs torch >= 2.6
        out["fsdp2"] = f"unsupported: {type(exc).__name__}: {exc}"
    try:  # mixed precision: MixedPrecisionPolicy(bf16 params, fp32 reduce) over fp32 shards
        model = tiny_llama()
        model.load_state_dict(state)
        set_compute_dtype(model, "bfloat16")
        sharded = fsdp2_shard(model, "cpu", WORLD, param_dtype=torch.bfloat16)
        ppo_update(sharded, sgd(sharded), local, PADDED, dist=dataclasses.replace(env, strategy="fsdp2"))
        out["fsdp2_bf16"] = full_params(sharded)
        out["fsdp2_bf16_logits"] = keep_logits(sharded, 1, input_ids=torch.tensor([[3, 4]])).dtype
    except (RuntimeError, NotImplementedError) as exc:
        out["fsdp2_bf16"] = f"unsupported: {type(exc).__name__}: {exc}"
    return out


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def results():
    torch.set_num_threads(1)
    model = tiny_llama()
    state = copy.deepcopy(model.state_dict())
    batch = fixed_batch(model)
    ref = {"padded": one_process(state, batch, PADDED), "packed": one_process(state, batch, PACKED),
           "sgd": one_process(state, batch, PADDED, sgd),
           "sgd_bf16": one_process(state, batch, PADDED, sgd, compute_dtype="bfloat16")}
    ranks = run_ranks(_ranks_update, WORLD, state, batch)
    start = {k: v.detach().clone() for k, v in model.named_parameters()}
    return start, ref, ranks, batch


def test_the_shards_differ_in_tokens_and_micro_batches(results):
    from appo.train.packing import pack_micro_batches

    *_, batch = results
    r0, r1 = rank_batch(batch, 0), rank_batch(batch, 1)
    assert r0.loss_mask_BR.sum() > 2 * r1.loss_mask_BR.sum()  # a per-rank token-mean would weight them wrongly
    assert len(pack_micro_batches(r0, max_tokens=40)) > len(pack_micro_batches(r1, max_tokens=40))


@pytest.mark.parametrize("name,ref,tol", [("ddp_padded", "padded", TOL), ("ddp_packed", "packed", TOL),
                                          ("ddp_tree", "padded", TOL),
                                          ("ddp_packed_checkpointing", "packed", TOL), ("fsdp2", "padded", TOL),
                                          ("ddp_sgd", "sgd", TOL_SGD)])
def test_two_ranks_match_one_process(results, name, ref, tol):
    start, refs, ranks, _ = results
    if isinstance(ranks[0][name], str):
        pytest.skip(f"FSDP2 on CPU with gloo is not available in torch {torch.__version__}: {ranks[0][name]}")
    moved = _max_diff(refs[ref], start)
    diff = _max_diff(ranks[0][name], refs[ref])
    print(f"{name}: max |2 ranks - 1 process| = {diff:.2e} (weights moved by up to {moved:.2e})")
    assert moved > 1e-3
    assert diff < tol
    assert _max_diff(ranks[0][name], ranks[1][name]) == 0.0  # replicas (or full views of one shard set) agree


def test_fsdp2_mixed_precision_matches_one_process_autocast(results):
    """bf16 compute over fp32 shards (FSDP2's MixedPrecisionPolicy) against one process under bf16 autocast:
    SGD moves (linear in the gradient) agree to bf16 rounding of the gradients, weights stay fp32."""
    start, refs, ranks, _ = results
    if isinstance(ranks[0]["fsdp2_bf16"], str):
        pytest.skip(f"FSDP2 mixed precision on CPU with gloo is not available: {ranks[0]['fsdp2_bf16']}")
    assert ranks[0]["fsdp2_bf16_logits"] == torch.bfloat16  # the policy computes in bf16
    assert all(v.dtype == torch.float32 for v in ranks[0]["fsdp2_bf16"].values())
    moved = _max_diff(refs["sgd_bf16"], start)
    diff = _max_diff(ranks[0]["fsdp2_bf16"], refs["sgd_bf16"])
    fp32_diff = _max_diff(refs["sgd_bf16"], refs["sgd"])
    print(f"fsdp2 bf16: max |2 ranks - 1 process| = {diff:.2e}, bf16 vs fp32 one process {fp32_diff:.2e} "
          f"(moved up to {moved:.2e})")
    assert moved > 1e-3 and fp32_diff > 0
    assert diff < 0.05 * moved
    assert _max_diff(ranks[0]["fsdp2_bf16"], ranks[1]["fsdp2_bf16"]) == 0.0


def test_per_rank_token_means_would_not_match(results):
    start, refs, ranks, _ = results
    naive = _max_diff(ranks[0]["naive"], refs["padded"])
    print(f"naive (mean of rank token-means): max |diff| = {naive:.2e}")
    assert naive > 50 * TOL
