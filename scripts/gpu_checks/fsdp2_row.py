"""The FSDP2 row: one process in a real process group (NCCL on CUDA, gloo on CPU) against plain training, then
an FSDP2 save and resume."""

from __future__ import annotations

import os
from pathlib import Path

from gpu_checks.common import finite, free_port, train_cfg, weight_gap, weights


def check_fsdp2(base: Path, workdir: Path, reward: Path, args) -> dict:
    """FSDP2 with one process (a real process group: NCCL on CUDA, gloo on CPU) against plain training."""
    from datetime import timedelta
    from unittest import mock

    import torch
    import torch.distributed as tdist

    import appo.train.trainer as trainer_mod
    from appo.distributed.ddp import DistEnv
    from appo.train.trainer import Trainer

    cuda = args.device.startswith("cuda")
    backend = "nccl" if cuda else "gloo"
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), GLOO_SOCKET_IFNAME="lo")
    os.environ.setdefault("NCCL_SOCKET_IFNAME", "lo")
    if cuda:
        torch.cuda.set_device(torch.device(args.device).index or 0)
    tdist.init_process_group(backend, rank=0, world_size=1, timeout=timedelta(seconds=120))
    env = DistEnv(rank=0, world_size=1, strategy="fsdp2", backend=backend, owns_group=False)
    try:
        plain = Trainer(train_cfg(base, workdir / "run_plain", reward, args.device, "float32"))
        with mock.patch.object(trainer_mod, "init_distributed", lambda *a, **k: env):
            sharded = Trainer(train_cfg(base, workdir / "run_fsdp2", reward, args.device, "float32",
                                        "actor.strategy=fsdp2", "trainer.save_freq=1"))
        start = weights(plain.c.model)
        is_dtensor = any(type(p).__name__ == "DTensor" for p in sharded.c.train_model.parameters())
        mp = plain.train_step(0)
        ms = sharded.train_step(0)
        wp, ws = weights(plain.c.model), weights(sharded.c.model)
        gap, moved = weight_gap(wp, ws), weight_gap(wp, start)
        path = sharded.save(1)
        with mock.patch.object(trainer_mod, "init_distributed", lambda *a, **k: env):
            resumed = Trainer(train_cfg(base, workdir / "run_fsdp2", reward, args.device, "float32",
                                        "actor.strategy=fsdp2", "trainer.resume_mode=auto"))
        resumed_gap = weight_gap(ws, weights(resumed.c.model))
        full = {n: p.full_tensor().detach().float().cpu() for n, p in resumed.c.train_model.named_parameters()}
        shard_gap = max(float((full[n] - ws[n]).abs().max()) for n in full if n in ws)
        m2 = resumed.train_step(1)
    finally:
        for t in ("plain", "sharded", "resumed"):
            if t in locals():
                locals()[t].close()
        tdist.destroy_process_group()
    ok = (is_dtensor and gap <= args.fsdp_tol and moved > args.fsdp_tol and path is not None
          and resumed.start_step == 1 and resumed_gap == 0.0 and shard_gap == 0.0 and finite(m2) and finite(ms))
    return {"ok": ok, "backend": backend, "sharded_params_are_dtensors": is_dtensor,
            "max_weight_diff_vs_plain": gap, "max_weight_moved": moved, "tol": args.fsdp_tol,
            "grad_norm": {"plain": mp.get("actor/grad_norm"), "fsdp2": ms.get("actor/grad_norm")},
            "resume": {"start_step": resumed.start_step, "full_copy_max_diff": resumed_gap,
                       "sharded_copy_max_diff": shard_gap, "next_step_finite": finite(m2)}}
