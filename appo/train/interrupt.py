"""Ctrl-C during training: stop at a safe point and say how to resume.

:class:`StopRequest` turns the first SIGINT into a request (the running step finishes, a checkpoint is
written, then the loop stops); a second SIGINT raises ``KeyboardInterrupt`` at once (the step is
abandoned: nothing of it is saved, the last checkpoint stays the resume point). Either way the trainer
raises :class:`TrainingInterrupted`, which names the step, the checkpoint and the config overrides the
resume needs. SIGTERM (what schedulers and ``kill`` send) stops at once: it raises ``SystemExit(143)``, so the
step is abandoned as after a second Ctrl-C, but the run's ``finally`` blocks still run and stop what the run
started (vLLM's engine processes, Ray workers), which the default action (die at once) left orphaned;
resuming from the last checkpoint works as after a crash. Left out: a checkpoint on SIGTERM (a scheduler's
grace period may be shorter than a step), and graceful stops under torchrun (ranks could stop at different
steps, so there the first Ctrl-C abandons the step and SIGTERM keeps its default action).
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

SIGTERM_EXIT = 128 + signal.SIGTERM
"""The exit code after SIGTERM (143): what a shell reports for a process that SIGTERM ended."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C. ``checkpoint`` is where it resumes from (None: no checkpoint yet, a
    rerun starts from step 0); ``resume_overrides`` are the overrides a rerun of the same command needs
    (e.g. ``trainer.resume_mode=auto`` when the run was started with resuming disabled)."""

    def __init__(self, run_dir: str | Path, step: int, checkpoint: str | Path | None,
                 resume_overrides: tuple[str, ...] = ()):
        self.run_dir, self.step = Path(run_dir), step
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.resume_overrides = tuple(resume_overrides)
        where = (f"last checkpoint {self.checkpoint}" if self.checkpoint is not None
                 else "no checkpoint yet (a rerun starts from step 0)")
        super().__init__(f"training stopped by Ctrl-C after {step} completed steps; run directory {self.run_dir}; "
                         f"{where}")


class StopRequest:
    """Context manager: while active, the first SIGINT sets :attr:`requested` (and prints one line to
    stderr) instead of raising; the next one raises ``KeyboardInterrupt``; SIGTERM raises ``SystemExit(143)``
    (module docstring). Inactive (a no-op) when
    ``enabled`` is False or outside the main thread (Python delivers signals to the main thread only)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self.terminated = False
        """SIGTERM arrived: the caller turns whatever exception unwinds its loop into ``SystemExit(143)``."""
        self._previous = self._previous_term = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: stopping after this step and saving a checkpoint (Ctrl-C again to stop now, "
              "losing this step)", file=sys.stderr, flush=True)

    def _terminate(self, signum, frame) -> None:
        self.terminated = True  # the raise below can surface as another exception inside library code
        print("\nSIGTERM: stopping now (this step is not saved; the last checkpoint is the resume point)",
              file=sys.stderr, flush=True)
        raise SystemExit(SIGTERM_EXIT)

    def __enter__(self) -> StopRequest:
        if self.enabled:
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._previous_term = signal.signal(signal.SIGTERM, self._terminate)
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.default_int_handler)
            signal.signal(signal.SIGTERM, self._previous_term if self._previous_term is not None else signal.SIG_DFL)
