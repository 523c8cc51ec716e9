"""The inline CSS and JavaScript of the report pages (no server, no network, no CDN).

The script of a step page reads each model token's ``data-v`` once, then on every switch of the signal
or scale radio buttons sets each token's background:

- sequential signals (entropy, Ω, BS, influence): ``alpha = 0.85 * (v - lo) / (hi - lo)`` of one orange;
- the diverging one (advantage): ``alpha = 0.8 * |v| / m`` of blue for ``v > 0``, red for ``v < 0``;

where ``lo``/``hi`` (min/max) and ``m`` (max |v|) are taken over the page's shown tokens ("per page",
the default: colours compare across rows) or over each row's own tokens ("per row": each row uses its
full range; its header then shows that range). Tokens without a value stay unshaded; a scope whose
values are all equal (e.g. Ω on a first step) shades nothing. The chosen signal and scale are carried
to the previous/next step links in the query string.
"""

from __future__ import annotations

import json

from appo.report.tokens import SIGNALS

SEQ_RGB = (217, 72, 1)
"""Sequential scale colour (dark orange)."""
POS_RGB = (33, 102, 172)
"""Diverging scale, positive side (blue)."""
NEG_RGB = (214, 39, 40)
"""Diverging scale, negative side (red)."""

CSS = """
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
 color:#1f2328;background:#f4f5f7}
main{max-width:1180px;margin:0 auto;padding:10px 18px 60px}
a{color:#0b5cad}
h1{font-size:21px;margin:8px 0 4px}
h2{font-size:16px;margin:0 0 6px}
code,pre,.tx{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace}
.top{display:flex;gap:14px;align-items:baseline;flex-wrap:wrap}
.top .nav{font-size:13px}
.muted{color:#6a737d}
.note{background:#fff8e1;border:1px solid #f0c36d;border-radius:6px;padding:8px 12px;margin:8px 0}
.note li{margin:2px 0}
.card{background:#fff;border:1px solid #d8dde3;border-radius:8px;padding:12px 14px;margin:12px 0}
table.t{border-collapse:collapse;font-size:13px}
table.t th,table.t td{border-bottom:1px solid #e4e7eb;padding:3px 10px;text-align:right}
table.t th:first-child,table.t td:first-child{text-align:left}
table.t th{background:#f0f2f5}
.steps{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
.fork-fig{margin:0;max-width:470px}.fork-fig img{width:100%;display:block}
.fork-fig figcaption{font-size:11px;color:#6a737d}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:10px}
.grid figure{margin:0;background:#fff;border:1px solid #d8dde3;border-radius:8px;padding:4px}
.grid img{width:100%;height:auto;display:block}
.grid figcaption{font-size:11px;color:#6a737d;padding:0 6px 4px}
.bar{position:sticky;top:0;z-index:5;background:#fff;border-bottom:1px solid #d8dde3;
 box-shadow:0 1px 4px rgba(0,0,0,.06);
 padding:6px 18px;display:flex;flex-wrap:wrap;gap:6px 18px;align-items:center;font-size:13px}
.bar fieldset{border:0;margin:0;padding:0;display:flex;gap:2px 10px;flex-wrap:wrap;align-items:center}
.bar legend{float:left;font-weight:600;margin-right:6px;padding:0}
.bar label{white-space:nowrap;cursor:pointer}
.bar label.off{color:#aaa;cursor:not-allowed}
.lgd{display:flex;align-items:center;gap:5px;font-size:12px}
.grad{display:inline-block;width:130px;height:11px;border:1px solid #ccc;border-radius:2px}
#readout{flex:1 1 100%;font:12px "DejaVu Sans Mono",monospace;color:#444;min-height:16px;white-space:pre;
 overflow:hidden;text-overflow:ellipsis}
details.help{font-size:13px}
details.help summary,details.more summary{cursor:pointer;color:#0b5cad}
.toc{font-size:13px;display:flex;flex-wrap:wrap;gap:4px 12px}
.qa{display:grid;grid-template-columns:1fr 280px;gap:12px;margin-bottom:8px}
pre.q{white-space:pre-wrap;margin:2px 0;background:#f6f8fa;border-radius:4px;padding:6px 8px;font-size:13px}
.ans code{display:inline-block;background:#e6f4ea;border:1px solid #b7dfc3;border-radius:4px;padding:0 5px;
 margin:2px 3px 2px 0}
pre.prompt{white-space:pre-wrap;font-size:12px;background:#f6f8fa;padding:6px 8px;border-radius:4px;
 max-height:300px;overflow:auto}
svg.tree{display:block;max-width:100%;height:auto;margin:6px 0 2px}
svg.tree .lb{font:10px "DejaVu Sans Mono",monospace;fill:#444}
svg.tree .ax{font:9px sans-serif;fill:#888}
svg.tree .cn{stroke:#7b2cbf;stroke-width:1.2;fill:none}
svg.tree .tk{fill:#7b2cbf}
svg.tree a:hover rect{stroke:#000;stroke-width:.6}
.key{font-size:11px;color:#6a737d;margin-bottom:6px}
.key .sw{display:inline-block;width:18px;height:9px;border-radius:2px;vertical-align:0;margin:0 3px 0 8px}
.dp{font-size:12px;margin:4px 0 8px}.dp table.t{font-size:12px}.dp code{white-space:pre}
.dp table.t td:nth-child(-n+3),.dp table.t th:nth-child(-n+3){text-align:left}
.row{border-left:3px solid #57606a;padding:2px 0 2px 9px;margin:10px 0 4px}
.row.branch{border-left-color:#7b2cbf}
.kids{margin-left:18px;padding-left:4px;border-left:1px dashed #c9b3e6}
.rh{display:flex;flex-wrap:wrap;gap:4px 8px;align-items:center;font-size:12px;margin-bottom:3px}
.rh .uid{font-weight:700;font-size:13px;font-family:"DejaVu Sans Mono",monospace}
.tag{border-radius:10px;padding:0 7px;background:#eef1f4;border:1px solid #dde2e7;white-space:nowrap}
.tag.br{background:#f3ecfb;border-color:#d7c4f0;color:#5a189a}
.tag.bs{background:#7b2cbf;border-color:#7b2cbf;color:#fff}
.tag.rw{font-weight:600;border-color:transparent}
.rh .m{color:#57606a}
.rh .rng{color:#b34700;font-family:"DejaVu Sans Mono",monospace}
.tx{white-space:pre-wrap;word-break:break-all;font-size:12.5px;line-height:1.6;background:#fff;
 border:1px solid #e4e7eb;border-radius:5px;padding:5px 8px}
.tx i{font-style:normal;border-radius:2px}
.tx u{text-decoration:none;color:#a0a7b0}
.tx .bp{outline:2px solid #7b2cbf;outline-offset:0;border-radius:2px}
.fork{display:inline-block;font:700 10px/14px system-ui,"DejaVu Sans",sans-serif;background:#7b2cbf;
 color:#fff!important;
 border-radius:8px;padding:0 5px;margin:0 2px;text-decoration:none;vertical-align:1px}
.fork:hover{background:#5a189a}
.call{border:1px solid #2b8a3e;border-radius:3px;padding:0 1px;background:rgba(43,138,62,.04)}
.call::before{content:"\\2699\\00a0" attr(data-tool);font:600 10px system-ui,"DejaVu Sans",sans-serif;
 color:#2b8a3e;margin-right:4px}
.call.err{border-color:#c92a2a}.call.err::before{color:#c92a2a}
.res{display:block;margin:3px 0;padding:3px 8px;background:#eceff1;color:#4a555f;border:1px solid #cfd8dc;
 border-radius:4px}
.res .rl{display:block;font:600 10px system-ui,"DejaVu Sans",sans-serif;color:#607d8b;margin-bottom:1px}
.res.err{border-color:#f1aeb5;background:#fbeff0}.res.err .rl{color:#c92a2a}
.res.bp{outline:2px solid #7b2cbf}
body.ct .res .rt{display:none}
.ctx{color:#9aa1a9;text-decoration:none;border-bottom:1px dotted #b9a3d9}
.ctx:hover{color:#5a189a}
:target{scroll-margin-top:90px}
.row:target>.tx,.tx i:target{box-shadow:0 0 0 3px #ffd43b}
"""


def page_script() -> str:
    """The step page's script (see the module docstring); signal order = ``SIGNALS``."""
    sig = json.dumps([{"key": s.key, "short": s.short, "div": s.diverging} for s in SIGNALS])
    return _JS.replace("__SIG__", sig).replace("__SEQ__", ",".join(map(str, SEQ_RGB))) \
        .replace("__POS__", ",".join(map(str, POS_RGB))).replace("__NEG__", ",".join(map(str, NEG_RGB)))


_JS = r"""
(function () {
  "use strict";
  var SIG = __SIG__, NS = SIG.length, SEQ = "__SEQ__", POS = "__POS__", NEG = "__NEG__";
  var rows = [];
  function f4(x) {
    var a = Math.abs(x);
    return (a !== 0 && (a < 1e-3 || a >= 1e5)) ? x.toExponential(2) : (+x.toPrecision(4)).toString();
  }
  function byId(id) { return document.getElementById(id); }

  // Read every row's tokens once: values per signal (NaN = none) and response position t.
  document.querySelectorAll(".tx").forEach(function (tx) {
    var t = +(tx.getAttribute("data-t0") || 0), rowEl = tx.parentNode;
    var R = {els: [], v: [], t: [], has: [], uid: rowEl.getAttribute("data-uid"), rng: rowEl.querySelector(".rng")};
    for (var k = 0; k < NS; k++) R.has.push(false);
    tx.querySelectorAll("i[data-v],.res").forEach(function (e) {
      if (e.tagName !== "I") { t += +(e.getAttribute("data-n") || 0); return; }
      var a = e.getAttribute("data-v").split(","), v = [];
      for (var j = 0; j < NS; j++) {
        var x = (j < a.length && a[j] !== "") ? +a[j] : NaN;
        v.push(x);
        if (!isNaN(x)) R.has[j] = true;
      }
      e._r = R; e._i = R.els.length;
      R.els.push(e); R.v.push(v); R.t.push(t); t++;
    });
    rows.push(R);
  });

  // [lo, hi] of signal k over the given rows; diverging: [0, max |v|].
  function range(list, k, div) {
    var lo = Infinity, hi = -Infinity;
    list.forEach(function (R) {
      R.v.forEach(function (v) {
        var x = v[k];
        if (isNaN(x)) return;
        if (div) x = Math.abs(x);
        if (x < lo) lo = x;
        if (x > hi) hi = x;
      });
    });
    return div ? [0, hi] : [lo, hi];
  }
  function paint(R, k, div, lo, hi) {
    for (var j = 0; j < R.els.length; j++) {
      var e = R.els[j], x = k < 0 ? NaN : R.v[j][k], bg = "", a = 0;
      if (!isNaN(x)) {
        if (div) {
          if (hi > 0) {
            var f = Math.max(-1, Math.min(1, x / hi));
            a = 0.8 * Math.abs(f);
            bg = "rgba(" + (f >= 0 ? POS : NEG) + "," + a.toFixed(3) + ")";
          }
        } else if (hi > lo) {
          a = 0.85 * (x - lo) / (hi - lo);
          bg = "rgba(" + SEQ + "," + a.toFixed(3) + ")";
        }
      }
      e.style.background = bg;
      e.style.color = a > 0.55 ? "#fff" : "";
    }
  }
  var lgLo = byId("lg-lo"), lgHi = byId("lg-hi"), lgGrad = byId("lg-grad"), lgNote = byId("lg-note");
  function legend(k, div, lo, hi, scope) {
    lgLo.textContent = lgHi.textContent = lgNote.textContent = "";
    if (k < 0) { lgGrad.style.background = "#fff"; lgNote.textContent = "no shading"; return; }
    lgGrad.style.background = div
      ? "linear-gradient(to right,rgba(" + NEG + ",.8),rgba(" + NEG + ",0) 50%,"
        + "rgba(" + POS + ",0) 50%,rgba(" + POS + ",.8))"
      : "linear-gradient(to right,rgba(" + SEQ + ",0),rgba(" + SEQ + ",.85))";
    if (scope === "row") {
      lgLo.textContent = div ? "\u2212max|v|" : "row min";
      lgHi.textContent = div ? "+max|v|" : "row max";
      lgNote.textContent = "range of each row (shown in its header)";
    } else if (!isFinite(lo) || !isFinite(hi)) {
      lgNote.textContent = "no token on this page has this signal";
    } else if (div) {
      lgLo.textContent = "\u2212" + f4(hi); lgHi.textContent = "+" + f4(hi);
      lgNote.textContent = hi > 0 ? "0 = unshaded" : "all zero";
    } else {
      lgLo.textContent = f4(lo); lgHi.textContent = f4(hi);
      lgNote.textContent = hi > lo ? "" : "constant: nothing to shade";
    }
  }
  function current(name) {
    var c = document.querySelector("input[name=" + name + "]:checked");
    return c ? c.value : "";
  }
  function apply() {
    var key = current("sig"), scope = current("scope"), k = -1, div = false;
    for (var j = 0; j < NS; j++) if (SIG[j].key === key) { k = j; div = SIG[j].div; }
    var pr = k < 0 ? [0, 0] : range(rows, k, div);
    rows.forEach(function (R) {
      var perRow = scope === "row" && k >= 0, r = perRow ? range([R], k, div) : pr;
      paint(R, k, div, r[0], r[1]);
      if (R.rng) {
        R.rng.textContent = (perRow && R.has[k])
          ? SIG[k].short + " " + (div ? "\u00b1" + f4(r[1]) : f4(r[0]) + "\u2013" + f4(r[1])) : "";
      }
    });
    legend(k, div, pr[0], pr[1], scope);
    document.querySelectorAll("a.nav").forEach(function (a) { a.search = "?sig=" + key + "&scope=" + scope; });
  }

  // The choice carried in the query string (from the previous/next links), then the switches.
  var q = new URLSearchParams(location.search);
  ["sig", "scope"].forEach(function (n) {
    var v = (q.get(n) || "").replace(/[^\w]/g, "");
    var c = v && document.querySelector("input[name=" + n + "][value='" + v + "']");
    if (c && !c.disabled) c.checked = true;
  });
  document.querySelectorAll("input[name=sig],input[name=scope]").forEach(function (c) {
    c.addEventListener("change", apply);
  });
  var ct = byId("ct");
  if (ct) ct.addEventListener("change", function () { document.body.classList.toggle("ct", ct.checked); });

  // Hover: the token's position and values, in its title (written on first hover) and the readout line.
  var ro = byId("readout");
  document.addEventListener("mouseover", function (ev) {
    var e = ev.target && ev.target.closest ? ev.target.closest("i[data-v]") : null;
    if (!e || !e._r) return;
    var R = e._r, v = R.v[e._i], s = "#" + R.uid + "  t=" + R.t[e._i];
    for (var m = 0; m < NS; m++) {
      if (!isNaN(v[m])) s += "  " + SIG[m].short + " " + f4(v[m]);
      else if (R.has[m]) s += "  " + SIG[m].short + " \u2013";
    }
    if (!e.title) e.title = s;
    if (ro) ro.textContent = s + "   " + JSON.stringify(e.textContent);
  });
  apply();
  document.body.setAttribute("data-ready", "1");
})();
"""
