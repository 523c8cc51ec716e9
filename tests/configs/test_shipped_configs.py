"""The configs shipped inside the package: found by name, parsed, and refused with one line otherwise."""

import pytest

from appo.config import load_config
from appo.presets import ConfigNotFoundError, resolve_config, shipped_config_names, shipped_config_path


def test_every_shipped_config_loads_by_name():
    names = shipped_config_names()
    assert {"demo", "smollm2_135m", "paper_7b", "study"} <= set(names)
    for name in names:
        gpu_only = ["model.device=cpu"] if name == "paper_7b" else []  # validation refuses cuda without CUDA
        assert load_config(resolve_config(name), gpu_only) is not None
        assert resolve_config(f"{name}.yaml") == shipped_config_path(name)
        assert resolve_config(f"configs/{name}.yaml") == shipped_config_path(name)  # the old checkout path
        assert resolve_config(f"appo/configs/{name}.yaml") == shipped_config_path(name)  # before appo/presets


def test_a_file_wins_and_unknown_names_get_one_line(tmp_path):
    own = tmp_path / "demo.yaml"
    own.write_text("trainer:\n  total_training_steps: 3\n")
    assert resolve_config(own) == own
    assert resolve_config(None) is None
    with pytest.raises(ConfigNotFoundError) as err:
        resolve_config("dmeo")
    msg = str(err.value)
    assert "'dmeo'" in msg and "demo" in msg and "\n" not in msg
    with pytest.raises(ConfigNotFoundError):
        resolve_config(tmp_path / "missing.yaml")
