"""The report's HTML: the branch tree, branch markers, tool spans, signal switches, escaping, sizes."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from report_synth import INJECTION, big_record

from appo.report import SIGNALS, write_report
from appo.report.run import read_dump
from appo.report.step_page import render_step
from appo.report.tokens import esc, token_text


class RowTree(HTMLParser):
    """Collects, for every ``div.row``, the id of the nearest enclosing ``div.row`` (None for roots), and
    the text of each row's header."""

    def __init__(self):
        super().__init__()
        self.stack: list[str | None] = []  # one entry per open div: its row id or None
        self.parent: dict[str, str | None] = {}
        self.order: list[str] = []
        self.header: dict[str, str] = {}
        self._in_header: str | None = None
        self._header_depth = 0

    def handle_starttag(self, tag, attrs):
        if tag != "div":
            return
        a = dict(attrs)
        cls = (a.get("class") or "").split()
        if "row" in cls:
            rows = [x for x in self.stack if x]
            self.parent[a["id"]] = rows[-1] if rows else None
            self.order.append(a["id"])
            self.stack.append(a["id"])
            return
        if "rh" in cls:
            self._in_header = [x for x in self.stack if x][-1]
            self.header[self._in_header] = ""
            self._header_depth = len(self.stack)
        self.stack.append(None)

    def handle_endtag(self, tag):
        if tag == "div":
            self.stack.pop()
            if self._in_header and len(self.stack) == self._header_depth:
                self._in_header = None

    def handle_data(self, data):
        if self._in_header:
            self.header[self._in_header] += data


@pytest.fixture()
def report(small_report):
    return small_report


def _page(report, step=1):
    return (report / f"step_{step:06d}.html").read_text()


def test_rows_are_nested_under_their_parents_in_split_order(report):
    tree = RowTree()
    tree.feed(_page(report))
    p = tree.parent
    assert p["g0r0"] is None and p["g0r1"] is None and p["g1r0"] is None and p["g1r1"] is None
    assert p["g0r2"] == "g0r0" and p["g0r3"] == "g0r0" and p["g0r5"] == "g0r1"
    assert p["g0r4"] == "g0r2"  # depth 2: a branch of a branch
    o = tree.order
    assert o.index("g0r2") < o.index("g0r4") < o.index("g0r3")  # children by split (2 before 6), depth first
    h = tree.header
    assert "branch of #0 after t=2" in h["g0r2"] and "BS 1.5" in h["g0r2"]
    assert "branch of #0 after t=6" in h["g0r3"] and "BS 0.75" in h["g0r3"]
    assert "branch of #2 after t=5" in h["g0r4"] and "BS 0.25" in h["g0r4"]
    assert "reward 1.1" in h["g0r4"] and "stop: max_length" in h["g0r3"] and "acc 1" in h["g0r0"]
    assert "not trained" in h["g0r2"] and "not trained" not in h["g0r0"] and "trained" in h["g0r0"]


def test_branch_points_are_marked_on_the_parent_and_linked_both_ways(report):
    html = _page(report)
    # the parent's token at the split is outlined, has an id, and is followed by a marker per child
    assert re.search(r'<i class="bp" id="g0r0t2" data-v="[^"]*"> will</i><a class="fork" href="#g0r2"', html)
    assert re.search(r'<i class="bp" id="g0r0t6" data-v="[^"]*">print\(6\*7\)</i><a class="fork" href="#g0r3"', html)
    assert re.search(r'id="g0r2t5" data-v="[^"]*">&lt;/think&gt;</i><a class="fork" href="#g0r4"', html)
    assert 'title="branch #2 continues after this token (t=2) · Branching Score 1.5"' in html
    # the child starts after the split, with the shared prefix tail linking back to the branch point
    child = html[html.index('id="g0r2"'):]
    assert '<div class="tx" data-t0="3"><a class="ctx" href="#g0r0t2"' in child
    assert child.count("<a class=\"fork\"") >= 1


def test_tool_calls_and_tool_output_are_set_apart(report):
    html = _page(report)
    row0 = html[html.index('id="g0r0"'):html.index('id="g0r2"')]
    # the call tokens sit in a green call box, the output (loss_mask 0) in one unshaded grey block
    assert '<span class="call" data-tool="python"><i data-v=' in row0
    m = re.search(r'<span class="res" data-n="3" title="python result · tokens 8–10 · loss_mask 0[^"]*">'
                  r'<b class="rl">python result · 3 tok</b><span class="rt">(.*?)</span></span>', row0, re.S)
    assert m and m.group(1) == "&lt;result&gt;\n42\n&lt;/result&gt;"
    assert "data-v" not in m.group(0)
    assert 'class="res err"' in html and 'class="call err" data-tool="python"' in html  # the failed call of #3


def test_every_signal_has_a_switch_and_tokens_carry_values(report, small_run):
    html = _page(report)
    for s in SIGNALS:
        assert re.search(rf'<input type="radio" name="sig" value="{s.key}"', html), s.key
    assert 'name="sig" value="none"' in html and 'name="scope" value="page" checked' in html
    assert 'name="scope" value="row"' in html
    assert re.search(r'name="sig" value="influence" disabled', html)  # no row carries influence
    assert re.search(r'name="sig" value="score" checked', html)  # the default when BS is there
    # token 0 of row 0: entropy 0.1, Omega 1.0, BS -2, advantage (1.0 - 0.3) * 1 = 0.7
    assert re.search(r'id="g0r0".*?<i data-v="0\.1,1,-2,0\.7">&lt;think&gt;</i>', html, re.S)
    # branch rows have no Omega / BS: empty fields
    assert re.search(r'id="g0r2".*?<div class="tx" data-t0="3">.*?<i data-v="[\d.]+,,,-?[\d.]+">', html, re.S)
    # an optional influence list per row is picked up and enables its switch
    rec = read_dump(small_run / "rollouts" / "step_000001.json")
    rec["prompts"][1]["rows"][0]["influence"] = [0.5, 0.25, 0.125]
    page = render_step(rec)
    assert not re.search(r'value="influence" disabled', page)
    assert re.search(r'id="g1r0".*?<i data-v="[^"]*,0\.5">&lt;answer&gt;</i>', page, re.S)


def test_model_output_is_escaped(report, small_run):
    html = _page(report)
    assert INJECTION not in html and "alert(1)</script>" not in html
    assert html.count("<script") == 1  # only the page's own script
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&amp; &quot;quotes&quot;" in html
    assert "What is 6 * 7? &lt;b&gt;bold&lt;/b&gt;" in html and "<b>bold</b>" not in html
    assert "<u>\\x0b</u>" in html and "<u>∅</u>" in html  # control char and empty token made visible
    # escaping reaches attributes, tool names and answers too
    rec = read_dump(small_run / "rollouts" / "step_000001.json")
    row = rec["prompts"][0]["rows"][0]
    row["tool_spans"][0]["name"] = '"><img src=x onerror=alert(2)>'
    rec["prompts"][0]["answers"] = ["<img src=y>"]
    rec["prompts"][0]["id"] = "</h2><script>x()</script>"
    page = render_step(rec)
    assert "<img" not in page and page.count("<script") == 1
    assert 'data-tool="&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"' in page


def test_token_text_and_escape_helpers():
    assert token_text("a\nb") == "a<u>↵</u>\nb"
    assert token_text("<\x00>") == "&lt;<u>\\x00</u>&gt;"
    assert token_text("\\x00") == "\\x00"  # a literal backslash text stays plain
    assert esc("\ud800'") == "\ufffd&#x27;"


def test_max_prompts_caps_the_page_and_says_so(small_run):
    index = write_report(small_run, steps=[0], max_prompts=1)
    html = (index.parent / "step_000000.html").read_text()
    assert 'id="g0r0"' in html and 'id="g1r0"' not in html
    assert "showing the first 1 of 2 prompts" in html
    with pytest.raises(ValueError, match="max_prompts"):
        write_report(small_run, max_prompts=0)


def test_realistic_step_page_stays_compact():
    rec = big_record()
    html = render_step(rec)
    tokens = sum(len(r["tokens"]) for p in rec["prompts"] for r in p["rows"])
    assert tokens > 8 * 16 * 190
    assert html.count("<i ") > 15_000
    assert len(html.encode()) < 70 * tokens  # bytes per dumped token: compact per-token data, no JSON copy
    assert html.count('class="row') == 8 * 16 and html.count('class="fork"') == 8 * 8


def test_a_grpo_step_without_branches_or_branching_scores(small_run):
    rec = read_dump(small_run / "rollouts" / "step_000001.json")
    for p in rec["prompts"]:
        p["rows"] = [dict(r, omega=None, score=None) for r in p["rows"] if r["parent"] is None]
    html = render_step(rec)
    assert re.search(r'name="sig" value="entropy" checked', html)  # the default without BS
    assert re.search(r'value="omega" disabled', html) and re.search(r'value="score" disabled', html)
    assert 'class="fork"' not in html and 'class="row branch"' not in html
    assert "This step dump holds no prompts" in render_step({"step": 3, "prompts": []})


def test_decision_points_table_lists_branch_points_by_score(report):
    html = _page(report)
    table = re.search(r'<details class="more dp" open><summary>Decision points \(4\).*?</table>', html, re.S).group(0)
    branches = re.findall(r'<tr><td><a href="#g0r(\d+)">', table)
    assert branches == ["2", "3", "5", "4"]  # BS 1.5, 0.75, 0.5, 0.25
    # the parent's token at t (bold) after its context, the point's BS, H_t and Omega_t of the parent, rewards
    assert ('<td><a href="#g0r0t2">#0 t=2</a></td><td><code><span class="muted">&lt;think&gt;I</span><b> will</b>'
            '</code></td><td>1.5</td><td>0.7</td><td>1.02</td><td>1 → -1</td>') in table
