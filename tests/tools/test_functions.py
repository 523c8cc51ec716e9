"""User functions as tools: schema, argument validation for both protocols, results, failures."""

from __future__ import annotations

import time
from typing import Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appo.tools.functions import FunctionTool, tool, validate_arguments
from appo.types import ToolResult


@tool
def lookup_population(city: str, year: int = 2020, unit: Literal["people", "thousands"] = "people",
                      districts: list[str] | None = None) -> str:
    """Population of a city.

    Args:
        city: City name, e.g. "Paris".
        year: Census year.
        unit: Unit of the answer.
        districts: Only count these districts.
    """
    n = {"Paris": 2_100_000}.get(city, 1000) + (len(districts) if districts else 0)
    return f"{city} {year}: {n // 1000 if unit == 'thousands' else n}"


@tool(timeout_s=0.3)
def slow(seconds: float) -> str:
    """Sleep.

    Args:
        seconds: How long.
    """
    time.sleep(seconds)
    return "woke"


def square(x: int) -> int:
    """Square a number.

    Args:
        x: The number.
    """
    return x * x


def test_schema_from_type_hints_and_docstring():
    fn = lookup_population.schema()["function"]
    assert fn["name"] == "lookup_population" and fn["description"] == "Population of a city."
    props = fn["parameters"]["properties"]
    assert props["city"] == {"type": "string", "description": 'City name, e.g. "Paris".'}
    assert props["year"]["type"] == "integer" and props["unit"]["enum"] == ["people", "thousands"]
    assert props["districts"]["nullable"] is True
    assert fn["parameters"]["required"] == ["city"]
    assert lookup_population.tag_argument == "city"
    assert "return" not in fn


def test_decorated_function_is_still_callable():
    assert lookup_population("Paris", year=1999) == "Paris 1999: 2100000"


def test_hermes_arguments_are_validated():
    ok = lookup_population.call({"city": "Paris", "year": 2001.0, "unit": "thousands", "districts": ["a", "b"]})
    assert ok.ok and ok.text == "Paris 2001: 2100"
    cases = {
        "missing required argument 'city'": {"year": 3},
        "unexpected argument 'country'": {"city": "x", "country": "y"},
        "argument 'year' must be integer (got str": {"city": "x", "year": "1999x"},
        "argument 'year' must be integer (got bool": {"city": "x", "year": True},
        "argument 'year' must be integer (got float 2.5": {"city": "x", "year": 2.5},
        "argument 'unit' must be one of ['people', 'thousands']": {"city": "x", "unit": "km"},
        "argument 'districts'[1] must be string": {"city": "x", "districts": ["a", 2]},
        "arguments must be a JSON object": ["Paris"],
    }
    for message, args in cases.items():
        r = lookup_population.call(args)
        assert not r.ok and r.error == "bad_arguments" and message in r.text, (args, r.text)
    assert lookup_population.call({"city": "x", "districts": None}).ok


def test_tag_protocol_bodies():
    # The tag protocol passes the body as the tag argument.
    assert lookup_population.call({"city": "Paris"}).text == "Paris 2020: 2100000"
    whole = lookup_population.call({"city": '{"city": "Paris", "year": 1990, "unit": "thousands"}'})
    assert whole.text == "Paris 1990: 2100"
    not_args = lookup_population.call({"city": '{"name": "Paris"}'})  # keys are not arguments: a plain string
    assert not_args.ok and not_args.text.startswith('{"name": "Paris"} 2020')
    sq = FunctionTool.from_function(square)
    assert sq.tag_argument == "x"
    assert sq.call({"x": " 12 "}).text == "144"  # JSON-parsed for a non-string argument
    assert sq.call({"x": "twelve"}).error == "bad_arguments"


def test_return_values_become_text():
    def make(value):
        def f(x: int):
            """Return something.

            Args:
                x: Ignored.
            """
            return value

        return FunctionTool(f, max_output_chars=200)

    assert make(None).call({"x": 1}).text == "(no output)"
    assert make({"a": [1, "é"]}).call({"x": 1}).text == '{"a": [1, "é"]}'
    assert make(b"bytes\xff").call({"x": 1}).text == "bytes\ufffd"
    assert make(3.5).call({"x": 1}).text == "3.5"
    passed = make(ToolResult("custom failure", ok=False, error="mine")).call({"x": 1})
    assert passed == ToolResult("custom failure", ok=False, error="mine")
    long = make("A" + "x" * 10_000 + "Z").call({"x": 1}).text
    assert len(long) < 260 and long.startswith("A") and long.endswith("Z") and "omitted" in long
    assert "\x00" not in make("a\x00b").call({"x": 1}).text


def test_exceptions_and_timeouts_are_error_results():
    def boom(x: int) -> int:
        """Fail.

        Args:
            x: Divisor.
        """
        return 1 // x

    r = FunctionTool(boom).call({"x": 0})
    assert not r.ok and r.error == "exception"
    assert r.text == "Error: ZeroDivisionError: integer division or modulo by zero"

    def exits(x: int) -> int:
        """Exit.

        Args:
            x: Status.
        """
        raise SystemExit(x)

    assert FunctionTool(exits).call({"x": 3}).error == "exception"

    def own_timeout(x: int) -> int:
        """Raise TimeoutError itself.

        Args:
            x: Ignored.
        """
        raise TimeoutError("upstream slow")

    mine = FunctionTool(own_timeout).call({"x": 1})
    assert mine.error == "exception" and "upstream slow" in mine.text

    t0 = time.monotonic()
    r = slow.call({"seconds": 5})
    assert not r.ok and r.error == "timeout" and "0.3 s" in r.text
    assert time.monotonic() - t0 < 1.5
    assert slow.call({"seconds": 0}).text == "woke"

    class BadStr:
        def __str__(self):
            raise RuntimeError("no str")

    def weird(x: int):
        """Return an object whose str fails.

        Args:
            x: Ignored.
        """
        return BadStr()

    assert FunctionTool(weird).call({"x": 1}).error == "exception"


def test_async_functions_run():
    async def fetch(key: str) -> str:
        """Fetch a value.

        Args:
            key: Key.
        """
        return key.upper()

    assert FunctionTool(fetch).call({"key": "abc"}).text == "ABC"
    assert FunctionTool(fetch, timeout_s=None).call({"key": "x"}).text == "X"


def test_functions_without_hints_or_docs_are_refused_with_the_fix():
    def no_hint(x):
        """Doc.

        Args:
            x: Something.
        """

    def no_args_doc(x: int):
        """Only a summary."""

    for fn in (no_hint, no_args_doc):
        with pytest.raises(ValueError, match="type hint and a Google-style docstring"):
            FunctionTool(fn)
    with pytest.raises(ValueError, match="tag_argument='nope'"):
        FunctionTool(square, tag_argument="nope")
    with pytest.raises(TypeError):
        FunctionTool(42)


def test_name_override_and_batch():
    t = FunctionTool(square, name="sq", description="Squares.")
    assert t.schema()["function"]["name"] == "sq" and t.description == "Squares."
    assert [r.text for r in t.call_batch([{"x": i} for i in range(5)])] == ["0", "1", "4", "9", "16"]


def test_validate_arguments_nested_schemas():
    schema = {"type": "object", "properties": {
        "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}]},
        "scores": {"type": "object", "additionalProperties": {"type": "number"}},
        "either": {"type": ["integer", "string"]},
    }, "required": []}
    assert validate_arguments({"pair": [1, "a"], "scores": {"a": 1, "b": 2.5}, "either": "x"}, schema)[1] is None
    assert "must have 2 items" in validate_arguments({"pair": [1]}, schema)[1]
    assert "scores'['b'] must be number" in validate_arguments({"scores": {"b": "x"}}, schema)[1]
    assert "integer or string" in validate_arguments({"either": [1]}, schema)[1]


_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["city", "year", "unit", "districts"]) | st.text(max_size=6), _values,
                       max_size=4) | _values)
def test_fuzzed_function_arguments_never_raise(arguments):
    r = lookup_population.call(arguments)
    assert isinstance(r, ToolResult) and isinstance(r.text, str) and r.text
    if not r.ok:
        assert r.error in ("bad_arguments", "exception")
