"""One dumped step as a self-contained HTML page: per prompt, the question, the reference answers, the
tree overview and every row nested under its parent, with shaded tokens (see :mod:`appo.report.tokens`
for the token markup and :mod:`appo.report.assets` for the colour switch and its normalisation).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

from appo.report.assets import CSS, page_script
from appo.report.run import num
from appo.report.tokens import SIGNALS, context_html, esc, fmt, fork_markers, render_tokens, signals_present
from appo.report.tree import Node, anchor_id, build_tree, decision_table, is_fork, prompt_anchor, reward_color, tree_svg

MAX_ROW_METRICS = 8
"""Reward metrics shown in a row header (the rest are in its title)."""
EMPTY_STEP = '<p class="note">This step dump holds no prompts.</p>'


def step_filename(step: int) -> str:
    """File name of a step page (``step_000012.html``)."""
    return f"step_{int(step):06d}.html"


def page(title: str, body: str, script: str = "") -> str:
    """A complete HTML document with the report's inline CSS (and ``script`` inline at the end)."""
    js = f"<script>{script}</script>" if script else ""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>{body}{js}</body></html>")


def _mean(xs: Sequence[float | None]) -> float | None:
    v = [x for x in xs if x is not None]
    return sum(v) / len(v) if v else None


def _rows(prompt: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [r for r in (prompt.get("rows") or []) if isinstance(r, Mapping)]


def step_summary(prompts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts and means of a step's prompts: rows, initial/branch rows, mean rewards, stop reasons."""
    rows = [r for p in prompts for r in _rows(p)]
    init = [r for r in rows if not is_fork(r)]
    br = [r for r in rows if is_fork(r)]
    return {
        "prompts": len(prompts), "rows": len(rows), "initial": len(init), "branch": len(br),
        "reward_initial": _mean([num(r.get("reward")) for r in init]),
        "reward_branch": _mean([num(r.get("reward")) for r in br]),
        "tokens_mean": _mean([float(len(r.get("tokens") or [])) for r in rows]),
        "stops": Counter(str(r.get("stop_reason", "?")) for r in rows),
    }


def _controls(present: set[str]) -> str:
    default = next((k for k in ("score", "entropy", "advantage", "omega", "influence") if k in present), "none")
    radios = []
    for s in SIGNALS:
        off = s.key not in present
        tip = s.help if not off else f"no row on this page carries {s.key}"
        radios.append(f'<label class="{"off" if off else ""}" title="{esc(tip)}">'
                      f'<input type="radio" name="sig" value="{s.key}"{" checked" if s.key == default else ""}'
                      f'{" disabled" if off else ""}> {esc(s.label)}</label>')
    none_on = " checked" if default == "none" else ""
    radios.append(f'<label><input type="radio" name="sig" value="none"{none_on}> none</label>')
    scope = ('<label title="one range for all tokens on the page: colours compare across rows">'
             '<input type="radio" name="scope" value="page" checked> per page</label>'
             '<label title="each row uses its own range (shown in the row header)">'
             '<input type="radio" name="scope" value="row"> per row</label>')
    legend = ('<span class="lgd"><span id="lg-lo"></span><span class="grad" id="lg-grad"></span>'
              '<span id="lg-hi"></span><span class="muted" id="lg-note"></span></span>')
    return (f'<div class="bar"><fieldset><legend>Shade tokens by</legend>{"".join(radios)}</fieldset>'
            f'<fieldset><legend>Scale</legend>{scope}</fieldset>{legend}'
            f'<label><input type="checkbox" id="ct"> collapse tool output</label>'
            f'<div id="readout" class="muted">hover a token to see its values</div></div>')


HELP = (
    "<details class='help card'><summary>How to read this page</summary><ul>"
    "<li>Each prompt shows its <b>initial rollouts</b> (grey left rule) with their <b>branches</b> (purple rule) "
    "nested underneath, ordered by split position. A branch row shares its parent's tokens 0..t and shows "
    "only its own continuation after <b>t</b>, preceded by the faint tail of the shared prefix (click it to jump "
    "to the branch point).</li>"
    "<li>On a parent row, a <b>branch point</b> is the outlined token followed by a purple "
    "<span class='fork'>↳#uid</span> marker per branch that continues after it (click to jump to the branch). "
    "The branch's header shows its split <b>t</b> and the <b>Branching Score</b> of that point.</li>"
    "<li><span class='call' data-tool='tool'>tool call</span> tokens are boxed in green (red if the call failed); "
    "tool output (loss_mask 0, written by the tool, not trained) is a grey box and is never shaded.</li>"
    "<li>The tree diagram above the rows draws each row as a bar over its own tokens (colour = reward: blue "
    "above 0, red below), grey boxes over tool output and purple ticks at branch points; click a bar to jump "
    "to its row. The <b>Decision points</b> table lists every branch point, highest Branching Score first, "
    "with the parent's token at t, its entropy and Ω, and the rewards of parent and branch.</li>"
    "<li><b>Shading</b>: __SIGNALS__ Sequential signals go from unshaded (lowest) to dark orange (highest); "
    "advantage is diverging: blue above 0, red below, unshaded at 0. <b>Per page</b> uses one range over all "
    "tokens shown on the page, so colours compare across rows; <b>per row</b> stretches each row's own range "
    "(written in its header). Hover a token for its values (position t and every signal it has).</li></ul></details>"
)


def _help() -> str:
    items = "".join(f"<b>{esc(s.label)}</b>: {esc(s.help)}. " for s in SIGNALS)
    return HELP.replace("__SIGNALS__", items)


def row_html(node: Node, group: Any, reward_scale: float) -> str:
    """A row (header, tokens, and its branches nested in ``.kids``), recursively."""
    r = node.row
    uid = r.get("uid")
    a = anchor_id(group, uid)
    toks = r.get("tokens") or []
    mask = r.get("loss_mask") or []
    n = len(toks)
    fork = is_fork(r)
    split = r["split"] if fork else -1
    start = min(split + 1, n) if fork else 0
    reward = num(r.get("reward"))
    parent_a = anchor_id(group, r.get("parent")) if fork else ""

    forks: dict[int, list] = {}
    for c in node.children:
        forks.setdefault(c.row["split"], []).append(c.row)
    child_anchor = {c.row.get("uid"): anchor_id(group, c.row.get("uid")) for c in node.children}
    early = [c for t, cs in sorted(forks.items()) if t < start for c in cs]  # forks inside the shared prefix

    h = [f'<span class="uid">#{esc(uid)}</span>']
    if fork:
        h.append(f'<span class="tag br">branch of <a href="#{parent_a}t{split}">#{esc(r.get("parent"))} '
                 f'after t={split}</a></span>')
        bs = num(r.get("branch_score"))
        if bs is not None:
            h.append(f'<span class="tag bs" title="Branching Score of the parent at t={split}">'
                     f'BS {esc(fmt(bs))}</span>')
    else:
        h.append(f'<span class="tag">{esc(r.get("origin", "initial"))}</span>')
    if r.get("trained") is not None:  # dumps before the field existed carry no value
        h.append('<span class="tag" title="the loss trained on this row">trained</span>' if r["trained"] else
                 '<span class="tag" title="signal only: the loss did not train on this row">not trained</span>')
    h.append(f'<span class="tag rw" style="background:{reward_color(reward, reward_scale)}">'
             f'reward {esc(fmt(reward) or "?")}</span>')
    h.append(f'<span class="tag">stop: {esc(r.get("stop_reason", "?"))}</span>')
    model = sum(1 for t in range(n) if not (t < len(mask) and mask[t] == 0))
    spans = r.get("tool_spans") or []
    own = f"{n - start} own tokens of {n}" if fork else f"{n} tokens"
    kids_n = len(node.children)
    branches = f" · {kids_n} branch{'es' if kids_n != 1 else ''}" if kids_n else ""
    h.append(f'<span class="m">{own} · {model} model-written · {len(spans)} tool call{"s" if len(spans) != 1 else ""}'
             f'{branches}</span>')
    metrics = r.get("metrics") if isinstance(r.get("metrics"), Mapping) else {}
    if metrics:
        items = [f"{k} {fmt(num(v)) if num(v) is not None else v}" for k, v in metrics.items()]
        shown_items = " · ".join(items[:MAX_ROW_METRICS])
        h.append(f'<span class="m" title="{esc(" · ".join(items))}">{esc(shown_items)}</span>')
    missing = [s.short for s in SIGNALS[:3] if s.key not in signals_present(r)]
    if missing and n:
        h.append(f'<span class="m muted" title="this row carries no {"/".join(missing)} values '
                 f'(APPO dumps Ω and BS for initial rows only)">no {esc("/".join(missing))}</span>')
    h.append('<span class="rng"></span>')

    body = ""
    if fork:
        body += context_html(r, split, parent_a, r.get("parent"))
        if early:
            body += fork_markers(early, child_anchor)
    body += render_tokens(r, a, forks, child_anchor, start=start)
    kids = "".join(row_html(c, group, reward_scale) for c in node.children)
    cls = "row branch" if fork else "row"
    return (f'<div class="{cls}" id="{a}" data-uid="{esc(uid)}"><div class="rh">{"".join(h)}</div>'
            f'<div class="tx" data-t0="{start}">{body}</div>'
            f'{"<div class=kids>" + kids + "</div>" if kids else ""}</div>')


def prompt_html(prompt: Mapping[str, Any], reward_scale: float) -> str:
    """One prompt's card: question, references, counts, full prompt (folded), tree overview, rows."""
    g = prompt.get("group", "?")
    rows = _rows(prompt)
    roots, notes = build_tree(rows)
    s = step_summary([prompt])
    answers = prompt.get("answers") or []
    if not isinstance(answers, list):
        answers = [answers]
    refs = "".join(f"<code>{esc(a)}</code>" for a in answers) or '<span class="muted">none</span>'
    r_i, r_b = s["reward_initial"], s["reward_branch"]
    stats = (f'{s["rows"]} rows: {s["initial"]} initial, {s["branch"]} branch · mean reward initial '
             f'{fmt(r_i) or "–"}, branch {fmt(r_b) or "–"}')
    note = f'<ul class="note">{"".join(f"<li>{esc(x)}</li>" for x in notes)}</ul>' if notes else ""
    full = (f'<details class="more"><summary>full prompt as fed to the model</summary>'
            f'<pre class="prompt">{esc(prompt.get("prompt", ""))}</pre></details>') if prompt.get("prompt") else ""
    key = ('<div class="key">bar = a row\'s own tokens; colour = reward'
           f'<span class="sw" style="background:{reward_color(1, 1)}"></span>&gt; 0'
           f'<span class="sw" style="background:{reward_color(0, 1)}"></span>0'
           f'<span class="sw" style="background:{reward_color(-1, 1)}"></span>&lt; 0'
           '<span class="sw" style="background:#8c8c8c"></span>tool output'
           '<span class="sw" style="background:#7b2cbf;width:9px"></span>branch point</div>')
    body = "".join(row_html(n, g, reward_scale) for n in roots)
    return (f'<section class="card prompt" id="{prompt_anchor(g)}">'
            f'<h2>Prompt {esc(g)} <span class="muted">· {esc(prompt.get("id", ""))} · '
            f'{esc(prompt.get("source", ""))}</span></h2>'
            f'<div class="qa"><div><b>Question</b><pre class="q">{esc(prompt.get("question", ""))}</pre></div>'
            f'<div class="ans"><b>Reference answer{"s" if len(answers) != 1 else ""}</b><br>{refs}</div></div>'
            f'<div class="muted">{esc(stats)}</div>{note}{full}{tree_svg(roots, g, reward_scale)}{key}'
            f'{decision_table(roots, g)}{body}</section>')


def render_step(record: Mapping[str, Any], *, metrics: Mapping[str, Any] | None = None,
                max_prompts: int | None = None, prev_step: int | None = None, next_step: int | None = None,
                run_name: str = "") -> str:
    """The HTML page of one step dump. ``metrics``: the step's metrics.jsonl line (shown folded);
    ``max_prompts``: show only the first that many prompts (the page says how many were left out)."""
    step = record.get("step", "?")
    prompts = [p for p in (record.get("prompts") or []) if isinstance(p, Mapping)]
    shown = prompts if max_prompts is None else prompts[:max_prompts]
    rows = [r for p in shown for r in _rows(p)]
    present = {k for r in rows for k in signals_present(r)}
    rewards = [abs(v) for v in (num(r.get("reward")) for r in rows) if v is not None]
    reward_scale = max(rewards, default=0.0)
    s = step_summary(prompts)

    stops = ", ".join(f"{k} {v}" for k, v in s["stops"].most_common())
    cut = (f' · <b>showing the first {len(shown)} of {len(prompts)} prompts</b> (max_prompts={max_prompts})'
           if len(shown) < len(prompts) else "")
    extra = "".join(f" · {esc(k)} {esc(v)}" for k, v in record.items()
                    if k not in ("step", "prompts") and isinstance(v, (str, int, float)) and not isinstance(v, bool))
    summary = (f'<div class="muted">{s["prompts"]} prompts{cut} · {s["rows"]} rows ({s["initial"]} initial, '
               f'{s["branch"]} branch) · mean reward initial {fmt(s["reward_initial"]) or "–"}, branch '
               f'{fmt(s["reward_branch"]) or "–"} · mean length {fmt(s["tokens_mean"]) or "–"} tokens · stops: '
               f'{esc(stops) or "–"}{extra}</div>')
    toc = "".join(f'<a href="#{prompt_anchor(p.get("group", "?"))}">P{esc(p.get("group", "?"))} <span class="muted">'
                  f'{esc(fmt(step_summary([p])["reward_initial"]) or "–")}</span></a>' for p in shown)
    mtable = ""
    if metrics:
        cells = "".join(f"<tr><td>{esc(k)}</td><td>{esc(fmt(num(v)) if num(v) is not None else v)}</td></tr>"
                        for k, v in metrics.items() if k not in ("step", "time"))
        mtable = (f'<details class="more card"><summary>metrics logged for this step (metrics.jsonl step '
                  f'{esc(metrics.get("step"))})</summary>'
                  f'<table class="t"><tr><th>metric</th><th>value</th></tr>{cells}</table></details>')
    body = (f'{_controls(present)}<main><div class="top"><h1>Step {esc(step)}</h1>'
            f'<span class="muted">{esc(run_name)}</span><span class="nav">{_nav(prev_step, next_step)}</span></div>'
            f'{summary}{_help()}{mtable}<nav class="toc card">Prompts (mean initial reward): {toc}</nav>'
            f'{"".join(prompt_html(p, reward_scale) for p in shown) or EMPTY_STEP}'
            f'</main>')
    return page(f"appo report · step {step}", body, page_script())


def _nav(prev_step: int | None, next_step: int | None) -> str:
    nav = ['<a href="index.html">← run overview</a>']
    if prev_step is not None:
        nav.append(f'<a class="nav" href="{step_filename(prev_step)}">← step {prev_step}</a>')
    if next_step is not None:
        nav.append(f'<a class="nav" href="{step_filename(next_step)}">step {next_step} →</a>')
    return " · ".join(nav)


def render_unreadable(step: int, error: str, prev_step: int | None = None, next_step: int | None = None,
                      run_name: str = "") -> str:
    """The page of a step whose dump could not be read: the error, and the same navigation."""
    body = (f'<main><div class="top"><h1>Step {esc(step)}</h1><span class="muted">{esc(run_name)}</span>'
            f'<span class="nav">{_nav(prev_step, next_step)}</span></div>'
            f'<p class="note">This step\'s rollout dump could not be read: {esc(error)}</p></main>')
    return page(f"appo report · step {step}", body)


def fork_fractions(record: Mapping[str, Any]) -> list[float]:
    """Split position / parent response length of every branch row in a step dump (for the index chart)."""
    out = []
    for p in record.get("prompts") or []:
        if not isinstance(p, Mapping):
            continue
        rows = {r.get("uid"): r for r in _rows(p)}
        for r in rows.values():
            if is_fork(r) and r.get("parent") in rows:
                n = len(rows[r["parent"]].get("tokens") or [])
                if n:
                    out.append(min(max((r["split"] + 1) / n, 0.0), 1.0))
    return out

