"""Run a function on N local ranks (gloo over 127.0.0.1 only) and collect what each returns.

Ranks are forked from a forkserver that imported torch, transformers and appo once, so a test pays the
import cost once per session rather than once per rank. Each rank gets torchrun's environment
(``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR=127.0.0.1``, ``MASTER_PORT``), gloo bound to
the loopback interface, and one intra-op thread; it does not initialise the process group itself
(the code under test does, through :func:`appo.distributed.ddp.init_distributed`).
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.multiprocessing as tmp

_PRELOAD = ["torch", "torch.distributed", "transformers", "appo.train.trainer", "appo.distributed.ddp"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, fn: Callable, world: int, port: int, out_dir: str, args: tuple) -> None:
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    try:
        result = fn(*args)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")


def run_ranks(fn: Callable, world: int, *args: Any) -> list[Any]:
    """``[fn(*args) on rank r for r in range(world)]``; a rank's exception fails the call with its traceback."""
    multiprocessing.set_forkserver_preload(_PRELOAD)  # no effect once the forkserver runs
    with tempfile.TemporaryDirectory() as out:
        tmp.start_processes(_rank_main, args=(fn, world, free_port(), out, args), nprocs=world, join=True,
                            start_method="forkserver")
        return [torch.load(Path(out) / f"rank{r}.pt", weights_only=False) for r in range(world)]


class PerRequestEngine:
    """An engine wrapper that generates each request on its own, seeded by its prefix, its row uid and
    the step in its cache key (replacing the request's own seed, which the agent loop derives from the
    rank's rollout seed and the rank-local prompt index): one process and a rank holding part of the
    prompts then sample the same rows."""

    def __init__(self, inner):
        self.inner = inner

    def generate(self, requests, params):
        import zlib

        out = []
        for req in requests:
            key = (req.cache_key or "").split("/")
            seed = zlib.crc32(repr((tuple(req.prefix_ids), key[0], key[-1])).encode())
            out.extend(self.inner.generate([replace(req, seed=seed)], replace(params, seed=seed)))
        return out

    def __getattr__(self, name):
        return getattr(self.inner, name)
