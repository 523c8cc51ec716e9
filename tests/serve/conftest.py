"""Serving fixtures: a tiny model taught one tool-using episode, served by ``appo serve`` in a subprocess."""

from __future__ import annotations

import pytest
from serve_helpers import build_taught_model, free_port, start_server


@pytest.fixture(scope="session")
def taught_model_dir(tmp_path_factory, tiny_tokenizer):
    """The tiny Llama overfit on one tags-protocol episode (python call, then the boxed answer), as an HF folder."""
    return build_taught_model(tmp_path_factory.mktemp("taught"), tiny_tokenizer, "tags")


@pytest.fixture(scope="session")
def served(taught_model_dir):
    """``appo serve`` of the taught model on a free 127.0.0.1 port; yields the base URL (``.../v1``)."""
    port = free_port()
    proc = start_server([str(taught_model_dir), "--name", "tiny", "--protocol", "tags"], port)
    yield f"http://127.0.0.1:{port}/v1"
    proc.terminate()
    try:
        proc.wait(15)
    except Exception:  # noqa: BLE001
        proc.kill()


@pytest.fixture()
def client(served):
    from openai import OpenAI

    return OpenAI(base_url=served, api_key="unused", max_retries=0, timeout=120)
