"""Config: defaults, YAML + overrides, coercion, errors that name the key and the fix, round trip."""

from __future__ import annotations

import dataclasses
import inspect
import typing

import pytest

import appo.config as C
from appo.config import Config, ConfigError, load_config, save_config
from appo.config.typed_yaml import all_keys, field_docstrings


def test_defaults_follow_the_paper_and_are_resolved():
    cfg = load_config()
    assert (cfg.rollout.n, cfg.rollout.n_initial) == (16, 8)
    assert (cfg.actor.clip_ratio_low, cfg.actor.clip_ratio_high, cfg.actor.clip_ratio_c) == (0.2, 0.28, 3.0)
    assert cfg.actor.loss_agg_mode == "token-mean" and cfg.actor.kl_loss_type == "low_var_kl"
    assert cfg.algorithm.appo.anchor == "previous" and cfg.algorithm.appo.omega_clip_eps == 0.2
    assert cfg.algorithm.adv_estimator == "appo"  # derived from algorithm.name
    assert cfg.trainer.default_local_dir == "runs/default"  # derived from experiment_name
    assert cfg.model.dtype == "float32"


def test_overrides_are_yaml_parsed_and_coerced():
    cfg = load_config(None, [
        "actor.optim.lr=1e-5",  # YAML 1.1 reads this as a string: coerced to float
        "actor.optim.betas=[0.9, 0.95]",
        "data.train_files=proc:arith",  # a scalar becomes a one-element list
        "trainer.logger=[console, tensorboard]",
        "model.tokenizer_path=null",
        "trainer.max_actor_ckpt_to_keep=2",
        "rollout.val_kwargs={n: 4, temperature: 0.6}",
        "actor.ppo_epochs=2.0",  # whole float -> int
        "trainer.experiment_name=2024",  # number -> str
        "algorithm.name=grpo",
        "rollout.n_initial=16",  # allowed for grpo
        "model.target_modules=[q_proj, v_proj]",
        "tools=[python, {name: search, top_k: 3}]",
        "reward.kwargs.alpha=0.5",
    ])
    assert cfg.actor.optim.lr == 1e-5 and isinstance(cfg.actor.optim.lr, float)
    assert cfg.actor.optim.betas == (0.9, 0.95)
    assert cfg.data.train_files == ("proc:arith",)
    assert cfg.trainer.logger == ("console", "tensorboard")
    assert cfg.trainer.max_actor_ckpt_to_keep == 2
    assert cfg.rollout.val_kwargs.n == 4 and cfg.rollout.val_kwargs.temperature == 0.6
    assert cfg.rollout.val_kwargs.top_p == 1.0  # untouched keys of a set section keep their defaults
    assert cfg.actor.ppo_epochs == 2 and isinstance(cfg.actor.ppo_epochs, int)
    assert cfg.trainer.experiment_name == "2024" and cfg.trainer.default_local_dir == "runs/2024"
    assert cfg.algorithm.adv_estimator == "grpo"
    assert cfg.model.target_modules == ("q_proj", "v_proj")
    assert cfg.tools == ("python", {"name": "search", "top_k": 3})
    assert cfg.reward.kwargs == {"alpha": 0.5}


def test_verl_prefix_is_accepted(tmp_path):
    cfg = load_config(None, ["actor_rollout_ref.actor.optim.lr=2e-6", "actor_rollout_ref.rollout.n=12"])
    assert cfg.actor.optim.lr == 2e-6 and cfg.rollout.n == 12
    p = tmp_path / "verl.yaml"
    p.write_text("actor_rollout_ref:\n  model:\n    lora_rank: 8\n  rollout:\n    temperature: 0.7\n")
    cfg = load_config(p)
    assert cfg.model.lora_rank == 8 and cfg.rollout.temperature == 0.7


@pytest.mark.parametrize("override, expected", [
    ("actor.optim.lrr=1e-5", "'actor.optim.lr'"),
    ("actor.optim.learning_rate=1e-5", "'actor.optim.lr'"),  # a TRL name
    ("lr=1e-5", "'actor.optim.lr'"),  # right leaf, wrong section
    ("optim.lr=1e-5", "'actor.optim'"),
    ("rollout.temprature=0.5", "'rollout.temperature'"),
    ("num_generations=8", "'rollout.n'"),
])
def test_unknown_key_names_the_nearest_valid_key(override, expected):
    with pytest.raises(ConfigError, match="unknown config key") as e:
        load_config(None, [override])
    assert expected in str(e.value)


@pytest.mark.parametrize("override, expected", [
    ("rollout.n=many", "rollout.n='many': expected int"),
    ("rollout.n=2.5", "rollout.n=2.5: expected int"),
    ("model.dtype=bf16", "did you mean 'bfloat16'"),
    ("actor.use_kl_loss=1", "actor.use_kl_loss=1: expected bool"),
    ("actor.optim.betas=[0.9]", "expected a list of 2 values"),
    ("trainer.logger=[console, mlflow]", "trainer.logger[1]='mlflow'"),
    ("rollout.val_kwargs=3", "rollout.val_kwargs must be a mapping"),
    ("actor.optim.lr=fast", "expected float"),
    ("model.path=[a, b]", "model.path=['a', 'b']: expected str"),
    ("rollout=4", "rollout must be a mapping"),
])
def test_type_errors_name_key_value_and_type(override, expected):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert expected in str(e.value)


@pytest.mark.parametrize("overrides, expected", [
    (["rollout.n_initial=16"], "fix: rollout.n_initial=8"),
    (["algorithm.name=arpo", "rollout.n=4", "rollout.n_initial=4"], "rollout.n_initial=4 must be < rollout.n=4"),
    (["actor.ppo_mini_batch_size=3"], "fix: actor.ppo_mini_batch_size=8"),
    (["rollout.top_p=0"], "rollout.top_p=0.0 must be in (0, 1]"),
    (["rollout.temperature=0"], "must be > 0"),
    (["actor.clip_ratio_c=1"], "dual-clip"),
    (["model.device=tpu"], "model.device='tpu'"),
    (["trainer.resume_mode=resume_path"], "trainer.resume_from_path"),
    (["data.train_batch_size=0"], "data.train_batch_size=0 must be >= 1"),
    (["bad-override"], "key.sub=value"),
])
def test_cross_field_rules(overrides, expected):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert expected in str(e.value)


def test_cuda_without_cuda_names_the_fix(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="fix: model.device=cpu"):
        load_config(None, ["model.device=cuda"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert load_config(None, ["model.device=cuda:1"]).model.device == "cuda:1"


def test_yaml_with_defaults_inheritance_and_overrides_on_top(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "actor:\n  optim:\n    lr: 3.0e-6\n    weight_decay: 0.0\nrollout:\n  n: 8\n  n_initial: 4\n")
    (tmp_path / "child.yaml").write_text("defaults: base.yaml\nactor:\n  optim:\n    lr: 5.0e-6\n")
    cfg = load_config(tmp_path / "child.yaml", ["rollout.n=10"])
    assert cfg.actor.optim.lr == 5e-6  # the file wins over its base
    assert cfg.actor.optim.weight_decay == 0.0  # inherited
    assert (cfg.rollout.n, cfg.rollout.n_initial) == (10, 4)  # the override wins over both
    (tmp_path / "loop.yaml").write_text("defaults: [loop.yaml]\n")
    with pytest.raises(ConfigError, match="inherits from itself"):
        load_config(tmp_path / "loop.yaml")
    with pytest.raises(C.ConfigNotFoundError, match="missing.yaml' not found: pass a YAML file that exists"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(C.ConfigNotFoundError, match="not found.*demo"):  # a name that is no shipped config
        load_config("demo_typo")
    assert load_config("demo") == load_config(C.load.resolve_config("demo"))  # shipped configs by name
    (tmp_path / "typo.yaml").write_text("trainer:\n  save_frq: 5\n")
    with pytest.raises(ConfigError, match="did you mean 'trainer.save_freq'"):
        load_config(tmp_path / "typo.yaml")


def test_save_and_load_round_trip(tmp_path):
    cfg = load_config(None, ["actor.optim.lr=1e-5", "tools=[python, {name: search, k: 3}]", "data.val_files=[a, b]",
                             "model.target_modules=[q_proj]", "rollout.system_prompt='You are: helpful'"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(path)
    assert again == cfg
    assert save_config(again, tmp_path / "again.yaml").read_text() == path.read_text()


def test_every_field_has_a_docstring_and_the_reference_lists_every_key():
    classes, todo = [], [Config]  # every section reachable from Config, the algorithms' own included
    while todo:
        cls = todo.pop()
        classes.append(cls)
        todo += [t for t in typing.get_type_hints(cls).values() if dataclasses.is_dataclass(t)]
    assert len(classes) >= 14 and C.AppoConfig in classes
    for cls in classes:
        docs = field_docstrings(inspect.getsourcefile(cls))
        missing = [f.name for f in dataclasses.fields(cls) if not docs.get(cls.__name__, {}).get(f.name)]
        assert not missing, f"{cls.__name__} fields without a docstring: {missing}"
    md = C.config_reference_markdown()
    keys = all_keys(Config)
    for key in keys:
        if not any(k.startswith(key + ".") for k in keys):  # a leaf, not a section
            assert f"| `{key}` |" in md, key
    assert "| `actor.optim.lr` | float | `1.0e-06` | Peak learning rate. |" in md


def test_config_is_frozen():
    cfg = load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.rollout.n = 3  # type: ignore[misc]
    assert typing.get_type_hints(type(cfg))["rollout"] is C.RolloutConfig
