"""Metrics: one ``MetricsLogger.log(metrics, step)`` call fans out to JSONL, TensorBoard, wandb, console.

Metric names follow verl's so dashboards and habits carry over: ``critic/score/mean``,
``critic/advantages/mean``, ``actor/pg_loss``, ``actor/pg_clipfrac``, ``actor/entropy``,
``actor/grad_norm``, ``actor/lr``, ``response_length/mean``, ``prompt_length/mean``, ``timing_s/gen``,
``val/<data_source>/score`` ... :func:`reduce_metrics` averages per-micro-batch dicts,
:func:`batch_metrics` computes the data metrics of a collated batch, :func:`timer` times a phase.

Backends: ``jsonl`` (``run_dir/metrics.jsonl``, one flushed line per call; on resume, lines after the
resumed step are dropped so the file matches the checkpoint), ``tensorboard`` (``run_dir/tensorboard``,
purged past the resumed step), ``wandb`` (only if installed; the run id is kept in ``run_dir/wandb_id``
so a resumed run continues the same wandb run), ``console`` (one line per step through ``rich``).
Left out: MLflow, SwanLab, and logging of generations (the report writes those).
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch

BACKENDS = ("console", "jsonl", "tensorboard", "wandb")


def _scalar(v: Any) -> float | int | str | bool | None:
    """A plain Python value for a metric (0-d tensors and NumPy scalars become numbers)."""
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise ValueError(f"metric tensors must hold one value, got shape {tuple(v.shape)}")
        return v.item()
    if hasattr(v, "item") and callable(v.item):  # numpy scalar
        return v.item()
    return v


class MetricsLogger:
    """Write each step's metrics to the chosen backends. Use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        run_dir: str | Path,
        backends: Sequence[str] = ("console", "jsonl"),
        *,
        project: str = "appo",
        experiment: str = "default",
        config: Mapping[str, Any] | None = None,
        resume_step: int | None = None,
        console: Any | None = None,
        console_keys: Sequence[str] | None = None,
    ) -> None:
        """``resume_step``: the step of the checkpoint a run resumes from (later JSONL lines and
        TensorBoard events are dropped). ``console``: a ``rich.console.Console`` to print through (share
        the progress display's so the bar stays put). ``console_keys``: metrics shown on the console
        (None shows all)."""
        unknown = [b for b in backends if b not in BACKENDS]
        if unknown:
            raise ValueError(f"unknown logger backend(s) {unknown}; valid: {list(BACKENDS)} (trainer.logger)")
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.backends = tuple(backends)
        self.console_keys = tuple(console_keys) if console_keys is not None else None
        self._jsonl = self._tb = self._wandb = self._console = None
        if "jsonl" in backends:
            path = self.run_dir / "metrics.jsonl"
            if resume_step is not None and path.exists():
                _truncate_jsonl(path, resume_step)
            self._jsonl = open(path, "a", encoding="utf-8")
        if "tensorboard" in backends:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=purge)
        if "wandb" in backends:
            self._wandb = _init_wandb(self.run_dir, project, experiment, config)
        if "console" in backends:
            from rich.console import Console

            self._console = console or Console(highlight=False, soft_wrap=True)

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Record ``metrics`` (name -> number; strings go to JSONL only) for ``step``."""
        clean = {k: _scalar(v) for k, v in metrics.items()}
        numeric = {k: v for k, v in clean.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self._jsonl is not None:
            self._jsonl.write(json.dumps({"step": step, "time": round(time.time(), 3), **clean}) + "\n")
            self._jsonl.flush()
        if self._tb is not None:
            for k, v in numeric.items():
                self._tb.add_scalar(k, v, global_step=step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(dict(clean), step=step)
        if self._console is not None:
            shown = numeric if self.console_keys is None else {k: numeric[k] for k in self.console_keys if k in numeric}
            self._console.print(f"step {step} | " + " | ".join(f"{k}={_fmt(v)}" for k, v in shown.items()))

    def close(self) -> None:
        """Flush and close every backend (safe to call twice)."""
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _fmt(v: float | int) -> str:
    return str(v) if isinstance(v, int) else f"{v:.4g}"


def _truncate_jsonl(path: Path, last_step: int) -> None:
    """Keep the lines with ``step <= last_step`` (atomic replace); a torn last line is dropped."""
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", math.inf) <= last_step:
                kept.append(line)
        except json.JSONDecodeError:
            continue
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
    os.replace(tmp, path)


def _init_wandb(run_dir: Path, project: str, experiment: str, config: Mapping[str, Any] | None) -> Any:
    try:
        import wandb
    except ImportError:
        raise RuntimeError(
            "trainer.logger asks for 'wandb' but the wandb package is not installed; fix: "
            ".venv/bin/pip install wandb (and `wandb login`), or drop wandb from trainer.logger") from None
    id_file = run_dir / "wandb_id"
    run_id = id_file.read_text().strip() if id_file.exists() else wandb.util.generate_id()
    id_file.write_text(run_id)
    return wandb.init(project=project, name=experiment, id=run_id, resume="allow", dir=str(run_dir),
                      config=dict(config or {}))


# ------------------------------------------------------------------------------------------- helpers
def reduce_metrics(items: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Combine per-micro-batch (or per-step) metric dicts: keys ending in ``/max`` take the max, ``/min``
    the min, every other key the mean over the dicts that have it (verl averages everything)."""
    values: dict[str, list[float]] = {}
    for d in items:
        for k, v in d.items():
            values.setdefault(k, []).append(float(_scalar(v)))
    out = {}
    for k, vs in values.items():
        out[k] = max(vs) if k.endswith("/max") else min(vs) if k.endswith("/min") else sum(vs) / len(vs)
    return out


def _stats(prefix: str, x: torch.Tensor) -> dict[str, float]:
    x = x.double()
    if x.numel() == 0:
        return {f"{prefix}/mean": 0.0, f"{prefix}/max": 0.0, f"{prefix}/min": 0.0}
    return {f"{prefix}/mean": float(x.mean()), f"{prefix}/max": float(x.max()), f"{prefix}/min": float(x.min())}


def batch_metrics(batch: Any, scores_B: torch.Tensor | Sequence[float] | None = None,
                  max_response_length: int | None = None) -> dict[str, float]:
    """verl's data metrics for a collated :class:`~appo.types.Batch`: ``critic/score/{mean,max,min}``
    (per-row scores), ``critic/advantages/{mean,max,min}`` (over trained tokens),
    ``response_length/{mean,max,min}`` and ``response_length/clip_ratio`` (rows that hit
    ``max_response_length``), ``prompt_length/{mean,max,min}``, and appo's ``tool_calls/mean``,
    ``response_length/model_tokens_mean`` (tokens the model wrote, tool results excluded),
    ``rollout/trained_row_rate`` (share of rows the loss trains on) and the step's budget: ``batch/rows``
    (rows generated), ``batch/trained_rows`` (rows with a loss token) and ``batch/loss_tokens`` (tokens the
    policy loss is taken over, summed over the batch; the study's equal-trained-tokens comparison adds them
    up)."""
    out: dict[str, float] = {}
    if scores_B is not None:
        out.update(_stats("critic/score", torch.as_tensor(scores_B, dtype=torch.float64)))
    mask = batch.loss_mask_BR.bool()
    out.update(_stats("critic/advantages", batch.advantages_BR[mask]))
    out["batch/rows"] = float(mask.shape[0])
    out["batch/trained_rows"] = float(mask.any(1).sum())
    out["batch/loss_tokens"] = float(mask.sum())
    resp_len = batch.response_mask_BR.sum(1)
    out.update(_stats("response_length", resp_len))
    if max_response_length is not None:
        out["response_length/clip_ratio"] = float((resp_len >= max_response_length).double().mean())
    R = batch.responses_BR.shape[1]
    out.update(_stats("prompt_length", batch.attention_mask_BL[:, :-R].sum(1) if R else batch.attention_mask_BL.sum(1)))
    if batch.model_mask_BR is not None:
        out["response_length/model_tokens_mean"] = float(batch.model_mask_BR.sum(1).double().mean())
    if batch.trained_B is not None:
        out["rollout/trained_row_rate"] = float(batch.trained_B.double().mean())
    if batch.num_tool_calls_B is not None:
        out["tool_calls/mean"] = float(batch.num_tool_calls_B.double().mean())
    return out


@contextmanager
def timer(name: str, metrics: dict) -> Iterator[None]:
    """Time the ``with`` block into ``metrics[f"timing_s/{name}"]`` (added to what is there)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        key = f"timing_s/{name}"
        metrics[key] = metrics.get(key, 0.0) + time.perf_counter() - start
