"""score_sequences: teacher-forced log-probs and entropies equal per-sequence full forwards."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import teacher_forced

from appo.engine.scoring import score_sequences


def test_scores_match_single_sequence_forwards_for_ragged_batches(sharp_model, tiny_tokenizer):
    texts = ["What is 12 * 34 + 5? <think>I need to compute this.</think>", "hi there", "<python>print(1)</python>",
             "Who wrote the book? <search>author</search>\n<result>\nAlice\n</result>"]
    seqs = [tiny_tokenizer(t)["input_ids"] for t in texts]
    starts = [5, 1, len(seqs[2]) - 1, 12]
    for T in (1.0, 0.6, 0.0):
        got = score_sequences(sharp_model, seqs, starts, temperature=T, batch_size=3)
        for s, r, (lp, ent) in zip(seqs, starts, got):
            ref_lp, ref_ent, _ = teacher_forced(sharp_model, s[:r], s[r:], temperature=T)
            assert lp.shape == (len(s) - r,) and lp.dtype == torch.float32
            assert torch.allclose(lp, ref_lp, atol=1e-5) and torch.allclose(ent, ref_ent, atol=1e-5)


def test_eager_model_and_empty_response(tiny_model_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="eager").eval()
    seqs = [[5, 6, 7, 8, 9], [10, 11, 12]]
    (lp0, e0), (lp1, e1) = score_sequences(model, seqs, [2, 3], batch_size=2)
    ref_lp, ref_ent, _ = teacher_forced(model, seqs[0][:2], seqs[0][2:])
    assert torch.allclose(lp0, ref_lp, atol=1e-5) and torch.allclose(e0, ref_ent, atol=1e-5)
    assert lp1.numel() == 0 and e1.numel() == 0


def test_bad_starts_are_named(sharp_model):
    with pytest.raises(ValueError, match="response_starts\\[0\\]"):
        score_sequences(sharp_model, [[1, 2, 3]], [0])
    with pytest.raises(ValueError, match="differ in length"):
        score_sequences(sharp_model, [[1, 2, 3]], [1, 2])


def _shared_prefix_sequences(tok):
    """Two prompts, each with rows that share it and a branch that copies a row's first response tokens."""
    a = tok("What is 12 * 34 + 5?")["input_ids"]
    b = tok("Who wrote the book?")["input_ids"]
    ra, rb = tok(" <think>I need to compute this.</think>")["input_ids"], tok(" <search>author</search>")["input_ids"]
    seqs = [a + ra, a + rb, a + ra[:3] + rb[:4], b + rb, b + ra[:2], b]
    return seqs, [len(a), len(a), len(a), len(b), len(b), len(b)]


def test_shared_prefixes_score_through_the_sparse_trie(sharp_model, tiny_tokenizer, monkeypatch):
    from appo.engine import scoring
    from appo.models import tree_attention

    seqs, starts = _shared_prefix_sequences(tiny_tokenizer)
    before = tree_attention._STATE["calls"]
    got = score_sequences(sharp_model, seqs, starts, temperature=0.8)
    assert tree_attention._STATE["calls"] - before == sharp_model.config.num_hidden_layers  # one trie forward
    for s, r, (lp, ent) in zip(seqs, starts, got):
        ref_lp, ref_ent, _ = teacher_forced(sharp_model, s[:r], s[r:], temperature=0.8)
        assert lp.shape == (len(s) - r,)
        torch.testing.assert_close(lp, ref_lp, atol=1e-5, rtol=0)
        torch.testing.assert_close(ent, ref_ent, atol=1e-5, rtol=0)
    # a model that does not pass the layout to its attention is scored the padded way, same numbers
    monkeypatch.setattr(scoring, "tree_forward_logits", lambda *a, **k: (None, False))
    for (lp, ent), (lp2, ent2) in zip(got, score_sequences(sharp_model, seqs, starts, temperature=0.8)):
        torch.testing.assert_close(lp2, lp, atol=1e-5, rtol=0)
        torch.testing.assert_close(ent2, ent, atol=1e-5, rtol=0)


def test_trie_batches_respect_the_node_and_logit_budgets(monkeypatch):
    from appo.engine import scoring

    monkeypatch.setattr(scoring, "TRIE_MAX_NODES", 10)
    assert scoring._trie_batches([[1] * 4, [1] * 4, [1] * 4, [1] * 12], [1, 1, 1, 1], 5) == [[0, 1], [2], [3]]
    monkeypatch.setattr(scoring, "TRIE_MAX_NODES", 100)
    monkeypatch.setattr(scoring, "TRIE_MAX_LOGITS", 30)
    assert scoring._trie_batches([[1] * 4, [1] * 4, [1] * 4], [1, 1, 1], 5) == [[0, 1], [2]]



def test_identical_rows_score_bitwise_equal_wherever_they_sit_in_the_call(sharp_model, tiny_tokenizer):
    """APPO's initial rows are often identical (a confident policy). Scored as a trie they are one path, so their
    Omega and Branching Score tie exactly and ``select_branch_points`` takes the lower row index, whatever the
    other rows are. The padded scoring (before issue 26) gave them float noise from their batches' padding (here
    up to 1.4e-6 in 4 of these 20 calls; in the demo at step 2, seed 0: BS 1.8779879 vs 1.8779842 at the same
    position of two equal rows), and that noise chose the parent instead."""
    import random

    from appo.core import select_branch_points

    p = tiny_tokenizer("What is 12 * 34 + 5?")["input_ids"]
    rng = random.Random(0)
    for _ in range(20):  # 32 rows, batches of 8 as APPO's Omega passes run them; one row twice
        rows = [p + [rng.randrange(5, 300) for _ in range(rng.randrange(3, 30))] for _ in range(31)]
        dup = rows[rng.randrange(31)]
        rows.insert(rng.randrange(32), list(dup))
        got = score_sequences(sharp_model, rows, [len(p)] * 32, batch_size=8)
        i, j = [k for k, r in enumerate(rows) if r == dup][:2]
        assert torch.equal(got[i][0], got[j][0]) and torch.equal(got[i][1], got[j][1])
    score_R = got[i][0] - got[i][0].mean()
    assert select_branch_points([got[j][0] - got[j][0].mean(), score_R], [torch.ones_like(score_R)] * 2, 1) == \
        [(0, int(score_R.argmax()))]
