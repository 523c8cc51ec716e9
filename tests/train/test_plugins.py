"""An algorithm and an engine from outside the package: one file each, named in the config, trained through
``appo train`` (a subprocess, as a user runs it); and the registries' errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from run_helpers import tiny_base, tiny_config

from appo.algorithms import ALGORITHMS, Algorithm, get_algorithm, register_algorithm
from appo.config import ConfigError, load_config, save_config
from appo.engine.registry import ENGINES, get_engine_spec

REPO = Path(__file__).resolve().parents[2]

PLUGIN = textwrap.dedent('''
    """A fifth algorithm (RLOO: leave-one-out baseline) with its own rollout strategy, and an engine, outside
    appo: the strategy's options are declared once (RlooOptions) and reach both the strategy and the estimator."""
    from dataclasses import dataclass, replace
    from pathlib import Path

    import torch

    from appo.agent import StrategyConfig, get_strategy, register_strategy
    from appo.algorithms import Algorithm
    from appo.core import register_advantage
    from appo.engine.registry import EngineSpec, build_hf


    @dataclass(frozen=True)
    class RlooOptions:
        scale: float = 1.0


    @register_strategy("test_rloo", options=RlooOptions)
    def rloo_rollout(ctx, prompts, cfg):
        out = get_strategy("independent")(ctx, prompts, StrategyConfig(cfg.n_total, cfg.n_initial))
        return replace(out, metrics={**out.metrics, "test_rloo/strategy_scale": cfg.options.scale})


    @register_advantage("test_rloo")
    def rloo(inputs, *, scale=1.0, norm_by_std=True):
        r, g = inputs.rewards_N, inputs.group_N
        adv = torch.zeros_like(r)
        for k in g.unique():
            m = g == k
            n = int(m.sum())
            adv[m] = scale * (r[m] - (r[m].sum() - r[m]) / max(n - 1, 1))
        adv_NT = adv[:, None] * inputs.mask_NT
        return adv_NT, {"rloo_scale": float(scale)}


    class RLOO(Algorithm):
        name = "rloo"
        strategy = "test_rloo"
        estimator = "test_rloo"
        options_type = RlooOptions

        def advantage_options(self, cfg):
            return {"scale": self.options(cfg).scale}


    def _build(model, tokenizer, cfg):
        Path(cfg.trainer.default_local_dir, "plugin_engine.txt").write_text(type(model).__name__)
        return build_hf(model, tokenizer, cfg)


    MARKED_HF = EngineSpec("marked_hf", _build, ray_workers=True)
''')


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_base(tmp_path_factory.mktemp("base"))


def test_a_fifth_algorithm_and_an_engine_from_outside_train_one_step(base, tmp_path):
    (tmp_path / "my_rloo.py").write_text(PLUGIN)
    run_dir = tmp_path / "run"
    cfg_path = save_config(tiny_config(base, run_dir), tmp_path / "base.yaml")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "appo", "train", "-c", str(cfg_path), "algorithm.name=my_rloo:RLOO",
         "algorithm.adv_estimator=null", "algorithm.options={scale: 2.5}", "rollout.name=my_rloo:MARKED_HF",
         "trainer.total_training_steps=1", "trainer.save_freq=-1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (run_dir / "config.yaml").read_text()
    assert "name: my_rloo:RLOO" in text and "adv_estimator: test_rloo" in text and "scale: 2.5" in text
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    step = [m for m in metrics if m.get("step") == 1][-1]
    assert step["critic/rloo_scale"] == 2.5  # the plugin's estimator ran, with its typed option
    assert step["test_rloo/strategy_scale"] == 2.5  # and its strategy, with the same options
    assert (run_dir / "plugin_engine.txt").read_text()  # the plugin's engine built the rollouts' engine
    rows = json.loads((run_dir / "rollouts" / "step_000001.json").read_text())
    assert rows["algorithm"] == "my_rloo:RLOO"


def test_algorithm_options_are_typed_and_bad_plugins_fail_in_one_line(tmp_path, monkeypatch):
    (tmp_path / "my_rloo2.py").write_text(PLUGIN.replace("test_rloo", "test_rloo2"))
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = load_config(None, ["algorithm.name=my_rloo2:RLOO", "algorithm.options={scale: '3'}"])
    algo = get_algorithm(cfg.algorithm.name)
    assert cfg.algorithm.adv_estimator == "test_rloo2" and algo.options(cfg).scale == 3.0
    with pytest.raises(ConfigError, match="unknown config key 'algorithm.options.scal'.*scale"):
        load_config(None, ["algorithm.name=my_rloo2:RLOO", "algorithm.options={scal: 1}"])
    with pytest.raises(ConfigError, match="takes no options"):
        load_config(None, ["algorithm.name=grpo", "algorithm.options={x: 1}"])
    with pytest.raises(ConfigError, match="cannot import 'no_such_module'"):
        load_config(None, ["algorithm.name=no_such_module:X"])
    with pytest.raises(ConfigError, match="defines no 'Nope'"):
        load_config(None, ["algorithm.name=my_rloo2:Nope"])
    with pytest.raises(ConfigError, match="has no EngineSpec named 'RLOO'"):
        load_config(None, ["rollout.name=my_rloo2:RLOO"])
    assert get_engine_spec("my_rloo2:MARKED_HF").name == "marked_hf" and "marked_hf" not in ENGINES


def test_register_algorithm_in_process_and_the_built_in_rules():
    class Half(Algorithm):
        name = "test_half"
        branches = True

    try:
        register_algorithm(Half)
        assert get_algorithm("test_half").strategy == "independent"
        with pytest.raises(ValueError, match="already registered"):
            register_algorithm(Half)
        with pytest.raises(ConfigError, match="rollout.n_initial=4 must be < rollout.n=4 for algorithm.name=test_half"):
            load_config(None, ["algorithm.name=test_half", "rollout.n=4", "rollout.n_initial=4"])
    finally:
        ALGORITHMS.pop("test_half", None)
    assert sorted(ALGORITHMS) == ["appo", "arpo", "grpo", "tree_grpo"]
    cfg = load_config(None, ["algorithm.name=grpo", "rollout.n=4", "rollout.n_initial=4"])  # grpo: no branches
    assert get_algorithm("grpo").strategy_config(cfg).n_initial == 4
    assert get_algorithm("appo").omega_anchor(cfg) == "previous" and get_algorithm("grpo").omega_anchor(cfg) is None
