"""Functional tests of the ``python`` tool: what the agent sees for ordinary programs."""

from __future__ import annotations

import glob
import os
import tempfile
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tools_helpers import needs_isolation

from appo.tools.python_sandbox import PythonTool
from appo.tools.sandbox_config import CappedBuffer, SandboxConfig
from appo.types import ToolResult

pytestmark = needs_isolation


@pytest.fixture(scope="module")
def py():
    return PythonTool(timeout_s=5, max_workers=8)


def run(tool: PythonTool, code: str) -> ToolResult:
    return tool.call({"code": code})


def test_prints_stdout(py):
    r = run(py, "print('hello')\nprint(1 + 2)")
    assert r.ok and r.error is None
    assert r.text == "hello\n3"


def test_trailing_expression_value_is_printed_like_a_notebook(py):
    results = py.call_batch([
        {"code": "x = 3\nx * 2"},
        {"code": "'a' + 'b'"},
        {"code": "print(1)\n[1, 2]"},
        {"code": "None"},
        {"code": "1\nx = 2"},  # not the last statement: not printed
        {"code": "import math\nmath.pi"},
        {"code": "def f():\n    return 5\nf()"},
    ])
    assert [r.text for r in results] == ["6", "'ab'", "1\n[1, 2]", "(no output)", "(no output)",
                                         "3.141592653589793", "5"]
    assert all(r.ok for r in results)


def test_syntax_error_gives_a_readable_traceback(py):
    r = run(py, "x = 1\ny = (x +\nprint(y)")
    assert not r.ok and r.error == "syntax"
    assert 'File "<code>", line 2' in r.text
    assert "SyntaxError" in r.text
    assert "_sandbox_runner" not in r.text


def test_exception_traceback_shows_only_the_models_frames(py):
    r = run(py, "def f(x):\n    return 1 / x\nprint('before')\nf(0)")
    assert not r.ok and r.error == "exception"
    assert r.text.startswith("before\nTraceback (most recent call last):")
    assert 'File "<code>", line 4, in <module>' in r.text and 'File "<code>", line 2, in f' in r.text
    assert r.text.rstrip().endswith("ZeroDivisionError: division by zero")
    assert "_sandbox_runner" not in r.text


def test_timeout_keeps_partial_output_and_says_so():
    tool = PythonTool(timeout_s=1.5)
    t0 = time.monotonic()
    r = run(tool, "import time\nprint('started')\ntime.sleep(60)")
    elapsed = time.monotonic() - t0
    assert not r.ok and r.error == "timeout"
    assert r.text.startswith("started\n")
    assert "TimeoutError" in r.text and "1.5 s" in r.text
    assert elapsed < 1.5 + 2.5


def test_calls_run_concurrently_from_a_bounded_pool():
    tool = PythonTool(timeout_s=10, max_workers=4)
    t0 = time.monotonic()
    results = tool.call_batch([{"code": f"import time\ntime.sleep(1.5)\n{i}"} for i in range(4)])
    elapsed = time.monotonic() - t0
    assert [r.text for r in results] == ["0", "1", "2", "3"]
    assert elapsed < 4.5, f"4 x 1.5 s sleeps took {elapsed:.2f} s: not run in parallel"


def _sandbox_dirs() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "appo-sbx-*")))


def test_temporary_directories_are_removed(monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # a private temp root: other runs' dirs stay out
    before = _sandbox_dirs()
    assert before == set()
    tool = PythonTool(timeout_s=1)
    results = tool.call_batch([
        {"code": "open('a.txt', 'w').write('x' * 1000)\nimport os\nos.makedirs('d/e')\nos.chmod('d', 0)"},
        {"code": "import time\nopen('b', 'w').write('y')\ntime.sleep(30)"},  # timed out
        {"code": "raise ValueError('boom')"},
    ])
    assert [r.error for r in results] == [None, "timeout", "exception"], results
    assert _sandbox_dirs() == set()


def test_each_call_starts_fresh(py):
    first = run(py, "open('state.txt', 'w').write('1')\nimport os\nsorted(os.listdir('.'))")
    second = run(py, "import os\nsorted(os.listdir('.'))")
    assert first.text == "['state.txt']"
    assert second.text == "[]"


def test_stdout_then_stderr(py):
    r = run(py, "import sys\nprint('out')\nprint('warn', file=sys.stderr)")
    assert r.ok and r.text == "out\nwarn"


def test_exit_statuses(py):
    ok, bad, msg = py.call_batch([{"code": "import sys\nprint('x')\nsys.exit(0)"},
                                  {"code": "import sys\nsys.exit(3)"},
                                  {"code": "raise SystemExit('bye')"}])
    assert ok.ok and ok.text == "x"
    assert not bad.ok and bad.error == "exit_status" and "status 3" in bad.text
    assert not msg.ok and msg.text.startswith("bye")


def test_stdin_is_empty(py):
    r = run(py, "import sys\nprint(repr(sys.stdin.read()))\ninput()")
    assert r.text.startswith("''\n") and "EOFError" in r.text


def test_unicode_round_trips(py):
    r = run(py, "print('héllo ✓ 数学 🙂')")
    assert r.text == "héllo ✓ 数学 🙂"


def test_long_output_keeps_head_and_tail():
    tool = PythonTool(max_output_chars=300)
    r = run(tool, "print('START')\nprint('x' * 100000)\nprint('END')")
    assert r.ok
    assert r.text.startswith("START") and r.text.endswith("END")
    assert "omitted" in r.text
    assert len(r.text) < 400


def test_site_packages_are_importable(py):
    pytest.importorskip("numpy")
    r = run(py, "import numpy as np\nint(np.arange(5).sum())")
    assert r.ok and r.text == "10", r.text


def test_preimports_run_before_the_code():
    tool = PythonTool(preimports=("fractions",))
    r = run(tool, "import sys\n'fractions' in sys.modules")
    assert r.text == "True"


def test_bad_arguments_are_error_results(py):
    for args in ({}, {"code": None}, {"code": 5}, {"source": "print(1)"}, {"code": "x" * 200_000}):
        r = py.call(args)
        assert isinstance(r, ToolResult) and not r.ok and r.error == "bad_arguments"


def test_schema_and_tag_argument(py):
    schema = py.schema()
    assert schema["function"]["name"] == "python"
    assert schema["function"]["parameters"]["required"] == ["code"]
    assert py.tag_argument == "code"
    assert py.isolation in ("namespaces", "userns")
    assert py.isolation_report().startswith("python sandbox: level ")


def test_capped_buffer_bounds_memory_and_keeps_both_ends():
    buf = CappedBuffer(cap=10)
    buf.feed(b"0123456789abcdef")
    for _ in range(1000):
        buf.feed(b"." * 1000)
    buf.feed(b"THE-END")
    assert len(buf.head) == 10 and len(buf.tail) == 10
    assert buf.total == 16 + 1000 * 1000 + 7
    text = buf.text(8)
    assert text.startswith("01234") and text.endswith("END") and "omitted" in text


def test_capped_buffer_short_output_is_exact():
    buf = CappedBuffer(cap=100)
    buf.feed("héllo\x00\x1b[31m".encode())
    assert buf.text(100) == "héllo\ufffd\ufffd[31m"


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="timeout_s"):
        SandboxConfig(timeout_s=0)
    with pytest.raises(ValueError, match="isolation"):
        SandboxConfig(isolation="docker")


_FUZZ_TOOL = PythonTool(timeout_s=3)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(max_size=8), _json_values, max_size=4))
def test_fuzzed_arguments_never_raise(arguments):
    arguments.pop("code", None)
    r = _FUZZ_TOOL.call(arguments)
    assert isinstance(r, ToolResult) and not r.ok and r.error == "bad_arguments"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_fuzzed_code_never_raises_and_text_is_clean(code):
    r = _FUZZ_TOOL.call({"code": code})
    assert isinstance(r, ToolResult) and isinstance(r.text, str) and r.text
    r.text.encode("utf-8")  # no lone surrogates
    assert "\x00" not in r.text
    assert r.error in (None, "syntax", "exception", "exit_status", "timeout", "memory", "crash"), r
