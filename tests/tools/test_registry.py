"""``build_tools``: the specs a trainer config can hold become tools, and bad specs say what to fix."""

from __future__ import annotations

import json
import textwrap

import pytest

from appo.tools import registry
from appo.tools.functions import FunctionTool
from appo.tools.python_sandbox import PythonTool
from appo.tools.registry import build_tools, load_function, register_tool_builder
from appo.tools.search import SearchTool
from appo.tools.search_bm25 import BM25Backend
from appo.tools.search_cache import CachedSearchBackend
from appo.tools.search_http import HTTPRetrieverBackend

USER_TOOLS = '''
def word_count(text: str) -> int:
    """Count the words of a text.

    Args:
        text: The text.
    """
    return len(text.split())


def shout(text: str) -> str:
    """Upper-case a text.

    Args:
        text: The text.
    """
    return text.upper()
'''


@pytest.fixture()
def user_file(tmp_path):
    path = tmp_path / "my_tools.py"
    path.write_text(USER_TOOLS)
    return path


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"id": "1", "title": "Paris", "text": "Paris is the capital of France."}) + "\n")
    return path


def test_names():
    python, search = build_tools(["python", "search"])
    assert isinstance(python, PythonTool) and isinstance(search, SearchTool)
    assert isinstance(search.backend, CachedSearchBackend)
    assert build_tools("python")[0].name == "python" and build_tools(None) == []


def test_dict_forms(corpus, tmp_path):
    (a,) = build_tools([{"name": "search", "backend": "bm25", "corpus": str(corpus), "top_k": 2}])
    (b,) = build_tools([{"search": {"backend": "bm25", "corpus": str(corpus), "index_dir": str(tmp_path / "ix")}}])
    assert isinstance(a.backend, BM25Backend) and a.top_k == 2 and b.backend.index_dir == tmp_path / "ix"
    assert a.call({"query": "capital of France"}).text.startswith("Doc 1 (Title: Paris)")
    tools = build_tools({"python": {"timeout_s": 5, "preimports": ["math"], "env": {"X": "1"}},
                         "search": {"backend": "http", "url": "http://127.0.0.1:9/retrieve", "timeout_s": 1}})
    assert tools[0].config.timeout_s == 5 and tools[0].config.preimports == ("math",)
    assert tools[0].config.env == (("X", "1"),)
    assert isinstance(tools[1].backend, HTTPRetrieverBackend) and tools[1].backend.timeout_s == 1


def test_user_functions_from_files_and_modules(user_file, tmp_path, monkeypatch):
    count, loud = build_tools([f"{user_file}:word_count", {"name": f"{user_file}:shout", "tool_name": "yell",
                                                            "timeout_s": 2}])
    assert isinstance(count, FunctionTool) and count.name == "word_count"
    assert count.call({"text": "a b c"}).text == "3"
    assert loud.name == "yell" and loud.timeout_s == 2 and loud.call({"text": "hi"}).text == "HI"
    pkg = tmp_path / "pkg_for_tools"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text(USER_TOOLS)
    monkeypatch.syspath_prepend(str(tmp_path))
    (t,) = build_tools(["pkg_for_tools.mod:shout"])
    assert t.call({"text": "x"}).text == "X"


def test_tool_instances_and_callables_pass_through():
    def double(x: int) -> int:
        """Double.

        Args:
            x: A number.
        """
        return 2 * x

    ready = FunctionTool(double, name="twice")
    a, b = build_tools([ready, double])
    assert a is ready and isinstance(b, FunctionTool) and b.name == "double"


@pytest.mark.parametrize("spec,message", [
    ("calculator", "unknown tool 'calculator'; registered: python, search"),
    ({"python": {"timeout": 5}}, "unknown option 'timeout' for the python tool; valid options:"),
    ({"name": "search", "backend": "google"}, "unknown search backend 'google'"),
    ({"name": "search", "backend": "bm25"}, "needs corpus="),
    ({"name": "search", "backend": "cache", "corpus": "x"},
     "unknown option 'corpus' for the search tool with backend 'cache'"),
    (["python", "python"], "two tools are named 'python'"),
    ("missing_file.py:f", "does not exist"),
    (":f", "must look like"),
    ({"a": 1, "b": 2, "name": None}, "has no name"),
    ({"python": 5}, "must be a mapping"),
    (42, "must be a name, a dict"),
])
def test_bad_specs_raise_with_the_fix(spec, message):
    with pytest.raises((ValueError, TypeError, FileNotFoundError), match=message.replace("(", r"\(")):
        build_tools(spec)


def test_missing_attribute(user_file):
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        load_function(f"{user_file}:nope")


def test_register_tool_builder_refuses_duplicates(monkeypatch):
    monkeypatch.setattr(registry, "TOOL_BUILDERS", dict(registry.TOOL_BUILDERS))
    with pytest.raises(ValueError, match="already registered"):
        register_tool_builder("python")(lambda **kw: None)

    @register_tool_builder("echo")
    def build_echo(prefix: str = ""):
        def echo(text: str) -> str:
            """Echo.

            Args:
                text: Text.
            """
            return prefix + text

        return FunctionTool(echo)

    (t,) = build_tools([{"echo": {"prefix": "> "}}])
    assert t.call({"text": "hi"}).text == "> hi"


def test_user_tool_file_can_use_the_decorator(tmp_path):
    path = tmp_path / "decorated.py"
    path.write_text(textwrap.dedent('''
        from appo.tools import tool

        @tool(timeout_s=3)
        def add(a: int, b: int) -> int:
            """Add two numbers.

            Args:
                a: First.
                b: Second.
            """
            return a + b
    '''))
    (t,) = build_tools([f"{path}:add"])
    assert t.timeout_s == 3 and t.call({"a": 2, "b": 3}).text == "5"
    assert t.call({"a": '{"a": 1, "b": 1}'}).text == "2"  # tag body as a JSON object
