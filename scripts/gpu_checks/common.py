"""Problem sizes of the GPU run and the CPU dry run, and the helpers the rows share (tiny model, prompts,
teacher forcing, the tiny training config, weight comparisons)."""

from __future__ import annotations

import dataclasses
import math
import socket
from pathlib import Path

REWARD_SOURCE = '''def length_reward(prompts, completions, **columns):
    return [(len(c) % 7) / 7 for c in completions]
'''


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Problem sizes of one mode (GPU run or CPU dry run)."""

    engine_tokens: int = 32
    rollout_rows: int = 128
    prompt_len: int = 256
    new_tokens: int = 256
    rollout_repeats: int = 2
    rl_prompts: int = 8
    rl_rows: int = 8
    rl_response: int = 256
    rl_micro_rows: int = 32
    rl_repeats: int = 2
    vocab: int = 32768
    shape: dict | None = None  # None: SmolLM2-135M's
    corpus_chars: int = 6_000_000
    matmul_n: int = 8192
    copy_bytes: int = 2 << 30


GPU_SIZES = Sizes()
DRY_SIZES = Sizes(engine_tokens=12, rollout_rows=4, prompt_len=16, new_tokens=8, rollout_repeats=1, rl_prompts=2,
                  rl_rows=2, rl_response=8, rl_micro_rows=2, rl_repeats=1, vocab=600,
                  shape={"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                         "num_key_value_heads": 1, "intermediate_size": 128},
                  corpus_chars=200_000, matmul_n=256, copy_bytes=1 << 22)


def build_tiny(workdir: Path) -> Path:
    """The correctness model: the demo's tokenizer with a hidden-64, 2-layer Llama."""
    from appo.data.procedural import get_task
    from appo.models.demo_model import build_demo_base
    from appo.prompts import SHORT

    base = workdir / "tiny_base"
    if not (base / "config.json").exists():
        build_demo_base(base, [get_task("arith")], SHORT, hidden_size=64, num_layers=2, num_heads=2)
    return base


def prompts(tokenizer, n: int = 4) -> list[tuple[int, ...]]:
    texts = ["What is 3 + 4?", "Compute 12 * 7.", "What is 9 - 5?", "Add 21 and 13."][:n]
    return [tuple(tokenizer(t)["input_ids"]) or (0,) for t in texts]


def teacher_forced(model, prefix, generated, temperature: float = 1.0):
    """Per generated token: log-prob of the token and entropy of softmax(logits / T), one forward."""
    import torch

    ids = torch.tensor([list(prefix) + list(generated)], device=next(model.parameters()).device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prefix) - 1 : -1].float() / temperature
    logp = torch.log_softmax(logits, -1)
    tok = torch.tensor(list(generated), device=logp.device)
    return logp.gather(-1, tok[:, None])[:, 0].cpu(), -(logp.exp() * logp).sum(-1).cpu()


def max_diff(a, b) -> float:
    import torch

    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).abs().max()) if a.numel() else 0.0


def train_cfg(base: Path, run_dir: Path, reward: Path, device: str, dtype: str, *extra: str):
    """A tiny APPO run on the arithmetic prompts, no tools, a length reward (every step has a gradient)."""
    from appo.config import load_config

    return load_config(None, [
        f"model.path={base}", f"model.device={device}", f"model.dtype={dtype}", "data.train_files=[proc:arith]",
        "data.train_batch_size=2", "data.max_response_length=24", "rollout.n=4", "rollout.n_initial=2",
        "rollout.max_batch_size=8", "rollout.system_prompt=short", "actor.ppo_mini_batch_size=2",
        "actor.ppo_micro_batch_size_per_gpu=4", "actor.optim.lr=1e-3", "tools=[]",
        f"reward.name={reward}:length_reward", "trainer.total_training_steps=2", "trainer.save_freq=-1",
        "trainer.test_freq=-1", "trainer.val_before_train=false",
        "trainer.dump_rollouts_freq=-1", "trainer.logger=[jsonl]", "trainer.resume_mode=disable",
        f"trainer.default_local_dir={run_dir}", *extra])


def weights(model) -> dict:
    return {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}


def weight_gap(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def finite(metrics: dict) -> bool:
    return all(math.isfinite(v) for v in metrics.values() if isinstance(v, (int, float)))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
