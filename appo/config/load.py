"""Loading a run config by file or shipped name, with dotted overrides; saving it; its reference.

Loading is strict (machinery in :mod:`appo.config.typed_yaml`): unknown keys raise an error naming the
nearest valid key, values are type-checked and coerced against the field annotations, and the cross-field
rules of :mod:`appo.config.validate` are checked at the end. Interpolation (``${...}``) is left out: two
derived values (``algorithm.adv_estimator``, ``trainer.default_local_dir``) are filled in by
:func:`load_config`, so the saved config is fully resolved.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import yaml

from appo.algorithms import Algorithm, get_algorithm
from appo.config.schema import Config
from appo.config.typed_yaml import ConfigError, apply_overrides, build, merge, read_yaml, reference_markdown, to_dict
from appo.config.validate import validate_config
from appo.presets import resolve_config

_VERL_PREFIXES = {"actor_rollout_ref.actor.": "actor.", "actor_rollout_ref.rollout.": "rollout.",
                  "actor_rollout_ref.model.": "model."}
# Names users bring from TRL / verl / HF Trainer, suggested when they appear as unknown keys (not accepted).
_FOREIGN_NAMES = {
    "learning_rate": "actor.optim.lr", "max_grad_norm": "actor.grad_clip", "num_generations": "rollout.n",
    "max_completion_length": "data.max_response_length", "max_steps": "trainer.total_training_steps",
    "warmup_steps": "actor.optim.lr_warmup_steps", "lr_scheduler": "actor.optim.lr_scheduler_type",
    "epsilon": "actor.clip_ratio_low", "epsilon_high": "actor.clip_ratio_high", "beta": "actor.kl_loss_coef",
    "output_dir": "trainer.default_local_dir", "report_to": "trainer.logger", "save_steps": "trainer.save_freq",
    "eval_steps": "trainer.test_freq", "lora_r": "model.lora_rank", "r": "model.lora_rank",
    "model_name_or_path": "model.path", "torch_dtype": "model.dtype", "bf16": "model.compute_dtype",
    "fp16": "model.compute_dtype", "top_k": "rollout.top_k",
    "resume": "trainer.resume_mode", "keep_checkpoints": "trainer.max_actor_ckpt_to_keep",
    "n_gpus_per_node": "appo takes the number of GPUs from the launcher: torchrun --nproc_per_node=N -m appo train "
                       "... (docs/scaling.md); for Ray rollout workers set rollout.workers and rollout.worker_gpus",
    "nnodes": "appo takes the number of nodes from the launcher (torchrun --nnodes=N) or the Ray cluster "
              "(rollout.ray_address); see docs/scaling.md",
}


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Build a :class:`Config`: defaults, then a YAML file (optional), then ``key.sub=value`` overrides.

    ``path`` is a YAML file or the name of a config shipped in the package (``demo``, ``smollm2_135m``,
    ...; :func:`appo.presets.resolve_config`), which raises :class:`appo.presets.ConfigNotFoundError`
    (a ``ValueError``, one line listing the names) when it is neither. The YAML file may name base files
    under ``defaults:`` (a path or a list, relative to the file); they are merged first, in order, and the
    file's own keys win. Override values are parsed as YAML
    (``actor.optim.lr=1e-5``, ``trainer.logger=[console,jsonl]``, ``model.tokenizer_path=null``) and
    coerced to the field type; a whole section can be set (``rollout.val_kwargs={n: 4}``). verl's
    ``actor_rollout_ref.{actor,rollout,model}`` prefix is accepted. Raises :class:`ConfigError` for
    unknown keys (naming the nearest valid key), type errors (key, value, expected type) and the
    cross-field rules of :func:`validate_config`.
    """
    path = resolve_config(path)
    raw: dict = _unverl(read_yaml(path)) if path is not None else {}
    apply_overrides(raw, overrides, rewrite=_VERL_PREFIXES)
    cfg = build(Config, raw, hints=_FOREIGN_NAMES)
    cfg, algorithm = _finalize(cfg)
    return validate_config(cfg, algorithm)


def config_to_dict(cfg: Any) -> Any:
    """Plain YAML/JSON-ready data (dicts, lists, scalars) for a config or any of its sections."""
    return to_dict(cfg)


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML (``load_config(path)`` gives it back); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True))
    return path


def config_reference_markdown() -> str:
    """Markdown reference of every config key (one table per section: key, type, default, meaning),
    generated from the field annotations, defaults and attribute docstrings of the schema (and of the
    algorithms' sections, read from their own modules)."""
    intro = ("Set keys in a YAML file or on the command line as `section.key=value` "
             "(e.g. `actor.optim.lr=1e-5`); verl's `actor_rollout_ref.` prefix is accepted.")
    return reference_markdown(Config, "Configuration reference", intro)


def _finalize(cfg: Config) -> tuple[Config, Algorithm]:
    """Fill the derived fields (``algorithm.adv_estimator``: the algorithm's own estimator;
    ``trainer.default_local_dir``) and coerce ``algorithm.options`` to the algorithm's ``options_type``;
    returns the config and the resolved algorithm."""
    try:
        algorithm = get_algorithm(cfg.algorithm.name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if cfg.algorithm.adv_estimator is None:
        cfg = dataclasses.replace(cfg, algorithm=dataclasses.replace(cfg.algorithm, adv_estimator=algorithm.estimator))
    if algorithm.options_type is not None:
        typed = build(algorithm.options_type, cfg.algorithm.options, "algorithm.options.")
        options = {f.name: getattr(typed, f.name) for f in dataclasses.fields(typed)}
        cfg = dataclasses.replace(cfg, algorithm=dataclasses.replace(cfg.algorithm, options=options))
    if cfg.trainer.default_local_dir is None:
        run_dir = str(Path("runs") / cfg.trainer.experiment_name)
        cfg = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, default_local_dir=run_dir))
    return cfg, algorithm


def _unverl(raw: dict) -> dict:
    """Move a verl-style ``actor_rollout_ref: {actor, rollout, model}`` section to the top level."""
    arr = raw.pop("actor_rollout_ref", None)
    if isinstance(arr, dict):
        for k, v in arr.items():
            if k not in ("actor", "rollout", "model"):
                raise ConfigError(f"unknown config key 'actor_rollout_ref.{k}'; appo reads actor, rollout and model")
            raw[k] = merge(raw[k] if isinstance(raw.get(k), dict) else {}, v) if isinstance(v, dict) else v
    return raw
