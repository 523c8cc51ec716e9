"""Training across processes with torch.distributed: launched by ``torchrun``, DDP or FSDP2 for the update.

``torchrun --nproc_per_node=N -m appo train -c cfg.yaml`` starts N copies of the same run. Each one
(a *rank*) calls :func:`init_distributed`, which reads torchrun's ``WORLD_SIZE`` / ``RANK`` /
``LOCAL_RANK`` / ``MASTER_ADDR`` / ``MASTER_PORT`` and joins the process group: NCCL when the model
lives on CUDA (each rank on ``cuda:LOCAL_RANK``), gloo on CPU. Without torchrun (``WORLD_SIZE`` unset
or 1) nothing is initialised and every helper here is the identity: a single process runs exactly
the code and numbers it ran before this module existed.

What each rank does in a step (the loop in :mod:`appo.train.trainer` calls the helpers by name):

- **Prompts.** Every rank draws the same global batch from the same seeded sampler, then keeps its
  shard (:meth:`DistEnv.shard_prompts`): of each mini-batch of ``actor.ppo_mini_batch_size`` prompts,
  rank r takes the r-th contiguous ``M / W``. All rows of a prompt stay on one rank, so group
  advantages (per prompt) need no communication, and rank r's k-th local mini-batch is its part of
  the global k-th mini-batch. Rollout sampling is seeded by (seed, step, rank).
- **Update.** :func:`appo.train.update.ppo_update` gets this env: the loss normaliser (loss tokens, or
  rows for ``seq-mean-*``) is summed over ranks (:meth:`DistEnv.all_sum`), so each micro-batch loss is
  weighted by its share of the *global* mini-batch and multiplied by W (DDP and FSDP2 average
  gradients; times W turns the average into the sum), which makes the gradient the global token-mean
  gradient. Every rank runs the same number of micro-batch passes (:meth:`DistEnv.lockstep`; a rank
  with fewer does zero-weight passes on one row), so the collectives line up; DDP skips the gradient
  all-reduce on all but the last (``no_sync``).
- **Rollout weights.** The engine samples from the plain module. DDP wraps that same module (no
  copy): the update changes the weights the engine sees. FSDP2 shards parameters, and generation on
  each rank runs a different number of forward passes, which sharded forwards (all-gathers in lockstep)
  cannot do; so FSDP2 shards a *copy* for the update, and after each update :meth:`DistEnv.pull_weights`
  all-gathers the new weights into the full rollout copy (what verl does when it syncs its actor into
  vLLM). Memory: a full copy per rank plus 1/W of the parameters, gradients and optimizer state.
- **Metrics, dumps, validation, checkpoints.** Metrics are gathered and reduced (counts summed,
  ``*/max`` maxed, ``*/min`` minned, ``timing_s/*`` maxed, everything else averaged over ranks: exact
  for per-row means since ranks hold equal numbers of prompts, a mean of rank means for per-token or
  per-micro-batch metrics). Rollout dumps are gathered to rank 0. Validation is sharded over ranks and
  the scored rows gathered. Only rank 0 logs and writes checkpoints (DDP ranks hold identical weights
  and optimizer state; FSDP2's full optimizer state is gathered first); every rank resumes from them.

FSDP2 (``torch.distributed.fsdp.fully_shard``) shards each decoder layer (the model's
``_no_split_modules``) and the root; it reduce-scatters gradients after every micro-batch (no
``no_sync``: deferring would keep unsharded gradients, defeating the memory saving). It runs on CPU
with gloo (tested here with torch 2.13, 2 ranks); on GPU it is untested in this repository.
With ``model.compute_dtype`` below the weights' dtype (mixed precision, :mod:`appo.models.precision`) the
sharded copy gets FSDP2's ``MixedPrecisionPolicy(param_dtype=compute dtype, reduce_dtype=float32)``, as
verl's FSDP actor: weights all-gathered and computed in bf16, gradients reduced and kept in float32, the
float32 shards stepped by AdamW (the full rollout copy autocasts instead).
Left out: multi-node rendezvous beyond what torchrun does, tensor/sequence parallelism, HSDP, CPU
offload.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.distributed as tdist

from appo.models.precision import autocast_dtype, set_compute_dtype

STRATEGIES = ("auto", "none", "ddp", "fsdp2")
"""Values of ``actor.strategy``: ``auto`` is ``ddp`` under torchrun with WORLD_SIZE > 1, else ``none``."""

SUM_METRICS = ("rollout/rows", "rollout/tool_errors", "rollout/truncations", "appo/branch_points",
               "appo/branch_rows", "appo/initial_rows", "tree_grpo/num_trees")
"""Metric names (matched as suffixes, plus every ``rollout/stop/*``) that count things: summed over ranks."""

RANK_SEED_STRIDE = 1_000_000_007
"""Rollout seeds of rank r are offset by ``r * RANK_SEED_STRIDE`` (rank 0: unchanged)."""


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the run, and the collective helpers the training loop calls.

    With ``world_size == 1`` every method is the identity (no torch.distributed call is made)."""

    rank: int = 0
    """This process's rank (torchrun's ``RANK``)."""
    world_size: int = 1
    """Processes in the run (torchrun's ``WORLD_SIZE``)."""
    local_rank: int = 0
    """Rank on this node (torchrun's ``LOCAL_RANK``); the CUDA device index under NCCL."""
    strategy: str = "none"
    """The resolved strategy: ``none``, ``ddp`` or ``fsdp2``."""
    backend: str | None = None
    """``nccl`` or ``gloo``; None when not distributed."""
    owns_group: bool = False
    """Whether :func:`init_distributed` created the process group (and :meth:`close` destroys it)."""

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs, dumps and writes checkpoints."""
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """Device of collective tensors: the rank's GPU under NCCL, else CPU."""
        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")

    # --------------------------------------------------------------------------------- collectives
    def barrier(self) -> None:
        """Wait for every rank."""
        if self.enabled:
            tdist.barrier()

    def all_sum(self, x: float) -> float:
        """``sum_r x_r`` over ranks (float64)."""
        if not self.enabled:
            return x
        t = torch.tensor([x], dtype=torch.float64, device=self.device)
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return float(t.item())

    def all_max(self, x: int) -> int:
        """``max_r x_r`` over ranks."""
        if not self.enabled:
            return x
        t = torch.tensor([x], dtype=torch.long, device=self.device)
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        return int(t.item())

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        tdist.all_gather_object(out, obj)
        return out

    def gather_to_main(self, obj: Any) -> list[Any] | None:
        """Rank 0: every rank's ``obj`` (picklable), in rank order; other ranks: None."""
        if not self.enabled:
            return [obj]
        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        tdist.gather_object(obj, out, dst=0)
        return out

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block before the others (files every rank reads: corpora, search indexes)."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def close(self) -> None:
        """Destroy the process group if :func:`init_distributed` created it."""
        if self.owns_group and tdist.is_initialized():
            tdist.destroy_process_group()

    # ------------------------------------------------------------------------------------ sharding
    def rank_seed(self, seed: int) -> int:
        """A rollout seed of this rank: ``seed + rank * RANK_SEED_STRIDE`` (so ranks sample independently)."""
        return seed + self.rank * RANK_SEED_STRIDE

    def shard_positions(self, n_prompts: int, prompts_per_step: int, rank: int | None = None) -> list[int]:
        """Positions (in the global prompt batch) of ``rank``'s prompts: the r-th contiguous ``M / W`` of
        each mini-batch of ``M = prompts_per_step`` prompts."""
        r, W, M = self.rank if rank is None else rank, self.world_size, prompts_per_step
        if M % W or n_prompts % M:
            raise ValueError(f"{n_prompts} prompts in mini-batches of {M} cannot be split evenly over {W} ranks; "
                             f"actor.ppo_mini_batch_size must be a multiple of the world size ({W}) and divide "
                             "data.train_batch_size")
        per = M // W
        return [k * M + r * per + i for k in range(n_prompts // M) for i in range(per)]

    def shard_prompts(self, indices: Sequence[int], prompts_per_step: int) -> list[int]:
        """This rank's part of the global prompt batch ``indices`` (see :meth:`shard_positions`)."""
        if not self.enabled:
            return list(indices)
        return [indices[p] for p in self.shard_positions(len(indices), prompts_per_step)]

    def shard_list(self, items: Sequence[Any]) -> list[Any]:
        """A contiguous ``1/W`` of ``items`` (validation examples); shards in rank order rebuild the list."""
        n = len(items)
        return list(items[self.rank * n // self.world_size : (self.rank + 1) * n // self.world_size])

    # ------------------------------------------------------------------------------------- update
    def lockstep(self, micro: list[Any]) -> list[Any | None]:
        """``micro`` padded with None to the largest micro-batch count of any rank, so every rank runs
        the same number of forward/backward passes (DDP's last one all-reduces, FSDP2 all-gathers in
        each). The caller turns a None into a zero-weight pass."""
        n = self.all_max(len(micro)) if self.enabled else len(micro)
        return list(micro) + [None] * (n - len(micro))

    def grad_sync(self, model: torch.nn.Module, last: bool) -> contextlib.AbstractContextManager:
        """Context of one micro-batch's backward: DDP all-reduces gradients only on the ``last``
        (``no_sync`` before); FSDP2 reduce-scatters each time; single process: nothing."""
        if self.strategy == "ddp" and not last:
            return model.no_sync()
        return contextlib.nullcontext()

    def loss_scale(self) -> float:
        """Factor on each rank's loss so that the ranks' gradient *average* (DDP, FSDP2) is their sum."""
        return float(self.world_size)

    # --------------------------------------------------------------------------------- model setup
    def wrap(self, components: Any, cfg: Any, make_optimizer: Callable[[torch.nn.Module], tuple] | None = None) -> Any:
        """``components`` with ``train_model`` set: the module the update runs. ``none``: the model
        itself; ``ddp``: a DDP wrapper of it (same parameters, so the optimizer and the engine are
        unchanged); ``fsdp2``: a sharded copy, with optimizer and scheduler rebuilt over its parameters
        by ``make_optimizer(module) -> (optimizer, scheduler)`` (required for ``fsdp2``). Checks that
        the prompt batch splits evenly over the ranks."""
        if self.strategy == "none":
            return dataclasses.replace(components, train_model=components.model)
        self.shard_positions(cfg.data.train_batch_size, cfg.actor.ppo_mini_batch_size)  # raises if uneven
        model = components.model
        if self.strategy == "ddp":
            device_ids = [self.local_rank] if self.backend == "nccl" else None
            return dataclasses.replace(components, train_model=ddp_wrap(model, device_ids))
        if make_optimizer is None:
            raise ValueError("DistEnv.wrap with strategy fsdp2 needs make_optimizer (the sharded copy's optimizer)")
        sharded = fsdp2_shard(copy.deepcopy(model).train(), self.device.type, self.world_size,
                              param_dtype=autocast_dtype(model))
        optimizer, scheduler = make_optimizer(sharded)
        return dataclasses.replace(components, train_model=sharded, optimizer=optimizer, scheduler=scheduler)

    def pull_weights(self, components: Any) -> None:
        """FSDP2: all-gather the trained (sharded) parameters into the full rollout copy ``model``.
        Every rank calls it (collective); DDP and single process: nothing to do (shared parameters)."""
        if self.strategy != "fsdp2":
            return
        full = dict(components.model.named_parameters())
        with torch.no_grad():
            for name, p in components.train_model.named_parameters():
                if p.requires_grad:
                    full[name].copy_(p.full_tensor() if hasattr(p, "full_tensor") else p)

    def push_weights(self, components: Any) -> None:
        """FSDP2: load the full rollout copy's weights (e.g. just restored from a checkpoint) into the
        sharded training copy. Every rank calls it; otherwise nothing to do."""
        if self.strategy != "fsdp2":
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(components.train_model, components.model.state_dict(),
                             options=StateDictOptions(full_state_dict=True))

    def savable_optimizer(self, components: Any) -> Any:
        """What rank 0 passes to ``save_checkpoint`` as the optimizer: the optimizer itself, or under
        FSDP2 a snapshot of the full (unsharded, FQN-keyed) state, gathered by every rank (collective)."""
        if self.strategy != "fsdp2":
            return components.optimizer
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        state = get_optimizer_state_dict(components.train_model, components.optimizer,
                                         options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return _StateSnapshot(state)

    def loadable_optimizer(self, components: Any) -> Any:
        """What ``restore`` loads the optimizer state into: the optimizer, or under FSDP2 an adapter
        that shards the full state saved by :meth:`savable_optimizer` onto this rank."""
        if self.strategy != "fsdp2":
            return components.optimizer
        return _FullStateLoader(components.train_model, components.optimizer)

    # ------------------------------------------------------------------------- metrics and outputs
    def reduce_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """One metrics dict for the step, the same on every rank (reduction rules in the module docstring)."""
        if not self.enabled:
            return metrics
        per_rank = self.all_gather(dict(metrics))
        keys = list(dict.fromkeys(k for m in per_rank for k in m))
        out = {}
        for k in keys:
            values = [float(m[k]) for m in per_rank if k in m and isinstance(m[k], (int, float))]
            if values:
                out[k] = _reduce(k, values)
        return out

    def gather_step_record(self, record: dict, prompts_per_step: int) -> dict | None:
        """Rank 0: the step's rollout dump with every rank's prompts, renumbered to their positions in
        the global batch; other ranks: None (collective)."""
        if not self.enabled:
            return record
        records = self.gather_to_main(record)
        if records is None:
            return None
        n = sum(len(r["prompts"]) for r in records)
        prompts = []
        for rank, rec in enumerate(records):
            positions = self.shard_positions(n, prompts_per_step, rank)
            for p in rec["prompts"]:
                prompts.append({**p, "group": positions[p["group"]]})
        return {**records[0], "prompts": sorted(prompts, key=lambda p: p["group"])}

    def gather_eval(self, result: Any | None) -> Any:
        """Validation: every rank's ``EvalResult`` (None for an empty shard) pooled, rows in rank order,
        summary recomputed over all of them; the same on every rank (collective)."""
        if not self.enabled:
            return result
        from appo.eval import EvalResult, summarize

        rows = [row for part in self.all_gather(None if result is None else result.rows) if part for row in part]
        return EvalResult(summary=summarize(rows) if rows else {}, rows=rows)


class AppoDDP(torch.nn.parallel.DistributedDataParallel):
    """DDP that answers ``get_base_model()`` with the wrapped model, so appo's probe of the model's
    ``forward`` signature (``logits_to_keep``) sees the real model, not DDP's ``forward(*args)``."""

    def get_base_model(self) -> torch.nn.Module:
        """The wrapped model (or, for a PEFT model, its base model)."""
        m = self.module
        return m.get_base_model() if hasattr(m, "get_base_model") else m


def ddp_wrap(model: torch.nn.Module, device_ids: list[int] | None = None) -> AppoDDP:
    """``model`` in :class:`AppoDDP`, buffers not re-broadcast at each forward (they never change here,
    and a broadcast per forward would tie ranks with different micro-batch counts together)."""
    import inspect

    new_api = "forward_sync_buffers" in inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters
    quiet = {"forward_sync_buffers": False} if new_api else {"broadcast_buffers": False}
    return AppoDDP(model, device_ids=device_ids, **quiet)


class Quiet:
    """Stands in for the logger and progress display on ranks other than 0: every call does nothing."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


@dataclass(frozen=True)
class _StateSnapshot:
    state: dict

    def state_dict(self) -> dict:
        return self.state


@dataclass(frozen=True)
class _FullStateLoader:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer

    def load_state_dict(self, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(self.model, self.optimizer, optim_state_dict=state,
                                 options=StateDictOptions(full_state_dict=True))


def _reduce(key: str, values: list[float]) -> float:
    if key.endswith("/max") or key.startswith("timing_s/"):
        return max(values)
    if key.endswith("/min"):
        return min(values)
    if key.startswith("rollout/stop/") or key.endswith(SUM_METRICS):
        return sum(values)
    return sum(values) / len(values)


# ------------------------------------------------------------------------------------- setup helpers
def fsdp2_shard(model: torch.nn.Module, device_type: str, world_size: int,
                param_dtype: torch.dtype | None = None) -> torch.nn.Module:
    """``fully_shard`` each decoder layer (classes named in the model's ``_no_split_modules``) and then
    the root, over a 1-D mesh of all ranks; returns the same (now sharded) module. ``param_dtype`` (mixed
    precision): ``MixedPrecisionPolicy(param_dtype, reduce_dtype=float32)``, which then replaces the model's
    autocast (its compute dtype record is cleared)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device_type, (world_size,))
    kw = {}
    if param_dtype is not None:
        kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
        set_compute_dtype(model, None)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layer_names = set(getattr(base, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in layer_names]
    for layer in layers:
        fully_shard(layer, mesh=mesh, **kw)
    fully_shard(model, mesh=mesh, **kw)
    return model


def resolve_strategy(strategy: str, world_size: int) -> str:
    """``actor.strategy`` for this world size: ``auto`` -> ``ddp`` (W > 1) or ``none``; any strategy with
    one process -> ``none``; ``none`` with several processes is an error naming the fix."""
    if strategy not in STRATEGIES:
        raise ValueError(f"actor.strategy={strategy!r} is not one of {list(STRATEGIES)} (verl's 'fsdp' is FSDP1; "
                         "appo runs FSDP2: actor.strategy=fsdp2)")
    if world_size <= 1:
        return "none"
    if strategy == "none":
        raise ValueError(f"actor.strategy=none but torchrun started {world_size} processes, which would train "
                         f"{world_size} unrelated copies; fix: actor.strategy=ddp (or fsdp2), or run one process")
    return "ddp" if strategy == "auto" else strategy


def init_distributed(strategy: str = "auto", device: str = "auto", timeout_s: float = 1800.0) -> DistEnv:
    """Join the process group torchrun describes (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` and the
    ``MASTER_*`` rendezvous variables) and return this rank's :class:`DistEnv`.

    One process (``WORLD_SIZE`` unset or 1): no torch.distributed call, ``DistEnv()``. Several: the
    backend is NCCL when ``device`` resolves to CUDA (``torch.cuda.set_device(LOCAL_RANK)`` first, so
    ``model.device=auto``/``cuda`` puts each rank on its own GPU), gloo otherwise; a process group that
    already exists (a launcher or test that made its own) is used as it is. ``timeout_s`` bounds every
    collective wait (a rank generating long rollouts while others wait in the update counts against it).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    resolved = resolve_strategy(strategy, world)
    if world <= 1:
        return DistEnv(strategy=resolved)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda:"):
        raise ValueError(f"model.device={device} would put all {world} ranks on one GPU; fix: model.device=cuda "
                         "(or auto): each rank then uses cuda:LOCAL_RANK")
    use_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    owns = not tdist.is_initialized()
    if owns:
        if use_cuda:
            torch.cuda.set_device(local_rank)
        tdist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(seconds=timeout_s))
    backend = tdist.get_backend()
    if backend == "nccl" and torch.cuda.current_device() != local_rank:
        torch.cuda.set_device(local_rank)
    if tdist.get_world_size() != world or tdist.get_rank() != rank:
        raise RuntimeError(f"the process group (rank {tdist.get_rank()} of {tdist.get_world_size()}) disagrees with "
                           f"RANK={rank}, WORLD_SIZE={world}")
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank, strategy=resolved, backend=str(backend),
                   owns_group=owns)
