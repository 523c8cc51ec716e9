"""Mixed precision: float32 master weights, low-precision compute (``model.compute_dtype``).

Why: AdamW's step is about ``lr`` per weight (``m / sqrt(v) ~ sign(g)``). A bfloat16 weight w keeps 8
significant bits, so a step below half its spacing (``|w| * 2**-8``) rounds away: at lr 1e-6 on weights
of size ~1e-2 nearly every update is lost (measured on an H200: ~98% of a 7B model's weights unchanged
after one step). verl (FSDP ``MixedPrecision``) and TRL (``bf16=True``: autocast) keep the parameters and
the optimizer state in float32 and run the matrix products in bfloat16; appo does the same with
``model.dtype=float32 model.compute_dtype=bfloat16``.

How: :func:`set_compute_dtype` records the compute dtype on the (unwrapped) model; :func:`compute_autocast`
is ``torch.autocast(device type, compute dtype)`` around a forward, or a no-op when the parameters already
are in that dtype (or it is float32 / unset). The trainer's passes (update, old / reference log-probs,
packed and shared-prefix layouts) and the scorer enter it in :func:`appo.models.lm_logits.keep_logits`,
the engine around its own forward; backward passes run outside it (autocast's recommendation). The record
is a plain attribute, so ``copy.deepcopy`` (the reference / previous policy, the FSDP2 training copy)
keeps it.
Left out: loss scaling, which float16 compute needs against gradient underflow (bfloat16 does not; use it).
"""

from __future__ import annotations

import contextlib

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""Config names of the dtypes appo accepts for parameters and compute."""

_ATTR = "_appo_compute_dtype"


def _base(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "module", model)  # DDP
    return model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT


def set_compute_dtype(model: torch.nn.Module, dtype: str | torch.dtype | None) -> None:
    """Record ``dtype`` (a name in :data:`DTYPES`, a torch dtype, or None for none) as the dtype ``model``'s
    forwards compute in; see the module docstring."""
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"compute dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        dtype = DTYPES[dtype]
    object.__setattr__(_base(model), _ATTR, dtype)


def autocast_dtype(model: torch.nn.Module) -> torch.dtype | None:
    """The dtype ``model``'s forwards autocast to, or None when they run in the parameters' own dtype
    (no compute dtype recorded, float32 recorded, or the parameters are already in it)."""
    dtype = getattr(_base(model), _ATTR, None)
    if dtype is None or dtype == torch.float32:
        return None
    param = next(model.parameters(), None)
    if param is None or not param.is_floating_point() or param.dtype == dtype:
        return None
    return dtype


def compute_autocast(model: torch.nn.Module) -> contextlib.AbstractContextManager:
    """``torch.autocast(<device type of model's parameters>, <compute dtype>)``, or a no-op context when
    :func:`autocast_dtype` is None. Enter it around forwards only."""
    dtype = autocast_dtype(model)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(next(model.parameters()).device.type, dtype=dtype)


def low_precision_adamw_warning(param_dtype: str) -> str | None:
    """The one-line warning for AdamW on ``param_dtype`` parameters (bfloat16 / float16), else None."""
    if param_dtype not in ("bfloat16", "float16"):
        return None
    return (f"model.dtype={param_dtype}: AdamW updates below {param_dtype} rounding are lost (at lr 1e-6 most "
            f"weights never change); fix: model.dtype=float32 model.compute_dtype={param_dtype} "
            "(float32 weights, low-precision compute)")
