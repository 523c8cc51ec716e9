"""appo: reinforcement learning for tool-using LLM agents (APPO, GRPO, ARPO, Tree-GRPO)."""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("appo")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0+unknown"
