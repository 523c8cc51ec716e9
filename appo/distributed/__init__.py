"""Scaling out: training across processes (:mod:`appo.distributed.ddp`: torchrun, DDP, FSDP2) and rollouts on
Ray actors (:mod:`appo.distributed.ray_rollout`).

May import: :mod:`appo.agent`, :mod:`appo.eval`, :mod:`appo.models`. Not the trainer or the config: the trainer
hands in what these need (an optimizer factory, a worker factory).
"""
