"""One plugin syntax everywhere (``package.module:NAME`` and ``path/to/file.py:NAME``), one error type, one
duplicate-name guard (:mod:`appo.plugins`)."""

from __future__ import annotations

import pytest

from appo.algorithms import Algorithm, get_algorithm
from appo.engine.registry import EngineSpec, get_engine_spec
from appo.plugins import PluginError, load_plugin, register_unique
from appo.rewards import get_reward
from appo.tools.registry import build_tools

PLUGIN = '''
from appo.algorithms import Algorithm
from appo.engine.registry import EngineSpec, build_hf
from appo.rewards.base import RewardOutput


class Mine(Algorithm):
    name = "test_mine"


SPEC = EngineSpec("test_spec", build_hf)


def reward(examples, responses):
    return [RewardOutput(float(len(r))) for r in responses]


def shout(text: str) -> str:
    """Upper-case the text.

    Args:
        text: what to shout
    """
    return text.upper()
'''


@pytest.fixture()
def plugin(tmp_path, monkeypatch):
    (tmp_path / "my_plugin_mod.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path / "my_plugin_mod.py"


@pytest.mark.parametrize("form", ["module", "file"])
def test_every_registry_takes_both_forms(plugin, form):
    target = "my_plugin_mod" if form == "module" else str(plugin)
    assert isinstance(get_algorithm(f"{target}:Mine"), Algorithm)
    assert isinstance(get_engine_spec(f"{target}:SPEC"), EngineSpec)
    assert get_reward(f"{target}:reward")([None], ["abc"])[0].score == 3.0
    (tool,) = build_tools([f"{target}:shout"])
    assert tool.name == "shout"
    tool.close()


@pytest.mark.parametrize("spec, match", [
    ("no_colon", "is not 'path/to/file.py:NAME' or 'package.module:NAME'"),
    ("no_such_module_xyz:f", "cannot import 'no_such_module_xyz'"),
    ("/no/such/file.py:f", "not found: it does not exist"),
    ("my_plugin_mod:nope", "defines no 'nope'"),
    ("my_plugin_mod:SPEC", "is not callable"),
])
def test_one_error_type_one_line(plugin, spec, match):
    with pytest.raises(PluginError, match=match) as info:
        load_plugin(spec)
    assert "\n" not in str(info.value) and str(info.value).startswith(f"plugin {spec!r}")


def test_wrong_kind_and_duplicate_names():
    with pytest.raises(PluginError, match="has no Algorithm named 'EngineSpec'"):
        load_plugin("appo.engine.registry:EngineSpec", Algorithm, instantiate=False)
    table: dict = {}
    register_unique(table, "a", 1, "thing")
    with pytest.raises(PluginError, match="thing 'a' is already registered"):
        register_unique(table, "a", 2, "thing")
    assert table == {"a": 1}
