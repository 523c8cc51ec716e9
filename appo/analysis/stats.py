"""Summary statistics of an influence analysis: rank correlation, precision@K, closeness to tool calls.

Pure functions over plain lists (one entry per analysed position), so every number in a summary can be
checked by hand. Conventions, chosen here and used everywhere in :mod:`appo.analysis`:

- **Missing values** (None / NaN / inf, e.g. the Branching Score of a token APPO does not score): a
  rank correlation uses only the positions where both values are finite; precision@K ranks a missing
  score below every finite one (so all scores are judged on the same positions and the same K).
- **Ties** (influence takes few distinct values when rewards are discrete and M is small): ranks are
  averaged for Spearman's rho; the top-K set is *fractional* at its boundary. With ``a`` values strictly
  above the K-th largest and ``b`` values equal to it, each tied value is in the top K with weight
  ``(K - a) / b`` (the probability under a uniformly random tie-break). precision@K of a score is the
  expected overlap ``sum_i w_infl_i * w_score_i / K`` of the two top-K sets with independent
  tie-breaks; a random score has expected precision ``K / n``.
- **Intervals** (:func:`bootstrap_precision`): a cluster bootstrap over rollouts (positions of one rollout
  share its reward and its continuations' luck, so they are resampled together); each resample recomputes
  K by the same rule and every score's precision@K on the same resampled positions, so the difference of
  two scores gets a paired interval. Percentile intervals (2.5%, 97.5%).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

SCORES = ("entropy", "omega", "bs", "appo_order", "surprisal", "earliness")
"""The per-position scores compared against influence, in table order: H_t, Omega_t, BS_t; ``appo_order``,
the order in which APPO's ``select_branch_points`` picks (strict candidates by BS, then the others by
BS); ``surprisal`` = -log pi(a_t) of the token the rollout drew (H_t is its expectation); ``earliness`` =
1 - t / length, a baseline that knows nothing but the position."""


def finite(x) -> bool:
    """Whether ``x`` is a real finite number (not None, NaN or inf)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks of ``values`` (ascending), tied values sharing the mean of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; NaN when fewer than 2 pairs or either side has no variance."""
    n = len(x)
    if n != len(y):
        raise ValueError(f"pearson: x has {n} values, y has {len(y)}; pass paired lists")
    if n < 2:
        return math.nan
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx <= 0 or syy <= 0:
        return math.nan
    return sxy / math.sqrt(sxx * syy)


def spearman(x: Sequence, y: Sequence) -> tuple[float, int]:
    """Spearman's rho (Pearson correlation of average ranks) over the pairs where both are finite.

    Returns ``(rho, n_pairs)``; rho is NaN when fewer than 3 pairs remain or one side is constant (then
    it is undefined: a constant score cannot rank anything).
    """
    if len(x) != len(y):
        raise ValueError(f"spearman: x has {len(x)} values, y has {len(y)}; pass paired lists")
    pairs = [(float(a), float(b)) for a, b in zip(x, y) if finite(a) and finite(b)]
    if len(pairs) < 3:
        return math.nan, len(pairs)
    xs, ys = zip(*pairs)
    return pearson(average_ranks(xs), average_ranks(ys)), len(pairs)


def topk_weights(values: Sequence, k: int) -> list[float]:
    """Fractional membership of each value in the top ``k`` (largest first; see module docstring).

    Missing values count as -inf. Weights sum to ``min(k, n)``.
    """
    if k < 0:
        raise ValueError(f"k={k} must be >= 0")
    vals = [float(v) if finite(v) else -math.inf for v in values]
    n = len(vals)
    k = min(k, n)
    if k == 0:
        return [0.0] * n
    kth = sorted(vals, reverse=True)[k - 1]
    above = sum(v > kth for v in vals)
    tied = sum(v == kth for v in vals)
    w_tie = (k - above) / tied
    return [1.0 if v > kth else w_tie if v == kth else 0.0 for v in vals]


def precision_at_k(influence: Sequence, score: Sequence, k: int) -> float:
    """Expected share of the ``k`` most influential positions among the ``k`` top-scored ones (ties
    fractional, see module docstring); NaN when ``k == 0`` or no score is finite."""
    if len(influence) != len(score):
        raise ValueError(f"precision_at_k: {len(influence)} influence values but {len(score)} scores")
    k = min(k, len(influence))
    if k == 0 or not any(finite(s) for s in score):
        return math.nan
    wi, ws = topk_weights(influence, k), topk_weights(score, k)
    return sum(a * b for a, b in zip(wi, ws)) / k


def default_k(n: int, n_positive: int | None = None) -> int:
    """K used when none is given: 20% of the analysed positions, at least 1 (0 when there are none), and no
    more than the ``n_positive`` positions whose target is above 0 when some are (a top K padded with
    zero-influence ties would only measure how the scores order the ties)."""
    k = 0 if n == 0 else max(1, round(0.2 * n))
    return min(k, n_positive) if n_positive else k


@dataclass(frozen=True)
class Summary:
    """The numbers of an analysis, as :func:`summarize` computes them (JSON-ready via :meth:`to_dict`)."""

    n_positions: int
    """Analysed positions."""
    k: int
    """K of precision@K and of the top-K proximity share."""
    n_positive: int
    """Positions whose target (influence or effect) is above 0."""
    near_tool_tokens: int
    """N: a position is *near* a tool call when its distance to one is at most N tokens."""
    spearman: dict[str, float]
    """Score name -> Spearman rho with influence (NaN when undefined, e.g. a constant Omega)."""
    spearman_n: dict[str, int]
    """Score name -> number of positions the correlation used (both values finite)."""
    spearman_within: dict[str, float]
    """Score name -> mean over rollouts of the Spearman rho computed within each rollout (rollouts where
    it is defined); pooled rho also mixes rollouts with different rewards and entropy levels."""
    spearman_within_n: dict[str, int]
    """Score name -> rollouts whose within-rollout rho was defined (averaged in ``spearman_within``)."""
    precision_at_k: dict[str, float]
    """Score name -> precision@K against the top-K influential positions."""
    random_precision: float
    """Expected precision@K of a random score, ``K / n``."""
    near_share_topk: float
    """Share of the top-K influential positions (fractional at ties) within N tokens of a tool call."""
    near_share_all: float
    """Share of all analysed positions within N tokens of a tool call."""
    region_influence: dict[str, dict[str, float]]
    """Region -> {``n``: positions, ``mean``: mean influence, ``topk_share``: share of the top K}."""
    mean_influence: float
    """Mean influence over the analysed positions."""
    mean_standard_error: float
    """Mean Monte-Carlo standard error of the branch means, ``sqrt(var / M)`` (NaN when M = 1)."""
    notes: tuple[str, ...] = field(default_factory=tuple)
    """Sentences qualifying the numbers (constant scores, too few positions, ...)."""
    along: dict[str, dict[str, float]] = field(default_factory=dict)
    """Where along the response (``t / length``, bins of :data:`ALONG_BINS`) -> {``n``: positions, ``mean``:
    mean target, ``share``: share of the summed target there}; empty when positions were not given."""
    bootstrap: int = 0
    """Bootstrap resamples behind the intervals (0: none computed)."""
    precision_ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Score name -> 95% bootstrap interval of its precision@K (empty without bootstrap)."""
    precision_vs_entropy_ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Score name -> 95% paired bootstrap interval of precision@K(score) - precision@K(entropy)."""

    def to_dict(self) -> dict:
        """A JSON-ready dict (NaN written as None)."""
        return _jsonable(asdict(self))


def _jsonable(x):
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


ALONG_BINS = (("opening", 0.0, 0.1), ("early", 0.1, 0.4), ("middle", 0.4, 0.7), ("late", 0.7, 1.01))
"""Bins of the relative position ``t / length`` for :func:`along_response`: the first 10% of the response
(the opening decision), then three spans of 30%."""


def along_response(target: Sequence[float], rel_position: Sequence[float]) -> dict[str, dict[str, float]]:
    """Per bin of :data:`ALONG_BINS`: positions, mean target, and the bin's share of the summed target
    (NaN shares when the target is 0 everywhere). Says *where* in a rollout the outcome is decided."""
    if len(target) != len(rel_position):
        raise ValueError(f"along_response: {len(target)} targets but {len(rel_position)} positions")
    total = sum(target)
    out = {}
    for name, lo, hi in ALONG_BINS:
        idx = [i for i, r in enumerate(rel_position) if lo <= r < hi]
        mass = sum(target[i] for i in idx)
        out[name] = {"n": float(len(idx)), "mean": mass / len(idx) if idx else math.nan,
                     "share": mass / total if total > 0 else math.nan}
    return out


def spearman_within(influence: Sequence[float], score: Sequence, rollout: Sequence) -> tuple[float, int]:
    """Mean of the per-rollout Spearman rho (positions grouped by ``rollout`` keys) over the rollouts
    where it is defined; ``(NaN, 0)`` when it is defined in none."""
    groups: dict = {}
    for i, key in enumerate(rollout):
        groups.setdefault(key, []).append(i)
    rhos = [r for idx in groups.values()
            for r in [spearman([influence[i] for i in idx], [score[i] for i in idx])[0]] if not math.isnan(r)]
    return (sum(rhos) / len(rhos), len(rhos)) if rhos else (math.nan, 0)


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(x for x in xs if finite(x))
    if not xs:
        return math.nan
    pos = q * (len(xs) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def bootstrap_precision(influence: Sequence[float], scores: Mapping[str, Sequence], rollout: Sequence, *,
                        k: int | None = None, resamples: int = 1000, seed: int = 0,
                        baseline: str = "entropy") -> tuple[dict[str, tuple[float, float]],
                                                            dict[str, tuple[float, float]]]:
    """95% cluster-bootstrap intervals of precision@K per score, and of its paired difference to
    ``baseline`` (module docstring). Rollouts (``rollout`` keys) are drawn with replacement; K is ``k``
    (capped at the resample's size) or :func:`default_k` of the resample. Returns ``(ci, diff_ci)``;
    ``diff_ci`` is empty when ``baseline`` is not among the scores. Deterministic for a ``seed``."""
    import random

    groups: dict = {}
    for i, key in enumerate(rollout):
        groups.setdefault(key, []).append(i)
    keys = list(groups)
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {name: [] for name in scores}
    diffs: dict[str, list[float]] = {name: [] for name in scores if name != baseline}
    for _ in range(resamples if keys else 0):
        idx = [i for key in (rng.choice(keys) for _ in keys) for i in groups[key]]
        infl = [influence[i] for i in idx]
        kb = min(k, len(idx)) if k is not None else default_k(len(idx), sum(v > 0 for v in infl))
        if kb == 0:
            continue
        wi = topk_weights(infl, kb)
        prec = {}
        for name, xs in scores.items():
            sc = [xs[i] for i in idx]
            prec[name] = (math.nan if not any(finite(v) for v in sc)
                          else sum(a * b for a, b in zip(wi, topk_weights(sc, kb))) / kb)
            samples[name].append(prec[name])
        if baseline in prec:
            for name in diffs:
                diffs[name].append(prec[name] - prec[baseline])
    ci = {name: (_percentile(v, 0.025), _percentile(v, 0.975)) for name, v in samples.items()}
    diff_ci = ({name: (_percentile(v, 0.025), _percentile(v, 0.975)) for name, v in diffs.items()}
               if baseline in scores else {})
    return ci, diff_ci


def summarize(influence: Sequence[float], scores: Mapping[str, Sequence], distance: Sequence[int | None],
              region: Sequence[str], *, k: int | None = None, near_tool_tokens: int = 5,
              standard_error: Sequence | None = None, rollout: Sequence | None = None,
              bootstrap: int = 0, seed: int = 0, rel_position: Sequence[float] | None = None) -> Summary:
    """Summary of per-position lists (all the same length): Spearman rho (pooled, and averaged within
    rollouts when ``rollout`` keys are given) and precision@K of each score against ``influence``, the
    top-K vs overall share of positions within ``near_tool_tokens`` of a tool call (``distance`` None =
    the rollout has no call: not near), mean influence per region, and (with ``rel_position``, ``t / length``
    per position) how the influence is spread along the response (:func:`along_response`). ``k`` defaults to
    :func:`default_k`. ``bootstrap`` > 0 adds 95% intervals of precision@K and of its difference to
    entropy (:func:`bootstrap_precision`, resampling rollouts). Leaves out: significance tests."""
    n = len(influence)
    rollout = list(rollout) if rollout is not None else [0] * n
    for name, xs in [*scores.items(), ("distance", distance), ("region", region), ("rollout", rollout)]:
        if len(xs) != n:
            raise ValueError(f"summarize: {name} has {len(xs)} entries for {n} influence values")
    if not all(finite(v) for v in influence):
        raise ValueError("summarize: every influence value must be a finite number")
    k_given = k
    k = default_k(n, sum(v > 0 for v in influence)) if k is None else min(int(k), n)
    notes: list[str] = []
    rho, rho_n, prec, within, within_n = {}, {}, {}, {}, {}
    for name, xs in scores.items():
        rho[name], rho_n[name] = spearman(influence, xs)
        within[name], within_n[name] = spearman_within(influence, xs, rollout)
        prec[name] = precision_at_k(influence, xs, k)
        vals = {float(v) for v in xs if finite(v)}
        if len(vals) <= 1:
            notes.append(f"{name} is constant over the analysed positions: its correlation is undefined and "
                         "its top K is a pure tie (precision equals the random baseline)")
    if n and len(set(influence)) == 1:
        notes.append("influence is the same at every analysed position: no score can rank it")
    w = topk_weights(influence, k)
    near = [d is not None and d <= near_tool_tokens for d in distance]
    regions: dict[str, dict[str, float]] = {}
    for r in sorted(set(region)):
        idx = [i for i in range(n) if region[i] == r]
        regions[r] = {"n": float(len(idx)), "mean": sum(influence[i] for i in idx) / len(idx),
                      "topk_share": sum(w[i] for i in idx) / k if k else math.nan}
    se = [float(s) for s in (standard_error or []) if finite(s)]
    if n < 10:
        notes.append(f"only {n} positions were analysed: treat the correlations as anecdotes")
    ci, diff_ci = (bootstrap_precision(influence, scores, rollout, k=k_given, resamples=bootstrap, seed=seed)
                   if bootstrap > 0 and n else ({}, {}))
    return Summary(
        n_positions=n, k=k, n_positive=sum(v > 0 for v in influence), near_tool_tokens=near_tool_tokens,
        spearman=rho, spearman_n=rho_n,
        spearman_within=within, spearman_within_n=within_n,
        precision_at_k=prec, random_precision=k / n if n else math.nan,
        near_share_topk=sum(wi for wi, a in zip(w, near) if a) / k if k else math.nan,
        near_share_all=sum(near) / n if n else math.nan, region_influence=regions,
        mean_influence=sum(influence) / n if n else math.nan,
        mean_standard_error=sum(se) / len(se) if se else math.nan, notes=tuple(notes),
        bootstrap=bootstrap if ci else 0, precision_ci=ci, precision_vs_entropy_ci=diff_ci,
        along=along_response(influence, rel_position) if rel_position is not None else {})


def _f(x: float, spec: str = ".3f") -> str:
    return "n/a" if not finite(x) else format(x, spec)


def format_summary(s: Summary, header: Sequence[str] = (), target: str = "influence") -> str:
    """The summary as a plain-text table (what ``appo analyze`` prints and saves as ``summary.txt``);
    ``target`` names what the scores are compared against."""
    lines = list(header)
    lines.append(f"positions analysed: {s.n_positions} ({s.n_positive} with {target} > 0); K = {s.k}; near = "
                 f"within {s.near_tool_tokens} tokens of a tool call")
    w = max([10, *(len(name) for name in s.spearman)])
    ci_head = f" {'95% CI':>15} {'minus entropy [95% CI]':>24}" if s.precision_ci else ""
    lines.append(f"{'score':<{w}} {f'spearman({target}, .)':>24} {'n':>5} {'within rollouts':>16} {'rollouts':>8} "
                 f"{'precision@K':>12}{ci_head}")
    for name in s.spearman:
        ci = ""
        if s.precision_ci:
            lo, hi = s.precision_ci.get(name, (math.nan, math.nan))
            interval = f"[{_f(lo)}, {_f(hi)}]"
            ci = f" {interval:>15}"
            if name in s.precision_vs_entropy_ci:
                dlo, dhi = s.precision_vs_entropy_ci[name]
                d = s.precision_at_k[name] - s.precision_at_k.get("entropy", math.nan)
                diff = f"{_f(d, '+.3f')} [{_f(dlo, '+.3f')}, {_f(dhi, '+.3f')}]"
                ci += f" {diff:>24}"
        lines.append(f"{name:<{w}} {_f(s.spearman[name], '+.3f'):>24} {s.spearman_n[name]:>5} "
                     f"{_f(s.spearman_within[name], '+.3f'):>16} {s.spearman_within_n[name]:>8} "
                     f"{_f(s.precision_at_k[name]):>12}{ci}")
    lines.append(f"{'random':<{w}} {'':>24} {'':>5} {'':>16} {'':>8} {_f(s.random_precision):>12}")
    if s.precision_ci:
        lines.append(f"intervals: {s.bootstrap} bootstrap resamples of the rollouts (percentile, paired for the "
                     "difference to entropy)")
    lines.append(f"near a tool call: top-K by {target} {_f(s.near_share_topk)} vs all analysed "
                 f"{_f(s.near_share_all)}")
    lines.append(f"mean {target} {_f(s.mean_influence)} (mean MC standard error {_f(s.mean_standard_error)})")
    lines.append(f"{'region':<10} {'n':>5} {'mean ' + target:>15} {'share of top K':>15}")
    for r, d in s.region_influence.items():
        lines.append(f"{r:<10} {int(d['n']):>5} {_f(d['mean']):>15} {_f(d['topk_share']):>15}")
    if s.along:
        lines.append(f"{'along':<10} {'n':>5} {'mean ' + target:>15} {'share of sum':>15}   "
                     "(t / length: opening < 0.1, early < 0.4, middle < 0.7, late)")
        for r, d in s.along.items():
            lines.append(f"{r:<10} {int(d['n']):>5} {_f(d['mean']):>15} {_f(d['share']):>15}")
    lines += [f"note: {n}" for n in s.notes]
    return "\n".join(lines)
