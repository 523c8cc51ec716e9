"""Scaling out: training across processes (:mod:`appo.distributed.ddp`: torchrun, DDP, FSDP2)."""
