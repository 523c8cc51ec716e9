"""What ``appo serve`` serves: a base model, a checkpoint folder, or a run directory's latest checkpoint.

:func:`resolve_source` turns the user's ``model`` argument into a :class:`ServedSource`:

- a run directory (holds ``checkpoints/``): the checkpoint its ``checkpoints/latest`` pointer names
  (or the newest complete one; :func:`appo.train.checkpoint.load_latest_checkpoint`);
- ``RUN/checkpoints/step_N`` or ``RUN/checkpoints/latest`` (the pointer file): that checkpoint;
- anything else: a model for :func:`appo.models.loading.load_model_and_tokenizer` (HF folder, cached
  hub id, ``.gguf``, alias).

A checkpoint's full weights live in ``step_N/model`` (a ``from_pretrained`` folder); a LoRA run's
``step_N/adapter`` is loaded on top of the run's base model (``model.path`` in the run's
``config.yaml``) and merged. The tokenizer is the one saved with the checkpoint, else the run's
``model.tokenizer_path`` / ``model.path``. The tool-call protocol is the run's ``rollout.protocol``;
for a base model it is ``hermes`` when the chat template mentions ``<tool_call>``, else ``tags``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class ServedSource:
    """Where the served weights and tokenizer come from."""

    model: str
    """Folder (or hub id / gguf / alias) loaded with ``from_pretrained``."""
    tokenizer: str | None = None
    """Tokenizer source when it differs from ``model``."""
    adapter: str | None = None
    """A PEFT adapter folder merged into ``model`` (LoRA checkpoints)."""
    protocol: str | None = None
    """The run's tool-call protocol (None: decide from the chat template)."""
    step: int | None = None
    """Training step of the checkpoint, when serving one."""
    default_name: str = "model"
    """Model id reported by ``/v1/models`` when none is given."""


def _run_config(run_dir: Path) -> dict:
    path = run_dir / "config.yaml"
    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))


def _from_checkpoint(step_dir: Path) -> ServedSource:
    from appo.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(step_dir)
    run_dir = step_dir.parent.parent
    cfg = _run_config(run_dir)
    model_cfg = cfg.get("model") or {}
    protocol = (cfg.get("rollout") or {}).get("protocol")
    base_tok = model_cfg.get("tokenizer_path") or model_cfg.get("path")
    name = f"{run_dir.name}/step_{ckpt.step}"
    if (step_dir / "model").is_dir():
        folder = step_dir / "model"
        tok = None if _has_tokenizer(folder) else base_tok
        return ServedSource(str(folder), tok, None, protocol, ckpt.step, name)
    adapter = step_dir / "adapter"
    if not adapter.is_dir() or not model_cfg.get("path"):
        raise FileNotFoundError(f"checkpoint {step_dir} has neither model/ nor adapter/ with a base model.path in "
                                f"{run_dir / 'config.yaml'}; pass a checkpoints/step_N folder of an appo run")
    tok = str(adapter) if _has_tokenizer(adapter) else base_tok
    return ServedSource(str(model_cfg["path"]), tok, str(adapter), protocol, ckpt.step, name)


def resolve_source(model: str | Path) -> ServedSource:
    """A :class:`ServedSource` for a run directory, a checkpoint (or ``latest`` pointer) or a model."""
    from appo.train.checkpoint import CKPT_DIR, LATEST, load_latest_checkpoint

    p = Path(str(model)).expanduser()
    if p.is_file() and p.name == LATEST and p.parent.name == CKPT_DIR:
        p = p.parent.parent
    if (p / CKPT_DIR).is_dir():
        ckpt = load_latest_checkpoint(p)
        if ckpt is None:
            raise FileNotFoundError(f"run directory {p} has no complete checkpoint yet; serve a checkpoints/step_N "
                                    "folder of another run, or a model")
        return _from_checkpoint(ckpt.path)
    if p.is_dir() and (p / "meta.json").is_file() and p.parent.name == CKPT_DIR:
        return _from_checkpoint(p)
    name = p.name if p.exists() else str(model)
    return ServedSource(str(model), default_name=name or "model")


def detect_protocol(tokenizer: Any) -> str:
    """``hermes`` when the chat template writes ``<tool_call>`` blocks, else ``tags``."""
    template = getattr(tokenizer, "chat_template", None) or ""
    return "hermes" if "<tool_call>" in str(template) else "tags"


def load_served(source: ServedSource, *, dtype: str = "float32", device: str = "auto") -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a source, in eval mode, a LoRA adapter merged into the weights."""
    from appo.models.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(source.model, dtype, device, tokenizer_path=source.tokenizer)
    if source.adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, source.adapter).merge_and_unload().eval()
    return model, tokenizer
