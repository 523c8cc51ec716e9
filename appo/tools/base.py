"""The tool interface the agent loop calls. Real tools: ``python`` (sandbox), ``search``, user functions.

A tool takes a dict of keyword arguments and returns a :class:`~appo.types.ToolResult`. It never
raises: bad arguments, timeouts, crashes and unreachable backends all come back as ``ok=False``
results whose text the agent sees, so one misbehaving call cannot stop a training step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from appo.types import ToolResult


class Tool(ABC):
    """Base class of tools. Subclasses set the class attributes and implement :meth:`call`."""

    name: str = ""
    """Name the model uses: the tag name in the tag protocol, the function name in Hermes JSON."""
    description: str = ""
    """One paragraph for the system prompt / the JSON schema."""
    parameters: dict = {"type": "object", "properties": {}, "required": []}
    """OpenAI-style JSON schema of the arguments."""
    tag_argument: str = ""
    """Argument that receives the body of ``<name>...</name>`` in the tag protocol."""
    max_workers: int = 4
    """Bound on concurrent calls in :meth:`call_batch`."""

    @abstractmethod
    def call(self, arguments: dict) -> ToolResult:
        """Run one call. Must not raise; return ``ToolResult(ok=False, ...)`` on failure."""

    def call_batch(self, arguments: Sequence[dict]) -> list[ToolResult]:
        """Run several calls concurrently from a bounded pool; results in input order."""
        if len(arguments) <= 1:
            return [self.safe_call(a) for a in arguments]
        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(arguments))) as pool:
            return list(pool.map(self.safe_call, arguments))

    def safe_call(self, arguments: dict) -> ToolResult:
        """:meth:`call`, with any exception a subclass let slip turned into an error result."""
        try:
            return self.call(arguments)
        except Exception as exc:  # noqa: BLE001 - a tool must never take the trainer down
            return ToolResult(text=f"Error: {type(exc).__name__}: {exc}", ok=False, error="exception")

    def schema(self) -> dict:
        """OpenAI-style function schema, as chat templates' ``tools=`` argument expects."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def close(self) -> None:
        """Release resources (processes, connections). Default: nothing to release."""
