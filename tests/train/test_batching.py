"""Collation in verl layout, advantage inputs, length-grouped micro-batches, padding statistics."""

from __future__ import annotations

import random

import pytest
import torch

from appo.algorithms import get_algorithm
from appo.config import load_config
from appo.train.batching import (
    advantage_inputs,
    collate,
    merge_micro_outputs,
    padding_stats,
    select_rows,
    split_micro_batches,
)
from appo.types import Rollout

PAD = 0


def make_rollout(prompt, response, mask=None, group=0, uid=0, **kw) -> Rollout:
    n = len(response)
    mask = tuple(mask) if mask is not None else (1,) * n
    return Rollout(group=group, uid=uid, prompt_ids=tuple(prompt), response_ids=tuple(response),
                   logprobs=tuple(-0.5 * m for m in mask), entropies=tuple(1.0 * m for m in mask),
                   loss_mask=mask, stop_reason="answer", **kw)


def random_rollouts(n: int, seed: int = 0, vocab: int = 50) -> list[Rollout]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        p, r = rng.randint(1, 12), rng.randint(0, 20)
        mask = [rng.random() < 0.7 for _ in range(r)]
        out.append(make_rollout([rng.randint(1, vocab - 1) for _ in range(p)],
                                [rng.randint(1, vocab - 1) for _ in range(r)], [int(m) for m in mask], uid=i))
    return out


def test_collate_layout_by_hand():
    rows = [
        make_rollout([5, 6, 7], [8, 9], mask=[1, 0], uid=0),
        make_rollout([4], [3, 2, 1], mask=[1, 1, 1], uid=1),
        make_rollout([9, 9], [7, 7, 7], mask=[0, 1, 1], uid=2, origin="branch", parent=0, split=0, branch_score=1.5),
    ]
    b = collate(rows, pad_id=PAD, trained_B=[True, True, False])
    assert b.input_ids_BL.tolist() == [[5, 6, 7, 8, 9, 0], [0, 0, 4, 3, 2, 1], [0, 9, 9, 7, 7, 7]]
    assert b.attention_mask_BL.tolist() == [[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1]]
    assert b.position_ids_BL.tolist() == [[0, 1, 2, 3, 4, 4], [0, 0, 0, 1, 2, 3], [0, 0, 1, 2, 3, 4]]
    assert b.responses_BR.tolist() == [[8, 9, 0], [3, 2, 1], [7, 7, 7]]
    assert b.response_mask_BR.tolist() == [[1, 1, 0], [1, 1, 1], [1, 1, 1]]
    # tool tokens (mask 0) and untrained branch rows are out of the loss
    assert b.loss_mask_BR.tolist() == [[1, 0, 0], [1, 1, 1], [0, 0, 0]]
    assert collate(rows, PAD).loss_mask_BR[2].tolist() == [0, 1, 1]  # None: every row trained
    assert b.trained_B.tolist() == [True, True, False]
    assert b.old_logp_BR.tolist() == [[-0.5, 0, 0], [-0.5, -0.5, -0.5], [0, -0.5, -0.5]]
    assert b.is_branch_B.tolist() == [False, False, True]
    assert b.prompt_len_B.tolist() == [3, 1, 2] and b.response_len_B.tolist() == [2, 3, 3]
    adv = torch.arange(12.0).reshape(3, 4)
    assert collate(rows, PAD, advantages_NT=adv).advantages_BR.tolist() == [[0, 1, 0], [4, 5, 6], [8, 9, 10]]
    with pytest.raises(ValueError, match="advantages_NT"):
        collate(rows, PAD, advantages_NT=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="trained_B has 2 entries"):
        collate(rows, PAD, trained_B=[True, False])


def test_collate_matches_rollouts_on_random_rows():
    rows = random_rollouts(16, seed=1)
    b = collate(rows, PAD)
    R = b.responses_BR.shape[1]
    P = b.input_ids_BL.shape[1] - R
    for i, r in enumerate(rows):
        real = b.input_ids_BL[i][b.attention_mask_BL[i].bool()].tolist()
        assert real == list(r.prompt_ids) + list(r.response_ids)
        assert b.input_ids_BL[i, P - len(r.prompt_ids) : P].tolist() == list(r.prompt_ids)
        assert b.position_ids_BL[i][b.attention_mask_BL[i].bool()].tolist() == list(range(len(real)))
        assert b.loss_mask_BR[i, : len(r.response_ids)].tolist() == list(r.loss_mask)
        assert b.loss_mask_BR[i, len(r.response_ids):].sum() == 0


def test_advantage_inputs_resolve_parents_and_roots():
    rows = [
        make_rollout([1], [2, 3], group=0, uid=0),
        make_rollout([1], [2, 4, 5], group=0, uid=1),
        make_rollout([1], [2, 3, 9], group=0, uid=2, origin="branch", parent=0, split=0, root=0, branch_score=0.7),
        make_rollout([6], [7], group=1, uid=0),
        make_rollout([6], [7, 8], group=1, uid=1, origin="branch", parent=0, split=0, root=0, branch_score=0.1),
    ]
    ai = advantage_inputs(rows, [1.0, 0.0, 1.0, 0.5, 0.0])
    assert ai.parent_N.tolist() == [-1, -1, 0, -1, 3]
    assert ai.tree_N.tolist() == [0, 1, 0, 3, 3]
    assert ai.split_N.tolist() == [-1, -1, 0, -1, 0]
    assert ai.is_branch_N.tolist() == [False, False, True, False, True]
    assert ai.mask_NT.sum(1).tolist() == [2, 3, 3, 1, 2]
    assert torch.isnan(ai.branch_score_N[0]) and ai.branch_score_N[2].item() == pytest.approx(0.7)
    from appo.core.advantages import get_advantage_estimator

    adv_NT, _ = get_advantage_estimator("appo")(ai)
    assert adv_NT.shape == ai.mask_NT.shape
    bad = rows[:2] + [make_rollout([1], [2], group=0, uid=5, origin="branch", parent=7, split=0)]
    with pytest.raises(ValueError, match="parent uid 7"):
        advantage_inputs(bad, [0.0, 0.0, 0.0])


@pytest.mark.parametrize("seed", range(3))
def test_micro_batches_cover_rows_and_respect_budgets(seed):
    rows = random_rollouts(20, seed=seed)
    b = collate(rows, PAD)
    for kw in ({"max_tokens": 64}, {"max_rows": 3}, {"max_tokens": 100, "max_rows": 4}):
        micro = split_micro_batches(b, **kw)
        covered = torch.cat([m.rows for m in micro]).sort().values
        assert covered.tolist() == list(range(20))
        for m in micro:
            mb = m.batch
            if "max_rows" in kw:
                assert len(m.rows) <= kw["max_rows"]
            if "max_tokens" in kw and len(m.rows) > 1:
                assert mb.input_ids_BL.numel() <= kw["max_tokens"]
            # each row is the same real sequence, positions, masks as in the full batch
            for j, i in enumerate(m.rows.tolist()):
                keep = b.attention_mask_BL[i].bool()
                assert mb.input_ids_BL[j][mb.attention_mask_BL[j].bool()].tolist() == b.input_ids_BL[i][keep].tolist()
                real_pos = mb.position_ids_BL[j][mb.attention_mask_BL[j].bool()]
                assert real_pos.tolist() == b.position_ids_BL[i][keep].tolist()
                R2 = mb.responses_BR.shape[1]
                assert torch.equal(mb.loss_mask_BR[j], b.loss_mask_BR[i, :R2])
                assert b.loss_mask_BR[i, R2:].sum() == 0
            assert mb.rollout_logp_BR.shape == mb.responses_BR.shape
        vals = [m.batch.old_logp_BR for m in micro]
        assert torch.equal(merge_micro_outputs(vals, micro, b.old_logp_BR), b.old_logp_BR)


def test_length_grouping_cuts_padding():
    rng = random.Random(0)
    rows = [make_rollout([1] * rng.randint(5, 10), [2] * rng.choice([3, 200]), uid=i) for i in range(32)]
    b = collate(rows, PAD)
    plain = padding_stats(split_micro_batches(b, max_rows=4, sort_by_length=False))
    grouped = padding_stats(split_micro_batches(b, max_rows=4))
    assert plain["real_tokens"] == grouped["real_tokens"] == padding_stats(b)["real_tokens"]
    assert grouped["efficiency"] > 0.8 > 0.6 > plain["efficiency"], (grouped, plain)


def test_select_rows_trims_padding():
    rows = [make_rollout([1] * 9, [2] * 30, uid=0), make_rollout([3, 4], [5], uid=1)]
    m = select_rows(collate(rows, PAD), [1])
    assert m.batch.input_ids_BL.tolist() == [[3, 4, 5]] and m.prompt_offset == 7


def _tree_rows():
    return [
        make_rollout([5], [8, 9, 4], mask=[1, 1, 1], uid=0),
        make_rollout([5], [3, 2, 1], mask=[1, 0, 1], uid=1),
        make_rollout([5], [8, 9, 7], mask=[1, 1, 1], uid=2, origin="branch", parent=0, split=1, branch_score=1.0),
        make_rollout([5], [3, 2, 6], mask=[1, 0, 1], uid=3, origin="branch", parent=1, split=1, branch_score=0.5),
    ]


@pytest.mark.parametrize("algorithm, on_branches, expected", [
    ("appo", False, [True, True, False, False]),   # reference default: branch rows are signal only
    ("appo", True, [True, True, True, True]),      # APPO's option
    ("arpo", False, [True, True, True, True]),     # ARPO: every row, initial and forked
    ("arpo", True, [True, True, True, True]),
    ("tree_grpo", False, [True, True, True, True]),  # Tree-GRPO: every leaf (every row is a leaf path)
    ("grpo", False, [True, True, True, True]),
])
def test_trained_rows_per_algorithm(algorithm, on_branches, expected):
    rows = _tree_rows()
    cfg = load_config(None, [f"algorithm.name={algorithm}", f"algorithm.appo.train_on_branches={on_branches}"])
    trained = get_algorithm(algorithm).trained_rows(cfg, rows)
    assert trained == expected
    b = collate(rows, PAD, trained)
    # a trained fork copies its parent's loss mask (model tokens of its whole response, shared prefix too)
    for i, r in enumerate(rows):
        assert b.loss_mask_BR[i].tolist() == [float(m) * expected[i] for m in r.loss_mask]
    assert b.trained_B.tolist() == expected


def test_an_unknown_algorithm_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="algorithm.name='ppo' is not one of appo, arpo, grpo, tree_grpo"):
        get_algorithm("ppo")
