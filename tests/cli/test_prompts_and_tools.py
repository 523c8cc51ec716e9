"""A user's function tool is described to the model under a named system prompt (tags protocol); literal
prompts are left as written; the Hermes chat template lists tools itself."""

from __future__ import annotations

from appo.prompts import SHORT, resolve_system_prompt
from appo.tools.functions import FunctionTool


def lookup_price(item: str) -> str:
    """Price of an item in the shop.

    Args:
        item: the item's name
    """
    return {"apple": "0.5 EUR"}.get(item, "unknown item")


class _Named:
    def __init__(self, name):
        self.name, self.description, self.tag_argument, self.parameters = name, "", "code", {}


def test_named_prompt_describes_a_function_tool_it_does_not_mention():
    tool = FunctionTool(lookup_price)
    text = resolve_system_prompt("short", [_Named("python"), tool], "tags")
    assert text.startswith(SHORT)
    added = text[len(SHORT):].strip().splitlines()
    assert added == ["To use the lookup_price tool, write <lookup_price> item </lookup_price>: "
                     "Price of an item in the shop."]  # python is already in the named text: not repeated
    assert resolve_system_prompt("short", [_Named("python")], "tags") == SHORT  # the demo's prompt is unchanged
    assert resolve_system_prompt("fewshot", [tool], "tags").endswith("Price of an item in the shop.")


def test_named_prompt_that_mentions_a_missing_tool_warns_once():
    import warnings

    from appo import prompts

    prompts._WARNED.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resolve_system_prompt("short", [_Named("python")], "tags")
        resolve_system_prompt("short", [_Named("python")], "tags")
    message = str(caught[0].message)
    assert len(caught) == 1 and "<search>" in message and "your own prompt text" in message


def test_literal_text_and_hermes_are_left_alone():
    tool = FunctionTool(lookup_price)
    assert resolve_system_prompt("Answer briefly.", [tool], "tags") == "Answer briefly."
    assert resolve_system_prompt("short", [tool], "hermes") == SHORT
    assert resolve_system_prompt(None, [tool], "tags") is None
    assert resolve_system_prompt("short") == SHORT
