"""Shared-prefix training: the tree layout (one trie per group, 4D ancestor mask, depth positions) gives
the padded path's log-probs, losses and gradients (1e-5) on grpo, arpo, tree_grpo and appo batches, with
and without training the branch rows; the trie really shares; ``auto`` follows the cost estimate."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
import torch

from appo.core import get_advantage_estimator, get_policy_loss
from appo.train.batching import advantage_inputs, collate, split_micro_batches, with_fields
from appo.train.layout import batched_logprobs
from appo.train.logprobs import compute_logprobs
from appo.train.shared_prefix import layout_costs, tree_logprobs, tree_micro_batches, tree_rows, tree_wins
from appo.train.update import UpdateOptions, _micro_loss, ppo_update
from appo.types import Rollout

ALGORITHMS = ("grpo", "arpo", "tree_grpo", "appo")


def _rows(V: int, algorithm: str, groups: int = 2, initial: int = 3, branches: int = 3, seed: int = 0) -> list[Rollout]:
    """Groups of rows on one prompt each; for the branching algorithms, branches that copy their parent's
    response up to ``split`` (inclusive) and continue with their own tokens, some branching off branches."""
    rng = random.Random(seed)
    out = []
    for g in range(groups):
        prompt = tuple(rng.randrange(V) for _ in range(rng.randint(3, 10)))
        mine = []
        for u in range(initial):
            n = rng.randint(2, 14)
            resp = tuple(rng.randrange(V) for _ in range(n))
            mine.append(Rollout(group=g, uid=u, prompt_ids=prompt, response_ids=resp,
                                logprobs=(-1.0,) * n, entropies=(0.5,) * n,
                                loss_mask=tuple(int(rng.random() < 0.9) for _ in range(n)), stop_reason="eos"))
        if algorithm != "grpo":
            for k in range(branches):
                parent = rng.choice(mine)
                split = rng.randrange(len(parent.response_ids))
                resp = parent.response_ids[: split + 1] + tuple(rng.randrange(V) for _ in range(rng.randint(1, 8)))
                n = len(resp)
                mine.append(Rollout(group=g, uid=initial + k, prompt_ids=prompt, response_ids=resp,
                                    logprobs=(-1.0,) * n, entropies=(0.5,) * n, loss_mask=(1,) * n, stop_reason="eos",
                                    origin="branch", parent=parent.uid, split=split, root=parent.tree,
                                    branch_score=rng.random()))
        out += mine
    return out


def _batch(tok, algorithm: str, train_on_branches: bool, seed: int = 0):
    rows = _rows(len(tok), algorithm, seed=seed)
    rewards = torch.tensor([float(random.Random(seed * 31 + i).random() < 0.5) for i in range(len(rows))])
    adv_NT, _ = get_advantage_estimator(algorithm)(advantage_inputs(rows, rewards))
    trained_B = [r.origin == "initial" or train_on_branches for r in rows]
    return collate(rows, pad_id=tok.pad_token_id, trained_B=trained_B, advantages_NT=adv_NT)


def test_trie_shares_prompts_and_branch_prefixes(tiny_tokenizer):
    batch = _batch(tiny_tokenizer, "appo", True)
    tree = tree_rows(batch, list(range(batch.responses_BR.shape[0])))
    real = int(batch.attention_mask_BL.sum())
    assert tree.input_ids_GS.shape[0] == 2  # one sequence per group
    nodes = int(sum(int(tree.allowed_GSS[g].diagonal().sum()) for g in range(2)))  # every column sees itself
    # each group computes its prompt once and each branch's shared prefix once
    assert int((tree.allowed_GSS.sum(-1) > 1).sum()) + 2 <= real - 2 * 5
    assert nodes >= tree.input_ids_GS.shape[1]
    # a node's ancestors are exactly the tokens before it at increasing depth
    g = 0
    d = tree.position_ids_GS[g]
    for i in range(int((tree.allowed_GSS[g].sum(-1) > 0).sum())):
        anc = torch.nonzero(tree.allowed_GSS[g, i]).flatten()
        if len(anc) > 1 or d[i] == 0:
            assert sorted(d[anc].tolist()) == list(range(int(d[i]) + 1))


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_tree_logprobs_equal_padded(tiny_model, tiny_tokenizer, temperature):
    batch = _batch(tiny_tokenizer, "tree_grpo", True, seed=1)
    with torch.no_grad():
        ref = compute_logprobs(tiny_model, batch, temperature, with_entropy=True)
        got = tree_logprobs(tiny_model, tree_rows(batch, list(range(batch.responses_BR.shape[0]))), temperature,
                            with_entropy=True)
    torch.testing.assert_close(got[0], ref[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(got[1], ref[1], atol=1e-5, rtol=0)
    logp, ent = batched_logprobs(tiny_model, batch, "tree", temperature, with_entropy=True, max_rows=4)  # split groups
    torch.testing.assert_close(logp, ref[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(ent, ref[1], atol=1e-5, rtol=0)


def test_tree_logprobs_under_eager_attention(tiny_model, tiny_tokenizer):
    batch = _batch(tiny_tokenizer, "arpo", True, seed=2)
    tiny_model.set_attn_implementation("eager")
    with torch.no_grad():
        ref, _ = compute_logprobs(tiny_model, batch)
        got, _ = tree_logprobs(tiny_model, tree_rows(batch, list(range(batch.responses_BR.shape[0]))))
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("train_on_branches", [True, False])
def test_loss_and_gradients_equal_padded(tiny_model, tiny_tokenizer, algorithm, train_on_branches):
    batch = _batch(tiny_tokenizer, algorithm, train_on_branches, seed=3)
    with torch.no_grad():
        old, _ = compute_logprobs(tiny_model, batch)
    noise = torch.rand(old.shape, generator=torch.Generator().manual_seed(0))
    batch = with_fields(batch, old_logp_BR=old - 0.05 * noise)
    opts = UpdateOptions(future_kl=algorithm == "appo", entropy_coeff=0.01)
    loss_fn = get_policy_loss(opts.policy_loss)
    B = batch.responses_BR.shape[0]
    results = []
    for micro in (split_micro_batches(batch)[0], tree_micro_batches(batch)[0]):
        assert len(micro.rows) == B
        tiny_model.zero_grad(set_to_none=True)
        loss = _micro_loss(tiny_model, micro, opts, loss_fn, defaultdict(list))
        loss.backward()
        results.append((float(loss.detach()), {k: p.grad.clone() for k, p in tiny_model.named_parameters()}))
    (l0, g0), (l1, g1) = results
    assert abs(l0 - l1) < 1e-5
    scale = max(float(g.abs().max()) for g in g0.values())
    assert scale > 1e-5  # the gradient is not trivially zero
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], atol=min(1e-5, 1e-4 * scale), rtol=0, msg=k)


@pytest.mark.parametrize("algorithm", ["grpo", "appo"])
def test_update_with_shared_prefix_equals_padded(tiny_model_dir, tiny_tokenizer, algorithm):
    from transformers import AutoModelForCausalLM

    batch = _batch(tiny_tokenizer, algorithm, True, seed=4)
    params = []
    for tree in (False, True):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        opts = UpdateOptions(ppo_mini_batch_size=1, micro_batch_rows=4, layout="tree" if tree else "padded",
                             old_logp_from_current=True,
                             future_kl=algorithm == "appo")
        ppo_update(model, torch.optim.SGD(model.parameters(), lr=0.5), batch, opts)
        params.append({k: p.detach() for k, p in model.named_parameters()})
    assert max(float((params[0][k] - params[1][k]).abs().max()) for k in params[0]) < 1e-5


def test_auto_follows_the_cost_estimate(tiny_model, tiny_tokenizer, monkeypatch):
    V = len(tiny_tokenizer)
    cfg = tiny_model.config
    long_prompt = tuple(range(1, 200))
    shared = [Rollout(group=0, uid=u, prompt_ids=long_prompt, response_ids=(u + 1, 2), logprobs=(0.0, 0.0),
                      entropies=(0.0, 0.0), loss_mask=(1, 1), stop_reason="eos") for u in range(8)]
    padded, tree = layout_costs(collate(shared, pad_id=0), cfg)
    assert tree < padded / 4 and tree_wins(collate(shared, pad_id=0), cfg)
    rng = random.Random(0)
    distinct = [Rollout(group=u, uid=0, prompt_ids=(1,), response_ids=tuple(rng.randrange(V) for _ in range(30)),
                        logprobs=(0.0,) * 30, entropies=(0.0,) * 30, loss_mask=(1,) * 30, stop_reason="eos")
                for u in range(8)]
    assert not tree_wins(collate(distinct, pad_id=0), cfg)
    monkeypatch.setattr("appo.train.shared_prefix.TREE_MAX_NODES", 100)
    assert not tree_wins(collate(shared, pad_id=0), cfg)  # a mask too big for auto


@pytest.mark.parametrize("algorithm", ["grpo", "appo"])
def test_trainer_step_with_shared_prefix_equals_padded(tmp_path, algorithm):
    import run_helpers
    from safetensors.torch import load_file

    from appo.train.trainer import train

    base = run_helpers.tiny_base(tmp_path / "base")
    weights = []
    for mode in ("false", "true"):
        cfg = run_helpers.tiny_config(base, tmp_path / mode, f"actor.shared_prefix={mode}",
                                      f"algorithm.name={algorithm}",
                                      "trainer.total_training_steps=1", "algorithm.appo.train_on_branches=true",
                                      "actor.optim.lr=1e-3")
        result = train(cfg)
        assert result.history[0]["actor/shared_prefix"] == (mode == "true")
        weights.append(load_file(tmp_path / mode / "checkpoints" / "step_000001" / "model" / "model.safetensors"))
    before = load_file(base / "model.safetensors")
    assert any(not torch.equal(before[k], weights[1][k]) for k in before)
    assert max(float((weights[0][k] - weights[1][k]).abs().max()) for k in before) < 1e-5
