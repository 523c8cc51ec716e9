"""The branch tree of one prompt's rows, and its at-a-glance SVG overview.

Rows link to their parent by ``parent`` (a uid) and ``split`` (the parent's response position after
which the branch continues). Any depth is supported. A row whose parent is missing from the dump, or
whose parent links form a cycle, is shown as a root and reported in the returned notes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from appo.report.run import num
from appo.report.tokens import esc, fmt


@dataclass
class Node:
    """A row in the tree (mutable while the tree is built)."""

    row: Mapping[str, Any]
    """The dumped row."""
    depth: int = 0
    """0 for roots, parent's depth + 1 for branches."""
    children: list[Node] = field(default_factory=list)
    """Rows forked from this one, by (split, uid)."""


def anchor_id(group: Any, uid: Any) -> str:
    """Element id of a row on a step page (``g<group>r<uid>``, characters outside ``[\\w-]`` replaced)."""
    return re.sub(r"[^\w-]", "_", f"g{group}r{uid}")


def prompt_anchor(group: Any) -> str:
    """Element id of a prompt's card on a step page (``g<group>``)."""
    return re.sub(r"[^\w-]", "_", f"g{group}")


def is_fork(row: Mapping[str, Any]) -> bool:
    """Whether ``row`` names a parent and an integer split."""
    return row.get("parent") is not None and isinstance(row.get("split"), int)


def build_tree(rows: Sequence[Mapping[str, Any]]) -> tuple[list[Node], list[str]]:
    """(roots in uid order, notes) for one prompt's rows; every row appears exactly once."""
    nodes = {r.get("uid"): Node(r) for r in rows}
    notes: list[str] = []
    roots: list[Node] = []
    for uid, node in nodes.items():
        r = node.row
        parent = r.get("parent")
        if not is_fork(r):
            roots.append(node)
            continue
        if parent not in nodes:
            notes.append(f"row #{uid} names parent #{parent}, which is not in the dump; shown as a root")
            roots.append(node)
            continue
        seen, p = {uid}, parent
        while p is not None and p in nodes and p not in seen:
            seen.add(p)
            p = nodes[p].row.get("parent") if is_fork(nodes[p].row) else None
        if p in seen:
            notes.append(f"row #{uid}: its parent links form a cycle; shown as a root")
            roots.append(node)
            continue
        nodes[parent].children.append(node)

    def finish(node: Node, depth: int) -> None:
        node.depth = depth
        node.children.sort(key=lambda c: (c.row["split"], _key(c.row.get("uid"))))
        for c in node.children:
            finish(c, depth + 1)

    roots.sort(key=lambda n: _key(n.row.get("uid")))
    for r in roots:
        finish(r, 0)
    return roots, notes


def _key(uid: Any) -> tuple:
    return (0, uid, "") if isinstance(uid, int) else (1, 0, str(uid))


def walk(roots: Sequence[Node]) -> list[Node]:
    """Depth-first order: each row followed by its branches (by split)."""
    out: list[Node] = []

    def go(n: Node) -> None:
        out.append(n)
        for c in n.children:
            go(c)

    for r in roots:
        go(r)
    return out


def reward_color(r: float | None, scale: float) -> str:
    """Bar colour of a reward: blue above 0, red below, light grey at 0 or unknown (``scale`` = max |r|)."""
    if r is None or scale <= 0 or r == 0:
        return "#d9d9d9"
    f = min(abs(r) / scale, 1.0)
    rgb = (33, 102, 172) if r > 0 else (214, 39, 40)
    return f"rgba({rgb[0]},{rgb[1]},{rgb[2]},{0.3 + 0.65 * f:.2f})"


def _runs(mask: Sequence[Any], lo: int, hi: int) -> list[tuple[int, int]]:
    """[a, b) runs of loss_mask 0 within [lo, hi)."""
    out, a = [], None
    for t in range(lo, hi):
        zero = t < len(mask) and mask[t] == 0
        if zero and a is None:
            a = t
        elif not zero and a is not None:
            out.append((a, t))
            a = None
    if a is not None:
        out.append((a, hi))
    return out


def tree_svg(roots: Sequence[Node], group: Any, reward_scale: float) -> str:
    """An inline SVG of the prompt's tree: one lane per row (depth-first), a bar over the row's own
    tokens (a branch starts after its split, joined to its parent by a line) coloured by reward, grey
    boxes over tool output, purple ticks at branch points; each lane links to its row below."""
    order = walk(roots)
    if not order:
        return ""
    lane, gap, left, width, right = 12, 5, 46, 960, 70
    longest = max(1, max(len(n.row.get("tokens") or []) for n in order))
    x = lambda t: left + width * t / longest  # noqa: E731
    y_of: dict[int, float] = {}
    parts: list[str] = []
    for i, node in enumerate(order):
        r = node.row
        y = 4 + i * (lane + gap)
        y_of[id(node)] = y
        n = len(r.get("tokens") or [])
        start = r["split"] + 1 if is_fork(r) else 0
        start = min(start, n)
        uid = r.get("uid")
        reward = num(r.get("reward"))
        a = anchor_id(group, uid)
        link = f" of #{r.get('parent')} after t={r.get('split')}" if is_fork(r) else ""
        tip = (f"#{uid} {r.get('origin', '')}{link}"
               + f" · reward {fmt(reward) or '?'} · {n} tokens · stop {r.get('stop_reason', '?')}")
        lane_parts = [f'<a href="#{a}"><title>{esc(tip)}</title>']
        lane_parts.append(f'<text x="{left - 6}" y="{y + lane - 2}" text-anchor="end" class="lb">#{esc(uid)}</text>')
        lane_parts.append(f'<rect x="{x(start):.1f}" y="{y}" width="{max(x(n) - x(start), 1.5):.1f}" height="{lane}" '
                          f'rx="2" fill="{reward_color(reward, reward_scale)}"/>')
        for a0, a1 in _runs(r.get("loss_mask") or [], start, n):
            lane_parts.append(f'<rect x="{x(a0):.1f}" y="{y + 2}" width="{max(x(a1) - x(a0), 1):.1f}" '
                              f'height="{lane - 4}" fill="#8c8c8c" opacity="0.75"/>')
        lane_parts.append(f'<text x="{left + width + 6}" y="{y + lane - 2}" class="lb">'
                          f'{esc(fmt(reward) or "?")}</text>')
        lane_parts.append("</a>")
        parts.append("".join(lane_parts))
    # connectors and fork ticks drawn on top
    for node in order:
        py = y_of[id(node)]
        for c in node.children:
            cx = x(min(c.row["split"] + 1, longest))
            cy = y_of[id(c)]
            parts.append(f'<path d="M{cx:.1f} {py + lane:.1f} V{cy + lane / 2:.1f}" class="cn"/>')
            parts.append(f'<path d="M{cx - 4:.1f} {py - 3:.1f} h8 l-4 5 z" class="tk"><title>branch '
                         f'#{esc(c.row.get("uid"))} forks after t={c.row["split"]}</title></path>')
    h = 8 + len(order) * (lane + gap) + 10
    axis = (f'<text x="{left}" y="{h - 2}" class="ax">t=0</text>'
            f'<text x="{left + width}" y="{h - 2}" class="ax" text-anchor="end">t={longest}</text>')
    return (f'<svg class="tree" viewBox="0 0 {left + width + right} {h}" width="{left + width + right}" height="{h}" '
            f'role="img" aria-label="branch tree">{"".join(parts)}{axis}</svg>')


def decision_table(roots: Sequence[Node], group: Any) -> str:
    """A folded-open table of the prompt's branch points, highest Branching Score first: the branch,
    its parent and split t, the parent's token at t (after a few tokens of context), the BS of the
    point, the parent's entropy and Omega at t, and the rewards of parent and branch. Empty without
    branches."""
    points = [(n, c) for n in walk(roots) for c in n.children]
    if not points:
        return ""

    def at(row: Mapping[str, Any], key: str, t: int) -> float | None:
        xs = row.get(key)
        return num(xs[t]) if isinstance(xs, list) and 0 <= t < len(xs) else None

    points.sort(key=lambda p: -(num(p[1].row.get("branch_score")) if num(p[1].row.get("branch_score")) is not None
                                else -math.inf))
    body = []
    for parent, child in points:
        p, c, t = parent.row, child.row, child.row["split"]
        toks = p.get("tokens") or []
        ctx = esc("".join(str(x) for x in toks[max(0, t - 4) : max(0, t)])).replace("\n", "↵")
        tok = esc(toks[t] if 0 <= t < len(toks) else "").replace("\n", "↵")
        pa, ca = anchor_id(group, p.get("uid")), anchor_id(group, c.get("uid"))
        cells = [f'<a href="#{ca}">#{esc(c.get("uid"))}</a>', f'<a href="#{pa}t{t}">#{esc(p.get("uid"))} t={t}</a>',
                 f'<code><span class="muted">{ctx}</span><b>{tok}</b></code>',
                 esc(fmt(num(c.get("branch_score"))) or "–"), esc(fmt(at(p, "entropy", t)) or "–"),
                 esc(fmt(at(p, "omega", t)) or "–"),
                 f'{esc(fmt(num(p.get("reward"))) or "?")} → {esc(fmt(num(c.get("reward"))) or "?")}']
        body.append("<tr>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>")
    head = ("<tr><th>branch</th><th>forks from</th><th>token at t</th><th>BS</th><th>H<sub>t</sub></th>"
            "<th>Ω<sub>t</sub></th><th>reward parent → branch</th></tr>")
    return (f'<details class="more dp" open><summary>Decision points ({len(points)}), highest Branching Score first'
            f'</summary><table class="t">{head}{"".join(body)}</table></details>')
