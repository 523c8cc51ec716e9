"""The step page in headless Chromium: it renders (a screenshot that is not blank) and its script runs
(the DOM after load carries the token colours of the chosen signal and scale).

Skipped when no ``chromium`` is installed (``apt-get install -y chromium``; CI installs it). Set
``APPO_REPORT_SCREENSHOT_DIR`` to keep the screenshots for a look.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from PIL import Image
from report_synth import big_record

from appo.report import write_report
from appo.report.step_page import render_step

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


def test_step_page_screenshot_is_not_blank(tmp_path):
    page = tmp_path / "step_000000.html"
    page.write_text(render_step(big_record()), encoding="utf-8")  # 8 prompts x 16 rows x 200 tokens
    shot = tmp_path / "step.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri())
    assert shot.is_file(), "chromium wrote no screenshot"
    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        colors = im.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50  # text, shading, tree bars, markers: far from blank
    top = max(c for c, _ in colors) / (1280 * 2000)
    assert top < 0.9  # no single colour (e.g. the background) covers the page
    keep = os.environ.get("APPO_REPORT_SCREENSHOT_DIR")
    if keep:
        os.makedirs(keep, exist_ok=True)
        shutil.copy(shot, os.path.join(keep, "step_page.png"))


def test_script_colours_tokens_from_the_query_choice(small_run, tmp_path):
    page = write_report(small_run, steps=[1]).parent / "step_000001.html"
    dom = _chromium(tmp_path, "--dump-dom", page.as_uri() + "?sig=advantage&scope=row").stdout
    assert 'data-ready="1"' in dom, "the page script did not run to its end"
    styles = re.findall(r'<i[^>]*style="background: rgba\((\d+), (\d+), (\d+)', dom)
    assert {s for s in styles} == {("33", "102", "172"), ("214", "39", "40")}  # diverging: blue and red
    assert '<span class="rng">A ±' in dom  # per-row range in the row headers
    assert 'href="step_000000.html' not in dom  # only step 1 was rendered: no link to a missing page
    dom = _chromium(tmp_path, "--dump-dom", page.as_uri()).stdout
    styles = re.findall(r'<i[^>]*style="background: rgba\((\d+), (\d+), (\d+)', dom)
    assert styles and {s for s in styles} == {("217", "72", "1")}  # default: Branching Score, sequential
    assert '<span class="rng"></span>' in dom  # per page: no per-row range


HOVER = """<!DOCTYPE html><html><body><div id="out">not run</div><iframe src="PAGE" onload="
var d = this.contentDocument, out = [];
['#g0r0', '#g0r2'].forEach(function (row) {
  var toks = d.querySelectorAll(row + ' > .tx i[data-v]');
  [toks[0], toks[toks.length - 3]].forEach(function (e) {
    e.dispatchEvent(new MouseEvent('mouseover', {bubbles: true}));
    out.push(e.title);
  });
});
out.push(d.getElementById('readout').textContent);
document.getElementById('out').textContent = out.join(' | ');
"></iframe></body></html>"""


def test_hovering_a_token_shows_its_position_and_values(small_run, tmp_path):
    page = write_report(small_run, steps=[1]).parent / "step_000001.html"
    wrap = page.parent / "hover.html"
    wrap.write_text(HOVER.replace("PAGE", page.name))
    dom = _chromium(tmp_path, "--allow-file-access-from-files", "--dump-dom", wrap.as_uri()).stdout
    out = re.search(r'<div id="out">([^<]*)</div>', dom).group(1).split(" | ")
    # row 0: t counts the 3 tool-output tokens (8..10), so its third-last model token is t=11
    assert out[0] == "#0  t=0  H 0.1  Ω 1  BS -2  A 0.7"
    assert out[1].startswith("#0  t=11  H 0.4  Ω 1.11  BS 3.5  A ")
    # a branch row starts after its split (t=3) and has no Ω / BS
    assert out[2].startswith("#2  t=3  H ") and "Ω" not in out[2] and "BS" not in out[2]
    assert out[4].startswith(out[3]) and out[4].endswith('"&lt;answer&gt;"')  # readout: values and the token
