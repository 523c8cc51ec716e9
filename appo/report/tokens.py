"""One row's response tokens as HTML: model tokens carrying their signals, tool calls and tool output
set apart, branch points marked.

Markup (kept small: a step page holds tens of thousands of tokens):

- a model token (``loss_mask`` 1) is ``<i data-v="H,Ω,BS,A,I">text</i>``: the signals of :data:`SIGNALS` in
  that order, 4 significant digits, an empty field where the row has no value (branch rows carry no Ω
  or BS; BS is null on tokens it does not score), trailing empty fields dropped. The page script colours
  tokens from ``data-v`` and writes the hover ``title`` on first hover (not stored per token);
- tokens of a tool call (``[call_start, call_end)``) sit in ``<span class="call" data-tool=NAME>``;
- tool output (``loss_mask`` 0) is one grey ``<span class="res" data-n=COUNT>`` per run of tokens, with a
  label, unshaded (it is not sampled, so it has no signal);
- a branch point: the parent's token at ``split`` gets class ``bp`` and an id, followed by one
  ``<a class="fork">`` marker per child linking to the child row.

All text is escaped (model output is untrusted); control characters are shown as ``\\xNN``, lone
surrogates as U+FFFD, newlines as a faint ``↵`` plus the line break.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from appo.report.run import num


@dataclass(frozen=True)
class Signal:
    """A per-token signal the page can shade tokens by."""

    key: str
    """Field of a dumped row holding the per-token list."""
    label: str
    """Name on the switch."""
    short: str
    """Abbreviation in hover text."""
    diverging: bool
    """Diverging scale around 0 (blue above, red below) instead of a sequential one."""
    help: str
    """One sentence for the page's legend."""


SIGNALS: tuple[Signal, ...] = (
    Signal("entropy", "entropy", "H", False, "entropy H_t of the next-token distribution when the token was sampled"),
    Signal("omega", "Ω (likelihood gain)", "Ω", False,
           "Omega_t: accumulated likelihood gain of the continuation after t (initial APPO rows only)"),
    Signal("score", "Branching Score", "BS", False,
           "BS_t = Z(H_t)·Z(Omega_t), the score branch points are chosen by (initial APPO rows; "
           "blank where a token is not a candidate)"),
    Signal("advantage", "advantage", "A", True, "token-level advantage used by the loss (blue > 0 > red)"),
    Signal("influence", "influence", "I", False, "per-token influence (only rows that carry an 'influence' list)"),
)
"""Signals in ``data-v`` order."""

_CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]|[\ud800-\udfff]")
CONTEXT_TOKENS = 10
"""Shared-prefix tokens shown (faint) before a branch row's own continuation."""


def _ctrl(m: re.Match) -> str:
    c = m.group(0)
    return "\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else f"\\x{ord(c):02x}"


def clean(text: Any) -> str:
    """``text`` as a safe printable string: control characters as ``\\xNN``, lone surrogates as U+FFFD
    (so the page is valid UTF-8). Not escaped; pass through :func:`esc` for HTML."""
    return _CTRL.sub(_ctrl, "" if text is None else str(text))


def esc(text: Any) -> str:
    """HTML-escaped :func:`clean` text (``& < > " '``), safe in element content and quoted attributes."""
    return html.escape(clean(text), quote=True)


def token_text(text: Any) -> str:
    """A model token's HTML: escaped; newlines as a faint ``↵`` plus the break, control characters as a
    faint ``\\xNN``, the empty token as a faint ``∅``."""
    raw = "" if text is None else str(text)
    if not raw:
        return "<u>∅</u>"
    if not _CTRL.search(raw):
        s = html.escape(raw, quote=True)
        return s.replace("\n", "<u>↵</u>\n") if "\n" in s else s
    out, pos = [], 0
    for m in _CTRL.finditer(raw):
        out.append(html.escape(raw[pos : m.start()], quote=True).replace("\n", "<u>↵</u>\n"))
        out.append(f"<u>{html.escape(_ctrl(m))}</u>")
        pos = m.end()
    out.append(html.escape(raw[pos:], quote=True).replace("\n", "<u>↵</u>\n"))
    return "".join(out)


def fmt(v: float | None) -> str:
    """A value for ``data-v``/titles: 4 significant digits, '' for None."""
    if v is None:
        return ""
    s = f"{v:.4g}"
    return "0" if s == "-0" else s


def signal_values(row: Mapping[str, Any], n: int) -> list[list[float | None]]:
    """Per signal of :data:`SIGNALS`, the row's values for its ``n`` tokens (None where missing)."""
    out = []
    for sig in SIGNALS:
        xs = row.get(sig.key)
        if not isinstance(xs, list):
            out.append([None] * n)
        else:
            out.append([num(xs[t]) if t < len(xs) else None for t in range(n)])
    return out


def signals_present(row: Mapping[str, Any]) -> list[str]:
    """Keys of the signals ``row`` carries with at least one finite value."""
    return [s.key for s in SIGNALS if isinstance(row.get(s.key), list) and any(num(x) is not None for x in row[s.key])]


def _span_at(spans: Sequence[Mapping[str, Any]], t: int, lo: str, hi: str) -> int | None:
    for k, s in enumerate(spans):
        a, b = s.get(lo), s.get(hi)
        if isinstance(a, int) and isinstance(b, int) and a <= t < b:
            return k
    return None


def render_tokens(row: Mapping[str, Any], anchor: str, forks: Mapping[int, Sequence[Mapping[str, Any]]],
                  child_anchor: Mapping[int, str], start: int = 0) -> str:
    """The ``.tx`` body of one row from response position ``start`` on (see the module docstring).

    ``anchor`` is the row's element id (split tokens get ``{anchor}t{t}``); ``forks`` maps a split
    position to the child rows forking there; ``child_anchor`` maps a child uid to its element id.
    """
    toks = row.get("tokens") or []
    n = len(toks)
    mask = row.get("loss_mask") or []
    spans = [s for s in (row.get("tool_spans") or []) if isinstance(s, Mapping)]
    vals = signal_values(row, n)
    out: list[str] = []
    buf: list[int] = []  # positions of a pending tool-output run
    call_open: int | None = None

    def flush() -> None:
        if not buf:
            return
        t0, t1 = buf[0], buf[-1]
        k = _span_at(spans, t0, "call_end", "result_end")
        name = spans[k].get("name", "tool") if k is not None else "tool"
        ok = spans[k].get("ok", True) if k is not None else True
        bp = " bp" if t1 in forks else ""
        ident = f' id="{anchor}t{t1}"' if t1 in forks else ""
        what = f"{name} result" + ("" if ok else " (failed)")
        title = f"{what} · tokens {t0}–{t1} · loss_mask 0 (tool output, not trained)"
        text = "".join(str(toks[t]) for t in buf).strip("\n")  # the box itself breaks the line
        out.append(f'<span class="res{"" if ok else " err"}{bp}"{ident} data-n="{len(buf)}" title="{esc(title)}">'
                   f'<b class="rl">{esc(what)} · {len(buf)} tok</b><span class="rt">{esc(text)}</span></span>')
        buf.clear()

    for t in range(start, n):
        c = _span_at(spans, t, "call_start", "call_end")
        if c != call_open:
            flush()
            if call_open is not None:
                out.append("</span>")
            if c is not None:
                ok = spans[c].get("ok", True)
                out.append(f'<span class="call{"" if ok else " err"}" data-tool="{esc(spans[c].get("name", "tool"))}">')
            call_open = c
        if t < len(mask) and mask[t] == 0:
            buf.append(t)
        else:
            flush()
            v = ",".join(fmt(vals[j][t]) for j in range(len(SIGNALS))).rstrip(",")
            cls = ' class="bp"' if t in forks else ""
            ident = f' id="{anchor}t{t}"' if t in forks else ""
            out.append(f'<i{cls}{ident} data-v="{v}">{token_text(toks[t])}</i>')
        if t in forks:
            flush()
            out.append(fork_markers(forks[t], child_anchor))
    flush()
    if call_open is not None:
        out.append("</span>")
    late = [c for t, cs in sorted(forks.items()) if t >= n for c in cs]  # a split past the row's end
    if late:
        out.append(fork_markers(late, child_anchor))
    return "".join(out)


def fork_markers(children: Sequence[Mapping[str, Any]], child_anchor: Mapping[int, str]) -> str:
    """One ``<a class="fork">`` per child forking after this token: ``⑂#uid``, title with its BS."""
    out = []
    for ch in children:
        uid = ch.get("uid")
        bs = num(ch.get("branch_score"))
        tip = f"branch #{uid} continues after this token (t={ch.get('split')})" + (
            f" · Branching Score {fmt(bs)}" if bs is not None else "")
        out.append(f'<a class="fork" href="#{esc(child_anchor.get(uid, ""))}" title="{esc(tip)}">↳#{esc(uid)}</a>')
    return "".join(out)


def context_html(row: Mapping[str, Any], split: int, parent_anchor: str, parent_uid: Any) -> str:
    """The faint tail of a branch row's shared prefix (its last :data:`CONTEXT_TOKENS` tokens up to and
    including ``split``), linking to the branch point on the parent."""
    toks = row.get("tokens") or []
    lo = max(0, split + 1 - CONTEXT_TOKENS)
    text = "".join(str(t) for t in toks[lo : split + 1])
    lead = "…" if lo > 0 else ""
    tip = f"shared prefix: tokens 0–{split} are the same as in #{parent_uid}; click to see the branch point"
    return (f'<a class="ctx" href="#{parent_anchor}t{split}" title="{esc(tip)}">{lead}'
            f'{esc(text).replace(chr(10), "↵")}</a>')
