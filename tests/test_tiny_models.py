"""The tiny-model builders produce HF artefacts that round-trip through the normal interfaces."""

from transformers import AutoTokenizer


def test_tokenizer_roundtrip_and_chat_template(tiny_model_dir, tiny_tokenizer):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = "<python>print(12 * 3)</python>\n<result>\n36\n</result>"
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text
    assert tok.convert_tokens_to_ids("<python>") in ids  # protocol tags are single tokens
    assert ids.count(tok.convert_tokens_to_ids("1")) == 1  # digits are one token each
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<pad>"


def test_model_loads_and_runs(tiny_model, tiny_tokenizer):
    import torch

    ids = torch.tensor([tiny_tokenizer.encode("What is 1 + 2?")])
    out = tiny_model(ids)
    assert out.logits.shape == (1, ids.shape[1], len(tiny_tokenizer))
    assert sum(p.numel() for p in tiny_model.parameters()) < 2_000_000
