"""Records of an influence analysis: its knobs, one record per analysed position and per rollout."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

GAMMA_FIPO = 2.0 ** (-1.0 / 64.0)
"""FIPO's discount 2^(-1/64) = 0.98923 (a half-life of 64 tokens)."""

OMEGA_VARIANTS = ("clipped,g=0.98923", "mean,g=1", "mean,g=0.98923", "sum,g=1", "sum,g=0.98923")
"""Omega variants scored next to the configured one when an anchor is given (docs/algorithm.md 3.1):
``form,g=gamma`` with form ``clipped`` / ``mean`` / ``sum`` (``appo.core.likelihood_gain``)."""


def parse_omega_variant(spec: str) -> tuple[str, float]:
    """``"form,g=gamma"`` (or ``"form"``: gamma 1) -> ``(form, gamma)``; raises ``ValueError`` naming the spec."""
    parts = [p.strip() for p in str(spec).split(",")]
    form, gamma = parts[0], 1.0
    for p in parts[1:]:
        key, _, val = p.partition("=")
        if key.strip() != "g":
            raise ValueError(f"omega variant {spec!r}: unknown part {p!r}; write 'form,g=gamma', e.g. 'sum,g=0.98923'")
        try:
            gamma = float(val)
        except ValueError:
            raise ValueError(f"omega variant {spec!r}: gamma {val!r} is not a number") from None
    if form not in ("clipped", "mean", "sum") or not 0 < gamma <= 1:
        raise ValueError(f"omega variant {spec!r}: form must be clipped, mean or sum and gamma in (0, 1]")
    return form, gamma


@dataclass(frozen=True)
class AnalysisConfig:
    """Knobs of :func:`appo.analysis.analyze` (the budget is ``positions x samples_per_position``
    continuations per rollout, each run through the agent loop to its end)."""

    rollouts_per_prompt: int = 2
    """Rollouts sampled per prompt (each is analysed)."""
    positions_per_rollout: int = 8
    """Strata of the stratified sample over a rollout's model tokens (one position per stratum);
    tool-call boundaries come on top when ``include_tool_boundaries``."""
    samples_per_position: int = 4
    """M: continuations re-drawn from each analysed position."""
    include_tool_boundaries: bool = True
    """Also analyse every tool-call boundary: the first token of each call and the token after each result."""
    paired: bool = False
    """Also run M continuations that *keep* token t (the training fork, prefix ``response[: t + 1]``), which
    gives the token's own effect ``|E[R | keep t] - E[R | re-draw t]|`` (doubles the budget)."""
    temperature: float = 1.0
    """Sampling temperature of rollouts and continuations (1.0: the policy itself)."""
    max_response_tokens: int = 256
    """Response budget per rollout (model and tool tokens), as ``LoopLimits.max_response_tokens``."""
    max_tool_calls: int = 3
    """Tool calls allowed per rollout (a continuation counts the calls in its prefix)."""
    on_tool_limit: Literal["stop", "message"] = "stop"
    """What a call past the limit does (``LoopLimits.on_tool_limit``)."""
    protocol: str = "tags"
    """Tool-call protocol (``tags`` or ``hermes``)."""
    system_prompt: str | None = None
    """System prompt: a name in ``appo.prompts.SYSTEM_PROMPTS`` or literal text; None keeps the data's
    own or the protocol's default."""
    omega_gamma: float = 1.0
    """Discount of Omega's likelihood-gain sum (as the APPO strategy)."""
    omega_clip_eps: float = 0.2
    """Omega is clipped to [1 - eps, 1 + eps] (as the APPO strategy)."""
    omega_variants: tuple[str, ...] = OMEGA_VARIANTS
    """Further Omega variants (``form,g=gamma``), each scored as ``omega[...]`` and ``bs[...]`` next to the
    configured one when an anchor is given (cheap: no extra continuations)."""
    bootstrap: int = 1000
    """Bootstrap resamples (over rollouts) for the precision@K intervals; 0 skips them."""
    precision_k: int | None = None
    """K of precision@K and of the top-K proximity share; None: 20% of the analysed positions."""
    near_tool_tokens: int = 5
    """N: a position within N tokens of a tool call counts as near one."""
    batch_size: int = 32
    """Continuations run through one agent loop at a time (its keys are released after each batch)."""
    seed: int = 0
    """Seeds rollouts, position sampling and continuations; the same seed gives the same JSON."""

    def __post_init__(self) -> None:
        checks = {"rollouts_per_prompt": 1, "positions_per_rollout": 0, "samples_per_position": 1,
                  "max_response_tokens": 1, "max_tool_calls": 0, "near_tool_tokens": 0, "batch_size": 1}
        for name, low in checks.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"AnalysisConfig.{name}={v!r} must be an integer >= {low}")
        for spec in self.omega_variants:
            parse_omega_variant(spec)
        if isinstance(self.bootstrap, bool) or not isinstance(self.bootstrap, int) or self.bootstrap < 0:
            raise ValueError(f"AnalysisConfig.bootstrap={self.bootstrap!r} must be an integer >= 0")
        if self.precision_k is not None and self.precision_k < 1:
            raise ValueError(f"AnalysisConfig.precision_k={self.precision_k} must be >= 1 or None (20%)")
        if not self.temperature > 0:
            raise ValueError(f"AnalysisConfig.temperature={self.temperature} must be > 0: with greedy decoding "
                             "every re-draw gives the same continuation and influence is always 0")


@dataclass(frozen=True)
class PositionRecord:
    """One analysed position t of one rollout."""

    group: int
    """Prompt index."""
    example_id: str
    """Id of the example the prompt came from."""
    rollout: int
    """uid of the rollout within its prompt."""
    t: int
    """Response position of the re-drawn token."""
    token: str
    """The token the rollout had at t (decoded on its own)."""
    region: str
    """``think``, ``tool_call``, ``answer`` or ``other`` (see ``positions.token_regions``)."""
    boundary: str | None
    """``call_start`` / ``after_result`` when t is a tool-call boundary, else None."""
    tool_distance: int | None
    """Tokens to the nearest tool call (0 inside a call or its result); None when the rollout has none."""
    entropy: float
    """H_t: entropy of the distribution token t was drawn from (the engine's, at the sampling temperature)."""
    logprob: float
    """Log-prob of the rollout's token t under that distribution."""
    omega: float
    """Omega_t, likelihood gain of the continuation from t (current vs anchor); 1.0 without an anchor."""
    bs: float | None
    """Branching Score Z(H_t) * Z(Omega_t) as APPO computes it; None where APPO would not score t
    (whitespace-only token, the last token, no budget after it)."""
    strict: bool | None
    """Whether t is a strict APPO candidate (Z(H) > 0 and Z(Omega) > 0, a degenerate factor's test
    dropped), which APPO picks before any other token; None where BS is None."""
    rel_position: float
    """t / response length (0 = first token)."""
    rollout_reward: float
    """R of the rollout."""
    branch_rewards: tuple[float, ...]
    """Rewards of the M continuations that re-drew token t."""
    influence: float
    """|mean(branch_rewards) - rollout_reward|."""
    keep_rewards: tuple[float, ...] = ()
    """With ``paired``: rewards of the M continuations that kept token t (training fork); else empty."""
    branch_same: tuple[bool, ...] = ()
    """Per re-draw, whether it drew the rollout's token t again (aligned with ``branch_rewards``)."""
    variant_scores: dict[str, float | None] = field(default_factory=dict)
    """Score name -> value at t for the Omega variants (``omega[form,g=..]`` and ``bs[form,g=..]``; BS None
    where APPO would not score t); empty without an anchor."""

    @property
    def branch_mean(self) -> float:
        """Mean reward of the re-draws (the Monte-Carlo estimate of E[R | branch at t] = V(s_t))."""
        return sum(self.branch_rewards) / len(self.branch_rewards)

    @property
    def branch_var(self) -> float:
        """Sample variance (ddof 1) of the re-draws' rewards; NaN when M = 1."""
        m = len(self.branch_rewards)
        if m < 2:
            return math.nan
        mu = self.branch_mean
        return sum((r - mu) ** 2 for r in self.branch_rewards) / (m - 1)

    @property
    def standard_error(self) -> float:
        """Monte-Carlo standard error of the branch mean, ``sqrt(branch_var / M)``; NaN when M = 1."""
        return math.sqrt(self.branch_var / len(self.branch_rewards)) if len(self.branch_rewards) > 1 else math.nan

    @property
    def keep_mean(self) -> float:
        """Mean reward of the continuations that kept token t (estimate of Q(s_t, a_t)); NaN unpaired."""
        return sum(self.keep_rewards) / len(self.keep_rewards) if self.keep_rewards else math.nan

    def _effect_groups(self) -> tuple[list[float], list[float]]:
        same = list(self.keep_rewards) + [r for r, s in zip(self.branch_rewards, self.branch_same) if s]
        other = [r for r, s in zip(self.branch_rewards, self.branch_same) if not s]
        return same, other

    @property
    def token_effect(self) -> float:
        """|Q(s_t, a_t) - V(s_t)|, the effect of the token the rollout drew at t (its advantage's magnitude);
        NaN unpaired.

        Estimated as ``(1 - pi_t) * |mean(same) - mean(other)|`` with ``pi_t = exp(logprob)``, ``same`` the
        keep continuations plus the re-draws that drew a_t again, ``other`` the re-draws that drew another
        token (``V = pi Q(a_t) + (1 - pi) Q(other)``, so ``Q(a_t) - V = (1 - pi)(Q(a_t) - Q(other))``). Unlike
        ``|keep_mean - branch_mean|`` it is 0 for a token the policy never re-draws differently, instead of
        the noise of two Monte-Carlo means; 0 when no re-draw drew another token (biased low when
        ``pi_t ** M`` is not small)."""
        if not self.keep_rewards:
            return math.nan
        same, other = self._effect_groups()
        if not other:
            return 0.0
        pi = math.exp(self.logprob)
        return (1.0 - pi) * abs(sum(same) / len(same) - sum(other) / len(other))

    @property
    def effect_standard_error(self) -> float:
        """Standard error of :attr:`token_effect`, ``(1 - pi) sqrt(var_same / n_same + var_other / n_other)``;
        NaN unpaired or when a group has fewer than 2 rewards."""
        same, other = self._effect_groups()
        if len(same) < 2 or len(other) < 2:
            return math.nan

        def var(xs: list[float]) -> float:
            mu = sum(xs) / len(xs)
            return sum((x - mu) ** 2 for x in xs) / (len(xs) - 1)

        return (1.0 - math.exp(self.logprob)) * math.sqrt(var(same) / len(same) + var(other) / len(other))

    def to_dict(self) -> dict:
        """JSON-ready dict with the derived mean, variance and standard error (floats rounded to 6
        decimals, NaN as None)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d.update(branch_mean=self.branch_mean, branch_var=self.branch_var, standard_error=self.standard_error,
                 keep_mean=self.keep_mean, token_effect=self.token_effect,
                 effect_standard_error=self.effect_standard_error)
        return {k: _round(v) for k, v in d.items()}


@dataclass(frozen=True)
class RolloutRecord:
    """One analysed rollout."""

    group: int
    """Prompt index."""
    uid: int
    """Rollout index within the prompt."""
    example_id: str
    """Id of the example."""
    reward: float
    """R of the rollout."""
    stop_reason: str
    """Why it ended."""
    n_tokens: int
    """Response tokens (model and tool)."""
    n_model_tokens: int
    """Tokens the model wrote."""
    tool_spans: tuple[tuple[int, int, int, str], ...]
    """``(call_start, call_end, result_end, tool name)`` per call."""
    positions: tuple[int, ...]
    """The analysed positions, sorted."""

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {k: _round(getattr(self, k)) for k in self.__dataclass_fields__}


def _round(v):
    if isinstance(v, float):
        return round(v, 6) if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _round(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_round(x) for x in v]
    return v
