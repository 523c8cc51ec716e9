"""Rollouts over Ray actors: N workers, each holding its own engine over its own copy of the policy and the
tools; the trainer keeps the update.

``RayRolloutPool.run_strategy(name, ctx, prompts, cfg)`` has the signature and result of
:func:`appo.agent.run_strategy`. Per call it

1. **shards the prompts by prompt** (:func:`shard_prompts`: contiguous, nearly equal blocks, every row of
   a prompt on one worker, so the strategies' per-prompt logic (forks, branch points, group budgets)
   runs unchanged inside a worker, and group advantages later need nothing from other workers);
2. sends each worker its block plus what the context holds besides engine and tools: sampling params,
   limits, protocol, cache-key prefix, and the state of ``ctx.rng``. Every worker starts from the same
   rng state, so its agent loop draws the same loop seed as the single process; with per-row request
   seeds and keyed strategy draws (:mod:`appo.agent.loop`) a prompt's rows are then the rows the
   single process samples for it, up to float round-off (see "Determinism");
3. gathers the outputs, sorts rows by (group, uid), recomputes ``rollout/*`` over all rows and merges
   the strategy metrics (counts summed, rates weighted by their denominators, :data:`MERGE_RULES`).

**APPO's Omega.** When the context carries ``current_logp_fn`` and ``anchor_logp_fn`` (closures over the
trainer's models, which cannot travel), each worker scores with its own models instead: the current
policy (its engine's model) and the pool's ``anchor``: ``rollout`` (the engine's log-probs: nothing to
hold), ``previous`` (a copy loaded with the previous weights pushed), ``reference`` (a frozen copy of
the model as the factory built it).

**Weights** (:meth:`RayRolloutPool.set_weights`): the trainer's updated tensors (by default only those
with ``requires_grad``: LoRA pushes just the adapters) are packed as numpy arrays (bf16 as its int16
bits) and ``ray.put`` once; each worker receives the object reference and copies the arrays into its
parameters. On one node Ray's shared-memory object store hands every worker a zero-copy view; across
nodes each node pulls one copy. Cost per update: one serialisation of the weights into the store plus
one memcpy per worker; for a 7B model in bf16 that is 14 GB through host memory per update, which is
why GPU deployments broadcast over NCCL into the inference engine instead (docs/scaling.md).

**Failures.** A worker whose actor dies (process killed, node lost: ``RayActorError``) is replaced by a
new actor built by the same factory, loaded with the current weights (the pool keeps their object
references), and its block of prompts is run again from the start; the other workers' results are kept.
The step is not lost and the result is the same (a block's rows depend only on its prompts, the rng
state and the weights). A worker that is alive but hung (a tool or the engine never returns) is treated
the same way once its block has run for ``timeout_s`` seconds (``rollout.worker_timeout_s``): it is
killed and replaced, and its block re-run; a weight load that takes longer than that counts as hung too.
After ``max_restarts`` replacements in one call the error is raised (a :class:`WorkerTimeoutError`
naming the setting when the last one was a timeout). An exception raised *inside* a rollout (a bug, a
bad tool spec) is not retried: it would recur.

**Determinism.** A prompt's rows equal the single-process rows in token ids; log-probs and entropies
agree to float round-off (about 1e-6 on CPU: the same row runs in a batch of a different size and
padding, which changes the reduction order inside matmuls and attention). A sampled token could only
differ where a uniform draw falls within that round-off of a CDF boundary of the sampling distribution.

Left out: elastic resizing, overlapping generation with the update (rollouts of step k+1 under weights k),
GPU placement groups, NCCL weight broadcast.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from appo.models.loading import frozen_copy

RAY_HINT = "pip install 'appo[dist]' (Ray)"

SUM_KEYS = ("arpo/forks", "arpo/fill_rows", "arpo/checks", "appo/branch_points", "tree/fill_rows")
"""Strategy metrics that count things: summed over workers."""

MERGE_RULES: dict[str, tuple[str, str | None]] = {
    "arpo/mean_fork_probability": ("mean", "arpo/checks"),
    "appo/strict_point_rate": ("mean", "appo/branch_points"),
    "appo/omega_degenerate_rate": ("mean", None),
    "tree/rounds": ("max", None),
}
"""How other strategy metrics merge: ``max``, or ``mean`` weighted by the named count (None: by the
worker's number of prompts). A metric in neither table is averaged weighted by prompts."""


class WorkerTimeoutError(RuntimeError):
    """A rollout worker stayed busy past the pool's timeout and no replacement is left for this call."""


def import_ray():
    """The ``ray`` module, or an ImportError naming the install command."""
    try:
        import ray
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"rollout workers run on Ray, which is not installed: {RAY_HINT}") from e
    return ray


def init_ray(address: str | None = None, **kwargs: Any) -> bool:
    """Connect to the Ray cluster at ``address`` (``auto``: the one ``ray start`` made on this node;
    ``ray://host:port``; ``host:port``), or start a local one when ``address`` is None. Returns True when
    this call started or connected (the caller should ``ray.shutdown()`` at the end), False when Ray was
    already initialised (the caller's own cluster is used as it is).

    A local instance started here listens on loopback only and sends no usage statistics (the
    environment variables ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` and ``RAY_USAGE_STATS_ENABLED=0`` are
    set unless already set, before Ray is first imported)."""
    if address is None and "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray = import_ray()
    if ray.is_initialized():
        return False
    ray.init(address=address, include_dashboard=False, **kwargs)
    return True


# ------------------------------------------------------------------------------------------- weights
def policy_weights(model: torch.nn.Module, names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """``model``'s parameters by name: those in ``names``, or all with ``requires_grad`` (what an update
    changes) when None."""
    params = dict(model.named_parameters())
    if names is None:
        return {n: p for n, p in params.items() if p.requires_grad}
    missing = [n for n in names if n not in params]
    if missing:
        raise KeyError(f"model has no parameter {missing[0]!r}")
    return {n: params[n] for n in names}


def pack_weights(weights: Mapping[str, torch.Tensor]) -> dict[str, tuple[str, np.ndarray]]:
    """``{name: (dtype name, numpy array)}`` on the CPU: what ``ray.put`` stores without pickling tensors
    (numpy arrays are zero-copy in Ray's object store). bfloat16 travels as its int16 bit pattern."""
    out = {}
    for name, t in weights.items():
        t = t.detach().to("cpu").contiguous()
        if t.dtype == torch.bfloat16:
            out[name] = ("bfloat16", t.view(torch.int16).numpy())
        else:
            out[name] = (str(t.dtype).removeprefix("torch."), t.numpy())
    return out


def unpack_weight(dtype: str, arr: np.ndarray) -> torch.Tensor:
    """The tensor of one :func:`pack_weights` entry (a view of ``arr``, which may be read-only: copy it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only zero-copy arrays from the object store
        t = torch.from_numpy(arr)
    return t.view(torch.bfloat16) if dtype == "bfloat16" else t


def load_packed(model: torch.nn.Module, packed: Mapping[str, tuple[str, np.ndarray]]) -> None:
    """Copy packed weights into ``model``'s parameters of the same names (dtype/device converted)."""
    params = dict(model.named_parameters())
    unknown = [n for n in packed if n not in params]
    if unknown:
        raise KeyError(f"pushed weight {unknown[0]!r} is not a parameter of the worker's model: the worker "
                       "factory must build the same architecture (and LoRA layout) as the trainer")
    with torch.no_grad():
        for name, (dtype, arr) in packed.items():
            src = unpack_weight(dtype, arr)
            if src.shape != params[name].shape:
                raise ValueError(f"pushed weight {name!r} has shape {tuple(src.shape)}, the worker's "
                                 f"{tuple(params[name].shape)}")
            params[name].copy_(src)


# ------------------------------------------------------------------------------------------- workers
@dataclass(frozen=True)
class WorkerParts:
    """What a worker factory builds inside the worker process."""

    model: torch.nn.Module
    """The worker's own copy of the policy (the engine samples from it; pushed weights land in it)."""
    tokenizer: Any
    """The policy's tokenizer."""
    engine: Any
    """An Engine over ``model`` (``HFEngine``)."""
    tools: Any
    """Tools: a list or a name -> Tool mapping."""


@dataclass(frozen=True)
class RolloutCall:
    """What a worker needs from the driver's RolloutContext besides its own engine and tools."""

    protocol: Any
    """The context's ToolProtocol."""
    params: Any
    """SamplingParams."""
    limits: Any
    """LoopLimits."""
    rng_state: tuple
    """``ctx.rng.getstate()`` before the call: every worker starts from it."""
    key_prefix: str
    """Engine cache-key prefix."""
    omega: bool
    """Score APPO's Omega (the context had both log-prob fns)."""
    anchor: str
    """Omega's anchor when ``omega``: ``rollout``, ``previous`` or ``reference``."""


class RolloutWorker:
    """One rollout process (wrapped by ``ray.remote`` in :class:`RayRolloutPool`). Builds its parts with
    ``factory()``, takes pushed weights, runs a strategy on a block of prompts."""

    def __init__(self, factory: Callable[[], WorkerParts], num_threads: int = 1, anchor: str = "previous"):
        torch.set_num_threads(max(1, num_threads))
        self.parts = factory()
        self.version = -1
        self._prev: torch.nn.Module | None = None
        self._ref = frozen_copy(self.parts.model) if anchor == "reference" else None  # the model as built

    def ready(self) -> int:
        """The worker's process id (once its parts are built)."""
        return os.getpid()

    def load_weights(self, version: int, current: Mapping, previous: Mapping | None = None) -> int:
        """Load pushed weights (and the previous policy's, for the ``previous`` anchor); returns ``version``."""
        load_packed(self.parts.model, current)
        if previous is not None:
            if self._prev is None:
                self._prev = frozen_copy(self.parts.model)
            load_packed(self._prev, previous)
        self.version = version
        return version

    def rollout(self, name: str, prompts: list, cfg: Any, call: RolloutCall) -> tuple[Any, tuple]:
        """``run_strategy(name, ...)`` on this worker's prompts; returns the output and the rng state after."""
        import random

        from appo.agent import RolloutContext, engine_logprobs, run_strategy, teacher_forced_logp_fn
        from appo.agent.protocols import tool_map

        rng = random.Random()
        rng.setstate(call.rng_state)
        current = anchor = None
        if call.omega:
            T = call.params.temperature
            current = teacher_forced_logp_fn(self.parts.model, T)
            anchor = (engine_logprobs if call.anchor == "rollout"
                      else teacher_forced_logp_fn(self._anchor(call.anchor), T))
        ctx = RolloutContext(engine=self.parts.engine, tokenizer=self.parts.tokenizer, protocol=call.protocol,
                             tools=tool_map(self.parts.tools), params=call.params, limits=call.limits, rng=rng,
                             current_logp_fn=current, anchor_logp_fn=anchor, key_prefix=call.key_prefix)
        return run_strategy(name, ctx, prompts, cfg), rng.getstate()

    def _anchor(self, anchor: str) -> torch.nn.Module:
        if anchor == "previous":
            if self._prev is None:
                raise RuntimeError("anchor 'previous' but no previous weights were pushed: "
                                   "RayRolloutPool.set_weights(..., previous=...)")
            return self._prev
        if anchor == "reference":
            if self._ref is None:
                raise RuntimeError("anchor 'reference' but the worker was started with another anchor")
            return self._ref
        raise ValueError(f"anchor={anchor!r} must be 'rollout', 'previous' or 'reference'")


def shard_prompts(prompts: Sequence[Any], n_workers: int) -> list[list[Any]]:
    """``prompts`` in ``n_workers`` contiguous blocks whose sizes differ by at most one (in order; a
    block may be empty when there are fewer prompts than workers)."""
    if n_workers < 1:
        raise ValueError(f"n_workers must be >= 1, got {n_workers}")
    n = len(prompts)
    return [list(prompts[w * n // n_workers : (w + 1) * n // n_workers]) for w in range(n_workers)]


def merge_strategy_metrics(parts: Sequence[tuple[dict[str, float], int]]) -> dict[str, float]:
    """One dict of strategy metrics from ``(metrics, n_prompts)`` per worker (``rollout/*`` excluded:
    recomputed over all rows). Rules: :data:`SUM_KEYS`, :data:`MERGE_RULES`, else prompt-weighted mean."""
    keys = list(dict.fromkeys(k for m, _ in parts for k in m if not k.startswith("rollout/")))
    out: dict[str, float] = {}
    for k in keys:
        have = [(m, n) for m, n in parts if k in m]
        rule, weight_key = MERGE_RULES.get(k, ("sum" if k in SUM_KEYS else "mean", None))
        if rule == "sum":
            out[k] = float(sum(m[k] for m, _ in have))
        elif rule == "max":
            out[k] = float(max(m[k] for m, _ in have))
        else:
            w = [float(m.get(weight_key, 0.0)) if weight_key else float(n) for m, n in have]
            out[k] = sum(wi * m[k] for wi, (m, _) in zip(w, have)) / sum(w) if sum(w) > 0 else 0.0
    return out


class RayRolloutPool:
    """N rollout workers on Ray (see the module docstring). Use as a context manager or call :meth:`close`.

    Args:
        factory: a picklable ``() -> WorkerParts`` run inside each worker (e.g.
            :class:`appo.train.components.ConfigWorkerFactory`).
        num_workers: actors to start.
        anchor: APPO's Omega anchor the workers use when a context asks for Omega.
        address: Ray address (None: the running Ray, or a new local instance; ``auto``: the cluster of
            ``ray start`` on this node).
        num_cpus: CPUs reserved per worker (also its torch threads).
        num_gpus: GPUs per worker (its model goes to ``cuda`` when > 0 and the factory honours it).
        max_restarts: dead or hung workers replaced per call before the error is raised.
        init_kwargs: extra ``ray.init`` arguments when the pool starts Ray itself.
        timeout_s: seconds a worker may spend on its block of prompts (or on a weight load) before it
            counts as hung and is replaced; None or 0 waits forever.
    """

    def __init__(self, factory: Callable[[], WorkerParts], num_workers: int, *, anchor: str = "previous",
                 address: str | None = None, num_cpus: float = 1, num_gpus: float = 0, max_restarts: int = 3,
                 init_kwargs: dict | None = None, timeout_s: float | None = None):
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if anchor not in ("rollout", "previous", "reference"):
            raise ValueError(f"anchor={anchor!r} must be 'rollout', 'previous' or 'reference'")
        self.ray = import_ray()
        self._owns_ray = init_ray(address, **(init_kwargs or {}))
        self.factory, self.anchor, self.max_restarts = factory, anchor, max_restarts
        self.timeout_s = timeout_s or None
        """Seconds before a busy worker counts as hung (None: never)."""
        self._actor = self.ray.remote(RolloutWorker).options(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=0)
        self._threads = max(1, int(num_cpus))
        self.workers = [self._actor.remote(factory, self._threads, anchor) for _ in range(num_workers)]
        self.pids = self.ray.get([w.ready.remote() for w in self.workers])
        """Process id of each worker (updated on restart)."""
        self.restarts = 0
        """Workers replaced since the pool started."""
        self.version = -1
        self._current = self._previous = None

    # ------------------------------------------------------------------------------------- weights
    def set_weights(self, weights: Mapping[str, torch.Tensor],
                    previous: Mapping[str, torch.Tensor] | None = None) -> int:
        """Push new policy weights to every worker (one ``ray.put``, each worker copies them in) and wait.

        ``previous`` (for the ``previous`` anchor): the policy before this update; None reuses the weights
        of the last push (no new put). Returns the new version number."""
        ray = self.ray
        if previous is not None and set(previous) != set(weights):
            missing = sorted(set(weights) ^ set(previous))[:3]
            raise ValueError(f"previous weights must name the same parameters as weights (differ on {missing}); "
                             "a frozen copy has no requires_grad parameters: use policy_weights(prev, list(weights))")
        prev_ref = ray.put(pack_weights(previous)) if previous is not None else self._current
        self._previous, self._current = prev_ref, ray.put(pack_weights(weights))
        self.version += 1
        loads = [self._load(w) for w in self.workers]
        for w, ref in enumerate(loads):
            try:
                ray.get(ref, timeout=self.timeout_s)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                self._replace(w)  # loads the current weights into the new actor
        return self.version

    def _load(self, worker):
        prev = self._previous if self.anchor == "previous" else None
        return worker.load_weights.remote(self.version, self._current, prev)

    # ------------------------------------------------------------------------------------ rollouts
    def run_strategy(self, name: str, ctx: Any, prompts: list, cfg: Any) -> Any:
        """:func:`appo.agent.run_strategy` over the workers: same arguments, same result (module docstring).
        ``ctx.engine`` and ``ctx.tools`` are not used (each worker has its own); ``ctx.rng`` is advanced
        as the single-process call would advance it."""
        from appo.agent.context import check_prompts, engine_logprobs, finish

        check_prompts(prompts)
        omega = ctx.current_logp_fn is not None and ctx.anchor_logp_fn is not None
        anchor = "rollout" if ctx.anchor_logp_fn is engine_logprobs else self.anchor
        call = RolloutCall(ctx.protocol, ctx.params, ctx.limits, ctx.rng.getstate(), ctx.key_prefix, omega, anchor)
        blocks = shard_prompts(prompts, len(self.workers))
        results = self._run_blocks(name, blocks, cfg, call)
        if not results:
            return finish([], prompts, cfg.n_total)
        rows = [r for out, _ in results.values() for r in out.rows]
        ctx.rng.setstate(results[min(results)][1])
        extra = merge_strategy_metrics([(out.metrics, len(blocks[w])) for w, (out, _) in sorted(results.items())])
        return finish(rows, prompts, cfg.n_total, extra)

    def _run_blocks(self, name: str, blocks: list[list], cfg: Any, call: RolloutCall) -> dict[int, tuple]:
        ray = self.ray
        started: dict[Any, float] = {}  # object ref -> when its block was submitted

        def submit(w: int) -> None:
            ref = self.workers[w].rollout.remote(name, blocks[w], cfg, call)
            pending[ref], started[ref] = w, time.monotonic()

        pending: dict[Any, int] = {}
        for w, b in enumerate(blocks):
            if b:
                submit(w)
        results: dict[int, tuple] = {}
        replaced = 0
        while pending:
            wait_s = None
            if self.timeout_s is not None:
                wait_s = max(0.0, min(started[r] for r in pending) + self.timeout_s - time.monotonic())
            done, _ = ray.wait(list(pending), num_returns=1, timeout=wait_s)
            if not done:  # the oldest block passed the timeout: its worker is hung
                ref = min(pending, key=started.__getitem__)
                w = pending.pop(ref)
                replaced += 1
                if replaced > self.max_restarts:
                    raise WorkerTimeoutError(
                        f"rollout worker {w} spent over {self.timeout_s:g}s on its {len(blocks[w])} prompts and "
                        f"the {self.max_restarts} replacements allowed per step are used up; raise "
                        "rollout.worker_timeout_s (or rollout.worker_restarts) if the rollouts are just slow, "
                        "else find what hangs (a tool call, the engine)")
                self._replace(w)  # kills the hung actor
                submit(w)
                continue
            w = pending.pop(done[0])
            try:
                results[w] = ray.get(done[0])
            except ray.exceptions.RayActorError:
                replaced += 1
                if replaced > self.max_restarts:
                    raise
                self._replace(w)
                submit(w)
        return results

    def _replace(self, w: int) -> None:
        """A new actor in place of dead worker ``w``, loaded with the current weights."""
        ray = self.ray
        try:
            ray.kill(self.workers[w], no_restart=True)
        except Exception:  # already gone
            pass
        self.workers[w] = self._actor.remote(self.factory, self._threads, self.anchor)
        self.pids[w] = ray.get(self.workers[w].ready.remote())
        if self._current is not None:
            ray.get(self._load(self.workers[w]))
        self.restarts += 1

    # ------------------------------------------------------------------------------------- shutdown
    def close(self) -> None:
        """Stop the workers (and Ray, if this pool started it)."""
        for w in self.workers:
            try:
                self.ray.kill(w, no_restart=True)
            except Exception:
                pass
        self.workers = []
        if self._owns_ray and self.ray.is_initialized():
            self.ray.shutdown()

    def __enter__(self) -> RayRolloutPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
