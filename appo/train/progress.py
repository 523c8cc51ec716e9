"""A progress display for long commands (train, eval, SFT): step, elapsed, ETA, and custom fields.

On a terminal it is a ``rich`` progress bar (``step 12/100 ━━━━━ 0:01:02 eta 0:07:35 reward=0.41
acc=0.50``). When the stream is not a TTY (CI, ``| tee``, a log file) or ``CI`` is set, it prints a plain
line at most every ``min_interval_s`` seconds (and at the first and last step) so logs stay readable;
``mode="silent"`` prints nothing. The ETA of the plain mode is the mean time per step since the display
started times the steps left (resumed runs count from where they resumed).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Literal, TextIO

Mode = Literal["auto", "rich", "plain", "silent"]


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _fmt_time(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class ProgressDisplay:
    """``with ProgressDisplay(total, "train") as p: ... p.update(step, reward=0.4, acc=0.5)``."""

    def __init__(
        self,
        total: int,
        description: str = "train",
        *,
        mode: Mode = "auto",
        start: int = 0,
        stream: TextIO | None = None,
        min_interval_s: float = 10.0,
    ) -> None:
        """``total`` steps; ``start``: steps already done (a resumed run); ``stream``: where to draw
        (stderr by default); ``min_interval_s``: plain-mode throttle."""
        self.total, self.description, self.start = total, description, start
        self.stream = stream or sys.stderr
        self.min_interval_s = min_interval_s
        if mode == "auto":
            tty = hasattr(self.stream, "isatty") and self.stream.isatty()
            mode = "rich" if tty and not os.environ.get("CI") else "plain"
        self.mode: Mode = mode
        self.done = start
        self.fields: dict[str, Any] = {}
        self._t0 = time.monotonic()
        self._last_print = -float("inf")
        self._progress = self._task = None
        self.console = None
        """The ``rich`` console the bar draws on (rich mode), to share with a console logger; else None."""
        if mode == "rich":
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.console = Console(file=self.stream, highlight=False)
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), MofNCompleteColumn(), BarColumn(), TimeElapsedColumn(),
                TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                console=self.console, transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(description, total=total, completed=start, info="")

    def update(self, step: int | None = None, advance: int = 1, **fields: Any) -> None:
        """Mark progress: ``step`` sets the steps done (else ``advance`` adds to it); ``fields`` (reward,
        accuracy, loss, anything) are shown after the bar and kept until replaced."""
        self.done = step if step is not None else self.done + advance
        self.fields.update(fields)
        info = " ".join(f"{k}={_fmt_value(v)}" for k, v in self.fields.items())
        if self.mode == "rich":
            self._progress.update(self._task, completed=self.done, info=info)
        elif self.mode == "plain":
            now = time.monotonic()
            first = self._last_print == -float("inf")
            if first or self.done >= self.total or now - self._last_print >= self.min_interval_s:
                self._last_print = now
                print(self.plain_line(info), file=self.stream, flush=True)

    def eta_s(self) -> float | None:
        """Seconds left at the mean pace since the display started; None before the first step."""
        steps = self.done - self.start
        if steps <= 0:
            return None
        return (time.monotonic() - self._t0) / steps * max(0, self.total - self.done)

    def plain_line(self, info: str = "") -> str:
        """The line the plain mode prints."""
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = self.eta_s()
        parts = [f"[{self.description}] step {self.done}/{self.total} ({pct:.0f}%)",
                 f"elapsed {_fmt_time(time.monotonic() - self._t0)}",
                 f"eta {_fmt_time(eta) if eta is not None else '?'}"]
        return " ".join(parts + ([info] if info else []))

    def close(self) -> None:
        """Stop the bar (rich) so later output prints below it."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __enter__(self) -> ProgressDisplay:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
