"""sample_next / support_mask / StopStrings, checked against direct computations."""

from __future__ import annotations

import math

import torch

from appo.engine.sampling import StopStrings, sample_next, support_mask


def test_logprob_and_entropy_are_of_the_untruncated_tempered_distribution():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 50, generator=g) * 3
    T = 0.7
    tok, logp, ent = sample_next(logits, T, top_p=0.5, top_k=5, generator=g)
    ref_lp = torch.log_softmax(logits / T, -1)
    assert torch.allclose(logp, ref_lp.gather(-1, tok[:, None]).squeeze(-1), atol=1e-6)
    assert torch.allclose(ent, -(ref_lp.exp() * ref_lp).sum(-1), atol=1e-5)


def test_greedy_is_argmax_and_reports_temperature_one():
    logits = torch.randn(3, 20)
    tok, logp, _ = sample_next(logits, 0.0)
    assert torch.equal(tok, logits.argmax(-1))
    assert torch.allclose(logp, torch.log_softmax(logits, -1).max(-1).values)


def test_top_k_and_top_p_masks_by_hand():
    logp = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    assert support_mask(logp, top_k=2).tolist() == [[True, True, False, False, False]]
    # mass before each token: 0, .5, .7, .85, .95 -> keep while < 0.8
    assert support_mask(logp, top_p=0.8).tolist() == [[True, True, True, False, False]]
    assert support_mask(logp, top_p=0.01).tolist() == [[True, False, False, False, False]]
    # top-k first, then nucleus of the renormalised top-k: (.5, .2, .15)/.85 -> before: 0, .59, .82
    assert support_mask(logp, top_p=0.7, top_k=3).tolist() == [[True, True, False, False, False]]


def test_samples_stay_in_the_support_and_follow_the_distribution():
    g = torch.Generator().manual_seed(1)
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1]])).repeat(4000, 1)
    tok, _, _ = sample_next(logits, 1.0, top_k=3, generator=g)
    freq = torch.bincount(tok, minlength=4).float() / tok.numel()
    assert freq[3] == 0
    assert torch.allclose(freq[:3], torch.tensor([4 / 9, 3 / 9, 2 / 9]), atol=0.03)
    tok, _, _ = sample_next(logits, 1.0, generator=g)
    freq = torch.bincount(tok, minlength=4).float() / tok.numel()
    assert torch.allclose(freq, torch.tensor([0.4, 0.3, 0.2, 0.1]), atol=0.03)


def test_same_generator_seed_same_samples():
    logits = torch.randn(8, 100)
    a = sample_next(logits, 1.0, generator=torch.Generator().manual_seed(5))[0]
    b = sample_next(logits, 1.0, generator=torch.Generator().manual_seed(5))[0]
    c = sample_next(logits, 1.0, generator=torch.Generator().manual_seed(6))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_stop_strings_across_token_boundaries(tiny_tokenizer):
    stops = StopStrings(tiny_tokenizer, ["</python>", "ab\ncd"])
    ids = tiny_tokenizer("x = 1\nab")["input_ids"]
    tail = tiny_tokenizer("\ncd and more")["input_ids"]
    found = None
    gen = list(ids)
    for t in tail:  # feed one token at a time; the stop must be found at the token that completes it
        gen.append(t)
        found = stops.check([gen])[0]
        if found:
            break
    assert found == "ab\ncd"
    assert "ab\ncd" in tiny_tokenizer.decode(gen) and "ab\ncd" not in tiny_tokenizer.decode(gen[:-1])
    assert stops.window == len("</python>") + 2
    assert StopStrings(tiny_tokenizer, []).check([[1, 2]]) == [None]
    assert math.isfinite(stops.window)


def test_stop_prefilter_answers_as_decoding_every_row(tiny_tokenizer):
    """The prefilter (skip rows whose newest token cannot hold a stop string's last character) gives the
    answers of decoding every row, on random tails with stop strings planted at random token boundaries,
    fed one token at a time as the engine does (a row stops at its first hit)."""
    import random

    rng = random.Random(0)
    vocab = len(tiny_tokenizer)
    stops = StopStrings(tiny_tokenizer, ["</answer>", "</python>"])
    assert stops._last_chars == frozenset({">"})
    planted = [tiny_tokenizer(s, add_special_tokens=False)["input_ids"] for s in ("</answer>", "x</python>", "<a>")]
    tails, hits = [], 0
    for _ in range(400):
        gen = [rng.randrange(vocab) for _ in range(rng.randrange(1, 12))]
        if rng.random() < 0.5:
            gen += rng.choice(planted)
        gen += [rng.randrange(vocab) for _ in range(rng.randrange(0, 2))]
        for n in range(1, len(gen) + 1):  # every prefix up to the first hit, as decoding sees them
            tails.append(gen[:n])
            if stops.check_all([gen[:n]])[0] is not None:
                break
    want = stops.check_all(tails)
    assert stops.check(tails) == want
    hits = sum(w is not None for w in want)
    assert hits > 50 and stops._table is not None and not all(stops._table)


def test_stop_prefilter_is_off_for_non_ascii_or_space_endings(tiny_tokenizer):
    assert StopStrings(tiny_tokenizer, ["stop\n"])._last_chars is None
    assert StopStrings(tiny_tokenizer, ["fin é"])._last_chars is None
    assert StopStrings(tiny_tokenizer, ["ab\ncd", "</x>"])._last_chars == frozenset({"d", ">"})
