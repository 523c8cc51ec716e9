"""Crash-safe checkpoints that resume a run bitwise: weights, optimizer, scheduler, RNG, data position.

Layout of a run directory::

    run_dir/checkpoints/step_000010/model/model.safetensors   full weights + config.json (+ tokenizer)
                                   /adapter/...               or, for a PEFT model, only the adapters
                                   /optimizer.pt, scheduler.pt
                                   /state.pt                  step, RNG states, data position, extra
                                   /meta.json                 step, files and sizes (written last)
    run_dir/checkpoints/latest                                "step_000010"

Atomicity: everything is written into ``checkpoints/.tmp-step_000010-<pid>-<rand>`` in the same parent,
every file and the directory are fsynced, the directory is renamed to ``step_000010`` (one atomic
``rename``), the parent is fsynced, and only then is ``latest`` replaced (write a temp file, fsync,
``os.replace``). A crash at any moment leaves ``latest`` naming a complete checkpoint; temp and trash
directories of dead processes are removed by the next save or load. Retention deletes the oldest
``step_*`` folders beyond ``keep`` (never the one ``latest`` names) by renaming them to a trash name
first, so a half-deleted folder is never mistaken for a checkpoint.

Model weights are the module's own ``state_dict`` (tensors sharing storage, i.e. tied embeddings,
saved once) in safetensors, next to the HF ``config.json``, so a checkpoint folder also loads with
``from_pretrained`` for standard architectures. Left out: sharded/distributed state (FSDP, DeepSpeed),
and saving a frozen reference model (it is reloaded from ``model.path``).
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors.torch import load_file, save_file

CKPT_DIR = "checkpoints"
LATEST = "latest"
FORMAT_VERSION = 1
_STEP_RE = re.compile(r"^step_(\d+)$")
_TEMP_RE = re.compile(r"^\.(tmp|trash)-.*-(\d+)-[0-9a-f]+$")


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint on disk, with its small state loaded; :func:`restore` applies it."""

    path: Path
    """The ``step_XXXXXX`` folder."""
    step: int
    """Training steps completed when it was saved."""
    data_state: dict = field(default_factory=dict)
    """The data position the caller saved (epoch, index, ...)."""
    extra: dict = field(default_factory=dict)
    """Anything else the caller saved (tensors allowed)."""
    rng_state: dict = field(default_factory=dict)
    """RNG states from :func:`capture_rng_state`."""
    model_format: str = "full"
    """``full`` (all weights under ``model/``) or ``peft`` (adapters under ``adapter/``)."""


# ------------------------------------------------------------------------------------------- RNG state
def capture_rng_state(generators: Mapping[str, torch.Generator] | None = None) -> dict:
    """The states of Python's ``random``, NumPy's global RNG, torch's CPU RNG, every CUDA device's RNG
    (when CUDA is initialised) and each named ``torch.Generator`` in ``generators``."""
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {**np_state, "state": {"key": np_state["state"]["key"].tolist(), "pos": np_state["state"]["pos"]}},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    return state


def restore_rng_state(state: dict, generators: Mapping[str, torch.Generator] | None = None) -> None:
    """Put back the states captured by :func:`capture_rng_state`, including each named generator
    passed in ``generators`` (a name absent from ``state`` raises ``KeyError`` naming it)."""
    random.setstate(_as_tuple(state["python"]))
    np_state = state["numpy"]
    np.random.set_state({**np_state, "state": {"key": np.asarray(np_state["state"]["key"], dtype=np.uint32),
                                               "pos": np_state["state"]["pos"]}})
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, g in (generators or {}).items():
        if name not in state.get("generators", {}):
            raise KeyError(f"generator {name!r} has no saved state; saved: {sorted(state.get('generators', {}))}")
        g.set_state(state["generators"][name])


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


# ----------------------------------------------------------------------------------------------- save
def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    rng_state: dict | None = None,
    data_state: dict | None = None,
    extra: dict | None = None,
    *,
    tokenizer: Any | None = None,
    keep: int | None = None,
) -> Path:
    """Atomically write checkpoint ``step`` under ``run_dir/checkpoints`` and point ``latest`` at it.

    ``rng_state`` is :func:`capture_rng_state`'s output, or ``{name: torch.Generator}`` (the global RNGs
    and those generators are captured now), or None (the global RNGs only). ``data_state`` and ``extra``
    hold plain data and tensors. ``tokenizer`` (optional) is saved next to the weights so the folder
    loads as a model. ``keep`` keeps that many newest checkpoints (None keeps all). Returns the folder.
    """
    ckpt_dir = Path(run_dir) / CKPT_DIR
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_temp_dirs(run_dir)
    name = f"step_{step:06d}"
    tmp = ckpt_dir / f".tmp-{name}-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        model_format = _save_model(model, tmp, tokenizer)
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        if scheduler is not None:
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        if rng_state is None or all(isinstance(v, torch.Generator) for v in rng_state.values()):
            rng_state = capture_rng_state(rng_state)  # None, or {name: generator}: capture now
        state = {"step": step, "rng": rng_state,
                 "data_state": data_state or {}, "extra": extra or {}, "model_format": model_format}
        torch.save(state, tmp / "state.pt")
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        meta = {"format_version": FORMAT_VERSION, "step": step, "model_format": model_format, "time": time.time(),
                "data_state": _jsonable(data_state or {}), "files": files}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        _fsync_tree(tmp)
        final = ckpt_dir / name
        if final.exists():  # the same step saved again (a resumed run re-reached it): swap atomically
            _discard(final)
        os.rename(tmp, final)
        _fsync_dir(ckpt_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_atomic(ckpt_dir / LATEST, name + "\n")
    if keep is not None:
        prune_checkpoints(run_dir, keep)
    return final


def _save_model(model: torch.nn.Module, out: Path, tokenizer: Any | None) -> str:
    if _is_peft(model):
        model.save_pretrained(out / "adapter")
        fmt = "peft"
    else:
        (out / "model").mkdir()
        state, seen = {}, {}
        for key, t in model.state_dict().items():
            ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
            if ident in seen:  # tied weight (e.g. lm_head = embed_tokens): saved once
                continue
            seen[ident] = key
            state[key] = t.detach().to("cpu").contiguous()
        save_file(state, out / "model" / "model.safetensors", metadata={"format": "pt"})
        if getattr(model, "config", None) is not None and hasattr(model.config, "save_pretrained"):
            model.config.save_pretrained(out / "model")
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(out / "model")
        fmt = "full"
    if tokenizer is not None:
        tokenizer.save_pretrained(out / ("adapter" if fmt == "peft" else "model"))
    return fmt


def _is_peft(model: torch.nn.Module) -> bool:
    peft = sys.modules.get("peft")  # a PEFT model implies peft is imported; never pay for importing it here
    return peft is not None and isinstance(model, peft.PeftModel)


def _jsonable(x: Any) -> Any:
    try:
        json.dumps(x)
        return x
    except TypeError:
        return repr(x)


def _fsync_tree(root: Path) -> None:
    for p in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        else:
            _fsync_dir(p)
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _discard(path: Path) -> None:
    """Rename to a trash name (atomic), then delete: a crash never leaves a half-deleted ``step_*``."""
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}-{secrets.token_hex(4)}")
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftover from an earlier failed attempt
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temp_dirs(run_dir: str | Path) -> list[Path]:
    """Delete temp/trash folders (and temp ``latest`` files) left by dead processes; returns them."""
    ckpt_dir = Path(run_dir) / CKPT_DIR
    removed = []
    if not ckpt_dir.is_dir():
        return removed
    for p in ckpt_dir.iterdir():
        m = _TEMP_RE.match(p.name) or re.match(r"^\.latest\.tmp-(\d+)-[0-9a-f]+$", p.name)
        if m and not _alive(int(m.groups()[-1])):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first (incomplete ones are skipped)."""
    ckpt_dir = Path(run_dir) / CKPT_DIR
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _STEP_RE.match(p.name)) and _complete(p)]
    return [p for _, p in sorted(found)]


def prune_checkpoints(run_dir: str | Path, keep: int) -> list[Path]:
    """Delete the oldest checkpoints beyond the newest ``keep`` (never the one ``latest`` names)."""
    if keep < 1:
        raise ValueError(f"keep={keep} must be >= 1 (the latest checkpoint is always kept)")
    latest = _read_latest(Path(run_dir) / CKPT_DIR)
    ckpts = list_checkpoints(run_dir)
    doomed = [p for p in ckpts[: max(0, len(ckpts) - keep)] if p.name != latest]
    for p in doomed:
        _discard(p)
    return doomed


# ----------------------------------------------------------------------------------------------- load
def _complete(path: Path) -> bool:
    try:
        meta = json.loads((path / "meta.json").read_text())
        return all((path / f).is_file() and (path / f).stat().st_size == size for f, size in meta["files"].items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _read_latest(ckpt_dir: Path) -> str | None:
    try:
        return (ckpt_dir / LATEST).read_text().strip() or None
    except OSError:
        return None


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint folder's small state (weights stay on disk until :func:`restore`)."""
    path = Path(path)
    if not _complete(path):
        raise FileNotFoundError(f"{path} is not a complete appo checkpoint (meta.json missing or files "
                                "incomplete); pass a checkpoints/step_XXXXXX folder")
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    return Checkpoint(path=path, step=int(state["step"]), data_state=state["data_state"], extra=state["extra"],
                      rng_state=state["rng"], model_format=state["model_format"])


def load_latest_checkpoint(run_dir: str | Path) -> Checkpoint | None:
    """The checkpoint ``latest`` names, or the newest complete one if ``latest`` is missing or broken;
    None when the run has none. Cleans temp folders of dead writers first."""
    clean_stale_temp_dirs(run_dir)
    ckpt_dir = Path(run_dir) / CKPT_DIR
    latest = _read_latest(ckpt_dir)
    if latest and _STEP_RE.match(latest) and _complete(ckpt_dir / latest):
        return load_checkpoint(ckpt_dir / latest)
    ckpts = list_checkpoints(run_dir)
    return load_checkpoint(ckpts[-1]) if ckpts else None


def restore(
    ckpt: Checkpoint,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    generators: Mapping[str, torch.Generator] | None = None,
    *,
    restore_rng: bool = True,
) -> Checkpoint:
    """Load weights (in place), optimizer and scheduler states, and the RNG states (global ones and each
    named generator) of ``ckpt``; the caller repositions its data from ``ckpt.data_state``. Returns ckpt.

    The model must have the architecture (and, for PEFT, the adapter config) it had when saved.
    """
    device = next(model.parameters()).device
    if ckpt.model_format == "peft":
        from peft import set_peft_model_state_dict

        if not _is_peft(model):
            raise TypeError(f"{ckpt.path} holds LoRA adapters; wrap the model with the same LoRA config first")
        state = load_file(ckpt.path / "adapter" / "adapter_model.safetensors", device=str(device))
        result = set_peft_model_state_dict(model, state)
        if getattr(result, "unexpected_keys", None):
            raise RuntimeError(f"{ckpt.path}: adapter keys not in the model: {result.unexpected_keys[:5]}")
    else:
        if _is_peft(model):
            raise TypeError(f"{ckpt.path} holds full weights but the model is a PEFT model; restore the base model")
        state = load_file(ckpt.path / "model" / "model.safetensors", device=str(device))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected:
            raise RuntimeError(f"{ckpt.path}: weights not in the model: {unexpected[:5]}")
        params = dict(model.state_dict())
        loaded_ptrs = {params[k].untyped_storage().data_ptr() for k in state}
        untied = [k for k in missing if params[k].untyped_storage().data_ptr() not in loaded_ptrs]
        if untied:
            raise RuntimeError(f"{ckpt.path}: weights missing from the checkpoint: {untied[:5]}")
    if optimizer is not None:
        if not (ckpt.path / "optimizer.pt").is_file():
            raise FileNotFoundError(f"{ckpt.path} has no optimizer state; it was saved without an optimizer")
        optimizer.load_state_dict(torch.load(ckpt.path / "optimizer.pt", map_location="cpu", weights_only=True))
    if scheduler is not None:
        if not (ckpt.path / "scheduler.pt").is_file():
            raise FileNotFoundError(f"{ckpt.path} has no scheduler state; it was saved without a scheduler")
        scheduler.load_state_dict(torch.load(ckpt.path / "scheduler.pt", map_location="cpu", weights_only=True))
    if restore_rng:
        restore_rng_state(ckpt.rng_state, generators)
    return ckpt
