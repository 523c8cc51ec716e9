"""docs/config.md is generated from the config's docstrings; it must not drift from the code."""

from pathlib import Path

from appo.config import config_reference_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_config_reference_is_up_to_date():
    assert DOC.read_text() == config_reference_markdown() + "\n", (
        "docs/config.md is stale; regenerate it with `make docs`")
