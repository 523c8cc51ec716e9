"""The log-prob layout is one value: chosen once (tree over packed over padded), carried by the micro-batches it
builds, and the one batched entry point gives the same numbers in each layout."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
import torch

import appo.train.update as update_mod
from appo.train.batching import MicroBatch, collate
from appo.train.layout import LAYOUTS, batched_logprobs, check_layout_support, choose_layout, layout_micro_batches
from appo.train.packing import PackedMicroBatch
from appo.train.shared_prefix import TreeMicroBatch
from appo.train.update import UpdateOptions, ppo_update
from appo.types import Rollout


def _batch(V: int, n: int = 6, groups: int = 2, seed: int = 0):
    rng = random.Random(seed)
    prompts = [tuple(rng.randrange(1, V) for _ in range(rng.randint(2, 6))) for _ in range(groups)]
    rows = []
    for i in range(n):
        r = rng.randint(2, 9)
        rows.append(Rollout(group=i % groups, uid=i // groups, prompt_ids=prompts[i % groups],
                            response_ids=tuple(rng.randrange(1, V) for _ in range(r)), logprobs=(0.0,) * r,
                            entropies=(0.0,) * r, loss_mask=(1,) * r, stop_reason="eos"))
    adv = torch.randn(n, 9, generator=torch.Generator().manual_seed(seed))
    return collate(rows, pad_id=0, advantages_NT=adv)


def test_choose_layout_precedence(tiny_model, tiny_tokenizer):
    batch = _batch(len(tiny_tokenizer))
    assert choose_layout(False, False, tiny_model, batch) == "padded"
    assert choose_layout(False, True, tiny_model, batch) == "packed"
    assert choose_layout(True, True, tiny_model, batch) == "tree"  # the trie takes precedence over packing
    assert choose_layout(True, False, tiny_model, batch) == "tree"
    tiny_model.config._attn_implementation = "flash_attention_2"
    assert choose_layout("auto", True, tiny_model, batch) == "packed"  # auto needs a 4D mask: falls back


def test_each_layout_builds_micro_batches_that_carry_it(tiny_tokenizer):
    batch = _batch(len(tiny_tokenizer))
    kinds = {"padded": MicroBatch, "packed": PackedMicroBatch, "tree": TreeMicroBatch}
    assert set(LAYOUTS) == set(kinds)
    for layout in LAYOUTS:
        micro = layout_micro_batches(batch, layout, max_rows=4)
        assert micro and all(type(m) is kinds[layout] and m.layout == layout for m in micro)
        assert sorted(r for m in micro for r in m.rows.tolist()) == list(range(6))
    with pytest.raises(ValueError, match="not one of padded, packed, tree"):
        layout_micro_batches(batch, "ragged")


def test_batched_logprobs_agree_across_layouts(tiny_model, tiny_tokenizer):
    batch = _batch(len(tiny_tokenizer), n=8, seed=1)
    ref, ref_ent = batched_logprobs(tiny_model, batch, "padded", 0.8, with_entropy=True)
    for layout in ("packed", "tree"):
        logp, ent = batched_logprobs(tiny_model, batch, layout, 0.8, with_entropy=True, max_rows=3)
        torch.testing.assert_close(logp, ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(ent, ref_ent, atol=1e-5, rtol=0)
    tiny_model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="actor.shared_prefix=false"):
        check_layout_support(tiny_model, "tree")
    with pytest.raises(ValueError, match="actor.shared_prefix=false"):
        batched_logprobs(tiny_model, batch, "tree")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_update_runs_the_layout_it_is_given(tiny_model, tiny_tokenizer, monkeypatch, layout):
    batch = _batch(len(tiny_tokenizer), seed=2)
    seen = defaultdict(int)
    real = update_mod.micro_logprobs

    def spy(model, m, *a, **k):
        seen[m.layout] += 1
        return real(model, m, *a, **k)

    monkeypatch.setattr(update_mod, "micro_logprobs", spy)
    opts = UpdateOptions(ppo_mini_batch_size=2, micro_batch_rows=2, layout=layout, old_logp_from_current=True)
    ppo_update(tiny_model, torch.optim.SGD(tiny_model.parameters(), lr=0.1), batch, opts)
    assert set(seen) == {layout} and seen[layout] >= 1
