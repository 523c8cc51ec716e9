"""SFT: the loss falls on a memorisation set, masked tokens get no gradient, runs are seeded."""

from __future__ import annotations

import pytest
import torch

from appo.train.sft import masked_nll, sft_train


def _examples(tok):
    texts = [("What is 2+3? ", "<answer>\\boxed{5}</answer>"), ("Who wrote it? ", "<answer>Alice Smith</answer>"),
             ("What is 7*6? ", "<python>print(7*6)</python>"), ("Say hi. ", "hi there")]
    out = []
    for prompt, answer in texts:
        p, a = tok(prompt)["input_ids"], tok(answer)["input_ids"] + [tok.eos_token_id]
        out.append((p + a, [0] * len(p) + [1] * len(a)))
    return out


def test_loss_goes_down_on_a_memorisation_set(tiny_model, tiny_tokenizer):
    logged = []
    out = sft_train(tiny_model, _examples(tiny_tokenizer), lr=3e-3, epochs=12, batch_size=2, seed=0,
                    log_fn=lambda step, m: logged.append((step, m)))
    assert out["steps"] == 24 and len(out["epoch_loss"]) == 12 and len(logged) == 24
    assert out["epoch_loss"][-1] < 0.5 * out["epoch_loss"][0]
    assert logged[0][1]["sft/tokens"] > 0 and "sft/grad_norm" in logged[0][1]
    assert not tiny_model.training  # mode restored (the fixture hands out an eval-mode model)


def test_masked_positions_receive_no_gradient():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11, requires_grad=True)
    ids = torch.randint(0, 11, (2, 5))
    mask = torch.tensor([[0, 0, 1, 0, 1], [0, 1, 1, 1, 0]])
    s, n = masked_nll(logits, ids, mask)
    (s / n).backward()
    # logits at t predict token t+1: rows of the gradient are zero exactly where mask[t+1] == 0
    predicts_trained = torch.cat([mask[:, 1:], torch.zeros(2, 1, dtype=mask.dtype)], 1).bool()
    grad_rows = logits.grad.abs().sum(-1) > 0
    assert torch.equal(grad_rows, predicts_trained)
    assert n == 5
    ref = -torch.log_softmax(logits.detach()[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    assert torch.allclose(s, (ref * mask[:, 1:]).sum())


def test_masked_targets_do_not_change_training(tiny_model_dir, tiny_tokenizer):
    """Changing a masked token that nothing later conditions on (the last one) leaves training bitwise
    identical; changing it while it is trained does not."""
    from transformers import AutoModelForCausalLM

    def run(last_token: int, last_mask: int):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        ex = [(x[:-1] + [last_token], m[:-1] + [last_mask]) for x, m in _examples(tiny_tokenizer)]
        out = sft_train(model, ex, lr=1e-3, steps=3, batch_size=4, micro_batch_size=2, seed=1)
        return out["step_loss"], model.state_dict()

    a_loss, a = run(5, 0)
    b_loss, b = run(17, 0)
    assert a_loss == b_loss and all(torch.equal(a[k], b[k]) for k in a)
    c_loss, c = run(17, 1)
    assert c_loss != a_loss and not all(torch.equal(a[k], c[k]) for k in a)


def test_seeded_and_micro_batching_matches_full_batch(tiny_model_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    def run(seed, micro):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        return sft_train(model, _examples(tiny_tokenizer), lr=1e-3, steps=2, batch_size=4,
                         micro_batch_size=micro, seed=seed)["step_loss"]

    assert run(0, None) == run(0, None)
    assert run(0, 1) == pytest.approx(run(0, None), rel=1e-5)


def test_bad_input_names_the_fix(tiny_model):
    with pytest.raises(ValueError, match="exactly one of epochs"):
        sft_train(tiny_model, [([1, 2], [0, 1])], lr=1e-3)
    with pytest.raises(ValueError, match="same length"):
        sft_train(tiny_model, [([1, 2, 3], [0, 1])], steps=1)
    with pytest.raises(ValueError, match="no example has a trained token"):
        sft_train(tiny_model, [([1, 2, 3], [1, 0, 0])], steps=1)
