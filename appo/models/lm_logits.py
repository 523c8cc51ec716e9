"""Only the logits a caller needs: the one ``logits_to_keep`` check shared by the engine, scorer and trainer.

transformers' causal LMs accept ``logits_to_keep`` (an int: the last K positions; or a 1-D index
tensor) so positions that predict nothing never reach the LM head. :func:`accepts_logits_to_keep`
answers once per model class (PEFT and DDP wrappers looked through); :func:`keep_logits` calls the
model with it when accepted and slices the full logits otherwise, so callers always get exactly the
kept positions. The forward runs under the model's compute dtype (:func:`appo.models.precision.compute_autocast`:
bfloat16 matrix products over float32 weights when ``model.compute_dtype`` says so).
"""

from __future__ import annotations

import inspect

import torch

from appo.models.precision import compute_autocast

_ACCEPTS: dict[type, bool] = {}


def _base(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "module", model)  # DDP
    return model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT


def accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    """Whether ``model.forward`` takes ``logits_to_keep`` (cached per class)."""
    cls = type(_base(model))
    if cls not in _ACCEPTS:
        try:
            _ACCEPTS[cls] = "logits_to_keep" in inspect.signature(_base(model).forward).parameters
        except (TypeError, ValueError):
            _ACCEPTS[cls] = False
    return _ACCEPTS[cls]


def keep_logits(model: torch.nn.Module, keep: int | torch.Tensor, **inputs) -> torch.Tensor:
    """``model(**inputs)`` logits at the kept positions only: ``[B, K, V]`` for ``keep = K`` (the last K
    positions) or ``[B, len(keep), V]`` for a 1-D index tensor ``keep`` (positions along the sequence)."""
    with compute_autocast(model):
        if accepts_logits_to_keep(model):
            logits = model(**inputs, logits_to_keep=keep).logits
            kept = keep if isinstance(keep, int) else keep.numel()
            if logits.shape[1] == kept:
                return logits
        else:
            logits = model(**inputs).logits
    return logits[:, -keep:] if isinstance(keep, int) else logits[:, keep]
