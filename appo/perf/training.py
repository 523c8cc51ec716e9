"""Training figures: old-log-prob pass and forward+backward update, ours against TRL's, and padding waste.

The batch is a GRPO-shaped one: ``prompts`` arithmetic prompts (chat-templated) x ``rows_per_prompt``
rows, responses of random tokens with lengths drawn uniformly from ``[R/8, R]`` (rollouts that stop at
different points), all response tokens trained, a random advantage per row. Both sides process the
same rows with the same micro-batch size (``micro_rows``) in their own layout:

- ours: :func:`appo.train.batching.collate` then length-grouped micro-batches
  (:func:`~appo.train.batching.split_micro_batches`, re-trimmed per micro-batch);
  old log-probs = :func:`appo.train.layout.batched_logprobs` (padded layout; ``max_tokens`` = the trainer's
  ``ppo_max_token_len_per_gpu`` default, and ``micro_rows``); update = :func:`appo.train.update.ppo_update`
  (one optimizer step over all rows: fwd+bwd per micro-batch, grad clip, AdamW);
- TRL: prompts left-padded and completions right-padded over the whole batch (as ``GRPOTrainer``
  collates a generation batch), split into chunks of ``micro_rows`` without re-trimming; old
  log-probs = ``GRPOTrainer._get_per_token_logps_and_entropies`` (its fused LM head) under ``no_grad``;
  update = ``GRPOTrainer._compute_loss`` + ``backward`` per chunk, then grad clip and AdamW, as its
  training loop does.

tokens/s counts real (non-pad) prompt + response tokens. ``padding`` figures compare padded token counts
(what the forward actually processes) of the two layouts.
"""

from __future__ import annotations

import copy
import random
import tempfile

import torch

from appo.perf.harness import Contender, figure, interleave, timed
from appo.perf.models import arith_examples, chat_prompt_ids, pad_id
from appo.train.batching import collate, padding_stats, split_micro_batches
from appo.train.layout import batched_logprobs
from appo.train.update import UpdateOptions, ppo_update
from appo.types import Rollout


def make_rows(tok, prompts: int, rows_per_prompt: int, max_response: int, seed: int = 0) -> list[Rollout]:
    """GRPO-shaped rows with random response tokens of lengths uniform in ``[max_response/8, max_response]``."""
    rng = random.Random(seed)
    prompt_ids = chat_prompt_ids(tok, arith_examples(prompts, seed=seed))
    special = set(getattr(tok, "all_special_ids", []) or [])
    vocab = [i for i in range(len(tok)) if i not in special]
    rows = []
    for g, p in enumerate(prompt_ids):
        for u in range(rows_per_prompt):
            n = rng.randint(max(1, max_response // 8), max_response)
            rows.append(Rollout(group=g, uid=u, prompt_ids=tuple(p),
                                response_ids=tuple(rng.choice(vocab) for _ in range(n)),
                                logprobs=(0.0,) * n, entropies=(0.0,) * n, loss_mask=(1,) * n, stop_reason="eos"))
    return rows


def trl_layout(batch, micro_rows: int) -> list[dict]:
    """TRL's chunks of the same rows: prompt/completion tensors padded over the whole batch, ``micro_rows`` each."""
    R = batch.responses_BR.shape[1]
    P = batch.input_ids_BL.shape[1] - R
    chunks = []
    for i in range(0, batch.input_ids_BL.shape[0], micro_rows):
        s = slice(i, i + micro_rows)
        mask = batch.response_mask_BR[s].long()
        chunks.append({"prompt_ids": batch.input_ids_BL[s, :P], "prompt_mask": batch.attention_mask_BL[s, :P],
                       "completion_ids": batch.responses_BR[s], "completion_mask": mask,
                       "advantages": batch.advantages_BR[s, 0].clone(), "num_items_in_batch": mask.sum().float()})
    return chunks


def training_figures(model, tok, model_name: str, threads: int, *, prompts: int, rows_per_prompt: int,
                     max_response: int, micro_rows: int, repeats: int, with_trl: bool) -> list[dict]:
    """Old-log-prob tok/s, update tok/s (target 1.2x TRL) and padding waste of the two layouts."""
    rows = make_rows(tok, prompts, rows_per_prompt, max_response)
    N = len(rows)
    adv = torch.randn(N, 1, generator=torch.Generator().manual_seed(0)).expand(N, max_response).contiguous()
    batch = collate(rows, pad_id(tok), advantages_NT=adv)
    real = float(batch.attention_mask_BL.sum())
    ours_micro = split_micro_batches(batch, max_tokens=16384, max_rows=micro_rows)
    trl_chunks = trl_layout(batch, micro_rows)
    ours_pad = padding_stats(ours_micro)
    trl_padded = float(sum(c["prompt_ids"].numel() + c["completion_ids"].numel() for c in trl_chunks))
    shape = {"model": model_name, "threads": threads, "rows": N, "micro_rows": micro_rows,
             "max_response": max_response, "real_tokens": real}
    out = [{
        "section": "training", "name": f"{model_name} padding", "unit": "padded tokens", "higher_is_better": False,
        "repeats": 1, "ours_name": "length-grouped micro-batches (re-trimmed)",
        "ours": {k: ours_pad["padded_tokens"] for k in ("min", "median", "max")},
        "baseline_name": "TRL layout (batch-wide padding, fixed chunks)",
        "baseline": {"min": trl_padded, "median": trl_padded, "max": trl_padded},
        "speedup": trl_padded / ours_pad["padded_tokens"], "speedup_min": None, "speedup_max": None,
        "ours_peak_rss_mb": None, "baseline_peak_rss_mb": None, "target": None, "target_text": "", "met": None,
        "details": shape | {"ours_waste": 1 - ours_pad["efficiency"], "trl_waste": 1 - real / trl_padded}}]

    trainer = None
    trl_model = None
    if with_trl:
        from appo.perf.trl_side import build_grpo_trainer

        trl_model = copy.deepcopy(model)
        examples = arith_examples(prompts)
        trainer = build_grpo_trainer(trl_model, tok, ["x"] * prompts, examples, rows_per_step=N,
                                     num_generations=rows_per_prompt,
                                     max_completion=max_response, micro_rows=micro_rows, max_steps=1, lr=1e-6,
                                     output_dir=tempfile.mkdtemp(prefix="appo-bench-trl-"))
        trainer.current_gradient_accumulation_steps = len(trl_chunks)
        trl_opt = torch.optim.AdamW([p for p in trl_model.parameters() if p.requires_grad], lr=1e-6)

    def ours_logp(r: int) -> float:
        model.eval()
        return real / timed(lambda: batched_logprobs(model, batch, "padded", 1.0, max_tokens=16384,
                                                     max_rows=micro_rows))

    def trl_logp(r: int) -> float:
        trl_model.eval()
        R = batch.responses_BR.shape[1]

        def go():
            with torch.no_grad():
                for c in trl_chunks:
                    ids = torch.cat([c["prompt_ids"], c["completion_ids"]], 1)
                    mask = torch.cat([c["prompt_mask"], c["completion_mask"]], 1)
                    trainer._get_per_token_logps_and_entropies(trl_model, ids, mask, R, batch_size=micro_rows)

        return real / timed(go)

    opts = UpdateOptions(ppo_mini_batch_size=prompts, micro_batch_rows=micro_rows, max_tokens=None)
    ours_opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)

    def ours_update(r: int) -> float:
        try:
            return real / timed(lambda: ppo_update(model, ours_opt, batch, opts))
        finally:
            model.eval()

    def trl_update(r: int) -> float:
        trl_model.train()

        def go():
            for c in trl_chunks:
                trainer._compute_loss(trl_model, c).backward()
            torch.nn.utils.clip_grad_norm_(trl_model.parameters(), 1.0)
            trl_opt.step()
            trl_opt.zero_grad(set_to_none=True)

        try:
            return real / timed(go)
        finally:
            trl_model.eval()

    for label, o_fn, t_fn, o_name, t_name in (
            ("old log-prob", ours_logp, trl_logp, "batched_logprobs",
             "GRPOTrainer._get_per_token_logps_and_entropies"),
            ("update fwd+bwd+step", ours_update, trl_update, "ppo_update",
             "GRPOTrainer._compute_loss + backward + AdamW")):
        ours = Contender(o_name, o_fn)
        base = Contender(t_name, t_fn) if with_trl else None
        interleave(ours, base, repeats)
        out.append(figure("training", f"{model_name} t{threads} {label}", "tok/s", ours, base, higher_is_better=True,
                          target=1.2, target_text=">= 1.2x TRL tokens/s", details=shape))
    return out
