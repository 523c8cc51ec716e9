"""Helpers for the Ray rollout tests: a local 2-CPU Ray instance on loopback, a worker factory over the
tiny test model, and an engine wrapper that blocks one generate call so a test can kill its worker
mid-step. Ray ships this module to the workers by value (it is not importable there)."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "agent"))
import agent_doubles  # noqa: E402
from agent_doubles import StubPython, StubSearch  # noqa: E402


def start_local_ray():
    """``ray.init(num_cpus=2, include_dashboard=False)`` on 127.0.0.1 only, without usage statistics;
    this module and the agent doubles travel to the workers by value."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # node address = loopback (read when ray is imported)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cloudpickle.register_pickle_by_value(agent_doubles)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    address = ray.get_runtime_context().gcs_address
    assert address.startswith("127.0.0.1:"), address
    return ray


@dataclass
class BlockOnceEngine:
    """Delegates to ``inner``. While ``block_dir/armed`` exists, calls are counted; at the ``nth`` one, the
    first worker to claim ``block_dir/blocked`` (it writes its pid there) sleeps until the test kills it."""

    inner: object
    block_dir: str
    nth: int = 2
    armed_calls: int = 0

    def generate(self, requests, params):
        armed = Path(self.block_dir, "armed").exists()
        self.armed_calls = self.armed_calls + 1 if armed else 0
        if armed and self.armed_calls == self.nth:
            try:
                fd = os.open(Path(self.block_dir, "blocked"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                fd = None
            if fd is not None:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    time.sleep(0.05)
                raise RuntimeError("BlockOnceEngine: nobody killed this worker within 120 s")
        return self.inner.generate(requests, params)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@dataclass(frozen=True)
class TinyFactory:
    """Worker parts: the tiny test model from ``model_dir`` (fp32, eval, weights x4 so its next-token
    distributions are peaked as in the engine tests), an HFEngine over it, stub tools."""

    model_dir: str
    block_dir: str | None = None

    def __call__(self):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from appo.distributed.ray_rollout import WorkerParts
        from appo.engine.hf import HFEngine

        torch.set_num_threads(1)
        model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32).eval()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" not in name:
                    p.mul_(4.0)
        tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        engine = HFEngine(model, tokenizer, max_batch_size=16)
        if self.block_dir is not None:
            engine = BlockOnceEngine(engine, self.block_dir)
        return WorkerParts(model, tokenizer, engine, [StubPython(), StubSearch()])
