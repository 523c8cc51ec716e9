"""Resuming with a changed config: which changes alter the training trajectory, and the refusal that names them.

A resumed run continues from a checkpoint's weights, optimizer, RNG and data position; it only stays the
run it claims to be when the settings that shape the trajectory are those the run started with. The
run directory's ``config.yaml`` (the resolved config the trainer saved) is compared key by key with the
new config. Keys in :data:`RESUME_SAFE_KEYS` (run length, logging, saving, validation, execution layout
that leaves the maths unchanged) may differ; any other difference (algorithm, learning rate, seeds,
data, model, rollout sizes, reward, tools, ...) is refused unless ``trainer.resume_allow_changes`` lists
the key (or a section prefix of it). Keys the saved file does not have (it was written by an older
appo) are not compared. Left out: checking that the files behind unchanged names (data files, reward
modules, the model folder) still hold what they held.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from appo.config.typed_yaml import ConfigError, to_dict

RESUME_SAFE_KEYS = (
    "trainer.project_name", "trainer.experiment_name", "trainer.total_training_steps", "trainer.save_freq",
    "trainer.test_freq", "trainer.val_before_train", "trainer.max_actor_ckpt_to_keep", "trainer.default_local_dir",
    "trainer.logger", "trainer.resume_mode", "trainer.resume_from_path", "trainer.resume_allow_changes",
    "trainer.dump_rollouts_freq", "trainer.num_threads", "trainer.dist_timeout_s", "trainer.deterministic",
    "data.val_files", "data.val_batch_size", "data.val_max_samples", "rollout.val_kwargs", "rollout.max_batch_size",
    "rollout.workers", "rollout.ray_address", "rollout.worker_cpus", "rollout.worker_gpus", "rollout.worker_restarts",
    "rollout.worker_timeout_s", "rollout.gpu_memory_utilization", "model.device", "model.enable_gradient_checkpointing",
    "actor.ppo_micro_batch_size_per_gpu", "actor.use_dynamic_bsz", "actor.ppo_max_token_len_per_gpu",
    "actor.use_remove_padding", "actor.strategy", "sft",
)
"""Keys (or section prefixes) a resume may change: they leave the sampled rows and the update's maths as
they were (up to float round-off of a different batching or device)."""


def _covered(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p.rstrip(".") + ".") for p in prefixes)


def leaf_keys(cls: type, prefix: str = "") -> list[str]:
    """The dotted keys of the non-section fields of dataclass ``cls``."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out += leaf_keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


_MISSING = object()


def _lookup(data: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(data, Mapping) or part not in data:
            return _MISSING
        data = data[part]
    return data


def trajectory_changes(saved: Mapping, cfg: Any, allowed: Iterable[str] = ()) -> list[tuple[str, Any, Any]]:
    """``(key, saved value, new value)`` for every key whose value differs between the saved config (a
    plain mapping, as read from ``config.yaml``) and ``cfg`` (a Config), except the keys covered by
    :data:`RESUME_SAFE_KEYS` or ``allowed``; in the Config's declaration order."""
    current = to_dict(cfg)
    out = []
    for key in leaf_keys(type(cfg)):
        if _covered(key, RESUME_SAFE_KEYS) or _covered(key, allowed):
            continue
        old, new = _lookup(saved, key), _lookup(current, key)
        if old is _MISSING:
            continue
        if to_dict(old) != new:
            out.append((key, old, new))
    return out


def _short(value: Any) -> str:
    text = yaml.safe_dump(to_dict(value), default_flow_style=True, width=10**6).strip().removesuffix("...").strip()
    return text if len(text) <= 60 else text[:57] + "..."


def check_resume_config(saved_path: str | Path, cfg: Any, step: int | None = None) -> None:
    """Raise :class:`ConfigError` when resuming the run whose resolved config is ``saved_path`` with ``cfg``
    would change the trajectory (see the module docstring); the message lists each key, its saved and its
    new value, and the three fixes. A missing or unreadable ``saved_path`` is not checked."""
    try:
        saved = yaml.safe_load(Path(saved_path).read_text())
    except (OSError, yaml.YAMLError):
        return
    if not isinstance(saved, Mapping):
        return
    changes = trajectory_changes(saved, cfg, cfg.trainer.resume_allow_changes)
    if not changes:
        return
    listed = ", ".join(f"{k}: {_short(old)} -> {_short(new)}" for k, old, new in changes)
    keys = ",".join(k for k, _, _ in changes)
    where = f" at step {step}" if step is not None else ""
    raise ConfigError(
        f"resuming {str(Path(saved_path).parent)!r}{where} with settings that change the training trajectory "
        f"({listed}); fix: drop those overrides to continue the run as it was, start a new run "
        f"(trainer.experiment_name=... or trainer.resume_mode=disable), or accept the change with "
        f"trainer.resume_allow_changes=[{keys}]")
