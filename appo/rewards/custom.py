"""User reward functions loaded from ``path/to/file.py:function`` or ``package.module:function``, in verl's,
TRL's or appo's signature.

The signature is told apart by parameter names (``inspect.signature``):

- **verl** (has ``solution_str`` and ``ground_truth``):
  ``compute_score(data_source, solution_str, ground_truth, extra_info=None) -> float | dict``, called once
  per response with keywords. ``ground_truth`` is the example's single answer, or the list of aliases
  when it has several; ``extra_info`` is ``example.extra_info``. A dict must hold ``score``; its other
  numeric entries become metrics.
- **TRL** (has ``completions``): ``f(prompts, completions, **kwargs) -> list[float | None]``, called once per
  batch with ``prompts`` = the questions (plain strings) and ``completions`` = the responses (plain
  strings), plus columns as keyword lists: ``answers`` (alias lists), ``ground_truth`` (as for verl),
  ``data_source``, ``id``, ``kind``, ``metric``, ``extra_info``, and each ``extra_info`` key that does
  not clash with those (missing -> None). A function without ``**kwargs`` receives only the columns it
  names. ``None`` means "this function does not apply to this sample" in TRL; appo has one reward per
  row, so a None becomes score 0.0 with metric ``skipped = 1`` (so the rate is visible in the logs).
- **appo** (parameters ``examples, responses``): the native :class:`~appo.rewards.base.RewardFn`.

Errors name the file, the function, and the fix. Exceptions raised by the user's function propagate
with the spec and the example id added (a broken reward should stop a run, not score 0).
"""

from __future__ import annotations

import inspect
import numbers
from typing import Any, Callable, Sequence

from appo.plugins import load_plugin
from appo.rewards.base import RewardOutput
from appo.types import Example

VERL_PARAMS = ("data_source", "solution_str", "ground_truth", "extra_info")
TRL_COLUMNS = ("answers", "ground_truth", "data_source", "id", "kind", "metric", "extra_info")
_HOW = (
    "write it as verl's compute_score(data_source, solution_str, ground_truth, extra_info=None), "
    "TRL's f(prompts, completions, **kwargs), or appo's f(examples, responses)"
)

def _scalar(value: Any) -> Any:
    """numpy / torch scalars -> Python numbers; anything else unchanged."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        try:
            return value.item()
        except (TypeError, ValueError):
            return value
    return value


def _ground_truth(example: Example) -> Any:
    return example.answers[0] if len(example.answers) == 1 else list(example.answers)


def _detect_style(fn: Callable, spec: str) -> tuple[str, inspect.Signature]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"custom reward {spec!r}: cannot read its signature ({exc}); {_HOW}") from exc
    params = sig.parameters
    if "solution_str" in params and "ground_truth" in params:
        style = "verl"
        known = set(VERL_PARAMS)
    elif "completions" in params:
        style = "trl"
        known = {"prompts", "completions", *TRL_COLUMNS}
    elif list(params)[:2] == ["examples", "responses"]:
        return "appo", sig
    else:
        raise TypeError(f"custom reward {spec!r}: cannot tell its signature from {list(params)}; {_HOW}")
    for name, p in params.items():
        required = p.default is inspect.Parameter.empty and p.kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        )
        if required and name not in known and style == "verl":
            raise TypeError(
                f"custom reward {spec!r}: required parameter {name!r} is not one appo passes to a verl "
                f"compute_score ({', '.join(VERL_PARAMS)}); give it a default or remove it"
            )
        if p.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise TypeError(f"custom reward {spec!r}: parameter {name!r} is positional-only; appo calls by keyword")
    return style, sig


class CustomReward:
    """A user function wrapped as a :class:`~appo.rewards.base.RewardFn`."""

    def __init__(self, fn: Callable, spec: str, style: str, sig: inspect.Signature):
        self.fn, self.spec, self.style, self.sig = fn, spec, style, sig
        self._var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())

    def __repr__(self) -> str:
        return f"CustomReward({self.spec!r}, style={self.style!r})"

    def __call__(self, examples: Sequence[Example], responses: Sequence[str]) -> list[RewardOutput]:
        """Score a batch by calling the user's function in its own signature."""
        if len(examples) != len(responses):
            raise ValueError(f"custom reward {self.spec!r}: {len(examples)} examples but {len(responses)} responses")
        if self.style == "verl":
            return [self._verl_one(ex, resp) for ex, resp in zip(examples, responses)]
        if self.style == "trl":
            return self._trl(examples, responses)
        out = self.fn(examples, responses)
        if len(out) != len(examples) or not all(isinstance(o, RewardOutput) for o in out):
            raise TypeError(f"custom reward {self.spec!r} must return one RewardOutput per response")
        return list(out)

    def _verl_one(self, ex: Example, response: str) -> RewardOutput:
        values = {
            "data_source": ex.data_source, "solution_str": response,
            "ground_truth": _ground_truth(ex), "extra_info": dict(ex.extra_info),
        }
        kwargs = values if self._var_kw else {k: v for k, v in values.items() if k in self.sig.parameters}
        try:
            result = self.fn(**kwargs)
        except Exception as exc:
            raise RuntimeError(f"custom reward {self.spec!r} raised on example {ex.id!r}: {exc!r}") from exc
        return self._to_output(result, ex.id)

    def _trl(self, examples: Sequence[Example], responses: Sequence[str]) -> list[RewardOutput]:
        columns: dict[str, list] = {
            "answers": [list(ex.answers) for ex in examples],
            "ground_truth": [_ground_truth(ex) for ex in examples],
            "data_source": [ex.data_source for ex in examples],
            "id": [ex.id for ex in examples],
            "kind": [ex.kind for ex in examples],
            "metric": [ex.metric for ex in examples],
            "extra_info": [dict(ex.extra_info) for ex in examples],
        }
        extra_keys = sorted({k for ex in examples for k in ex.extra_info} - set(columns) - {"prompts", "completions"})
        for key in extra_keys:
            columns[key] = [ex.extra_info.get(key) for ex in examples]
        kwargs = {"prompts": [ex.question for ex in examples], "completions": list(responses), **columns}
        if not self._var_kw:
            kwargs = {k: v for k, v in kwargs.items() if k in self.sig.parameters}
        missing = [
            n for n, p in self.sig.parameters.items()
            if p.default is inspect.Parameter.empty and n not in kwargs
            and p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
        ]
        if missing:
            raise TypeError(
                f"custom reward {self.spec!r}: appo has no column {missing} for it (columns: prompts, completions, "
                f"{', '.join(columns)}); give those parameters defaults or read them from **kwargs"
            )
        try:
            result = self.fn(**kwargs)
        except Exception as exc:
            raise RuntimeError(f"custom reward {self.spec!r} raised on a batch of {len(examples)}: {exc!r}") from exc
        if not isinstance(result, (list, tuple)) or len(result) != len(examples):
            raise TypeError(
                f"custom reward {self.spec!r} (TRL style) returned {type(result).__name__}"
                f"{'' if not hasattr(result, '__len__') else f' of length {len(result)}'}; "
                f"return a list of {len(examples)} floats (None to skip a sample)"
            )
        out = []
        for ex, value in zip(examples, result):
            if value is None:
                out.append(RewardOutput(0.0, {"skipped": 1.0}))
            else:
                output = self._to_output(value, ex.id)
                out.append(RewardOutput(output.score, {**output.metrics, "skipped": 0.0}))
        return out

    def _to_output(self, result: Any, example_id: str) -> RewardOutput:
        result = _scalar(result)
        if isinstance(result, numbers.Real):
            return RewardOutput(float(result), {})
        if isinstance(result, dict) and isinstance(_scalar(result.get("score")), numbers.Real):
            values = {k: _scalar(v) for k, v in result.items()}
            metrics = {k: float(v) for k, v in values.items() if k != "score" and isinstance(v, numbers.Real)}
            return RewardOutput(float(values["score"]), metrics)
        raise TypeError(
            f"custom reward {self.spec!r} returned {result!r} for example {example_id!r}; "
            "return a number or a dict with a numeric 'score'"
        )


def load_custom_reward(spec: str) -> CustomReward:
    """Load ``path/to/file.py:function`` (the file is executed on each call) or ``package.module:function``
    (:func:`appo.plugins.load_plugin`) and wrap it as a RewardFn."""
    fn = load_plugin(spec, callable, label=f"custom reward {spec!r}", noun="function")
    style, sig = _detect_style(fn, spec)
    return CustomReward(fn, spec, style, sig)
