"""The TRL side of the comparison: a ``GRPOTrainer`` (CPU, or the GPU) over the same model, prompts and reward.

TRL is optional (``pip install appo[perf]``); :func:`trl_available` says whether it imports. The
trainer is built with TRL's own defaults except where the comparison needs equal settings: CPU and
fp32 (or the GPU and bf16, for ``scripts/gpu_check.py``), ``num_generations`` rows per prompt,
``per_device_train_batch_size`` = rows per step (one
optimizer step per generation batch, as our trainer), temperature 1 without top-k/top-p, no KL
(``beta=0``, also our default), gradient checkpointing as asked (off by default, as ours; TRL's own
default is on), no dataset shuffling (both sides see the prompts in the same order).
The prompts are our chat-templated prompt texts, so TRL tokenizes them to the same ids; the reward
scores each completion with :mod:`appo.rewards` against the same :class:`~appo.types.Example`.
"""

from __future__ import annotations

import logging
import warnings


def trl_available() -> str | None:
    """None when ``trl`` imports, else the reason (for a skipped figure)."""
    try:
        import trl  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means "not here"
        return f"trl not importable ({type(exc).__name__}: {exc}); install the perf extra: pip install -e .[perf]"
    return None


def appo_reward_for_trl(examples, reward_name: str = "default"):
    """A TRL reward function (``completions``, dataset column ``example_idx``) scoring with an appo reward."""
    from appo.rewards import get_reward

    reward_fn = get_reward(reward_name)

    def appo_reward(completions, example_idx, **_):
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        return [s.score for s in reward_fn([examples[i] for i in example_idx], texts)]

    return appo_reward


def build_grpo_trainer(model, tok, prompt_texts, examples, *, rows_per_step: int, num_generations: int,
                       max_completion: int, micro_rows: int, max_steps: int, lr: float, output_dir: str,
                       callbacks=(), seed: int = 0, device: str = "cpu", bf16: bool = False,
                       gradient_checkpointing: bool = False):
    """A ``trl.GRPOTrainer`` over ``model`` (patched by TRL: pass a copy you do not share). ``device``
    ``cpu`` runs TRL with ``use_cpu``; otherwise the model's GPU, with ``bf16`` mixed precision when asked.
    ``gradient_checkpointing`` is passed explicitly (TRL's own default is on): the comparison sets it equal
    to ours, off unless asked."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    for name in ("trl", "transformers", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="trl")
    warnings.filterwarnings("ignore", module="transformers")
    ds = Dataset.from_dict({"prompt": list(prompt_texts), "example_idx": list(range(len(prompt_texts)))})
    if rows_per_step % micro_rows:
        raise ValueError(f"rows_per_step={rows_per_step} must be a multiple of micro_rows={micro_rows}")
    cfg = GRPOConfig(
        output_dir=output_dir, use_cpu=device == "cpu", bf16=bf16, per_device_train_batch_size=micro_rows,
        gradient_accumulation_steps=rows_per_step // micro_rows, num_generations=num_generations,
        max_completion_length=max_completion, max_steps=max_steps, learning_rate=lr, temperature=1.0, top_p=1.0,
        top_k=0, beta=0.0, shuffle_dataset=False, save_strategy="no", report_to=[], logging_steps=10**6,
        disable_tqdm=True, dataloader_num_workers=0, seed=seed, max_grad_norm=1.0,
        gradient_checkpointing=gradient_checkpointing)
    trainer = GRPOTrainer(model=model, reward_funcs=appo_reward_for_trl(examples), args=cfg, train_dataset=ds,
                          processing_class=tok, callbacks=list(callbacks))
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cb in (PrinterCallback, ProgressCallback):  # the benchmark prints its own table
        trainer.remove_callback(cb)
    return trainer
