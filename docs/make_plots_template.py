"""Build docs/plots_offline.html: a `dvc plots show` page template with the chart library inlined.

DVC's default page loads vega, vega-lite and vega-embed from a CDN, so its charts stay blank without a
network. This template carries the same versions that dvc-render asks for (vega 5.20.2, vega-lite
5.2.0, vega-embed 6.18.2; BSD-3-Clause, licences kept in the page), so the page draws offline.
`.dvc/config` points `plots.html_template` at it. A footer reports how many charts and images drew, and
each chart's div gets the colours vega gave its series (HOOK keeps the vegaEmbed calls, CHECK reads their
views' colour scales); tests/test_pipeline.py reads both from a headless Chromium.

Rebuild (needs the npm registry once; the output is committed):

    cd /tmp && npm pack vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2
    python docs/make_plots_template.py /tmp/vega-5.20.2.tgz /tmp/vega-lite-5.2.0.tgz /tmp/vega-embed-6.18.2.tgz
"""

from __future__ import annotations

import argparse
import tarfile
from pathlib import Path

LIBS = ("vega", "vega-lite", "vega-embed")

# Counts drawn charts (a vega-embed container with a non-empty canvas or svg) and decoded images,
# and writes them into the footer (and data-* attributes) until everything drew or 20 s passed.
HOOK = """
<script>
// Keeps every vegaEmbed call of the page (target, spec, the promise of the drawn view) for CHECK's colours().
window.cordaEmbeds = [];
(function () {
  var embed = window.vegaEmbed;
  window.vegaEmbed = function (target, spec, opts) {
    var result = embed(target, spec, opts);
    window.cordaEmbeds.push({target: target, spec: spec, result: result});
    return result;
  };
})();
</script>
"""

CHECK = """
<footer id="corda-render-check" style="font:12px sans-serif;color:#666;margin:20px">checking...</footer>
<script>
(function () {
  var t0 = Date.now();
  function count() {
    // A chart is a <div> of the page that vega-embed took over (class vega-embed) or whose inline
    // `var spec` script is still there because the embed failed (e.g. no chart library).
    var total = 0, drawn = 0;
    document.querySelectorAll("body > div").forEach(function (el) {
      var embedded = el.classList.contains("vega-embed");
      var pending = Array.prototype.some.call(el.querySelectorAll("script"), function (s) {
        return s.textContent.indexOf("var spec") >= 0;
      });
      if (!embedded && !pending) return;
      total += 1;
      var c = el.querySelector("canvas, svg");
      if (embedded && c && (c.width || c.getBoundingClientRect().width) > 0) drawn += 1;
    });
    var imgs = document.querySelectorAll("img"), ok = 0;
    imgs.forEach(function (im) { if (im.complete && im.naturalWidth > 0) ok += 1; });
    var f = document.getElementById("corda-render-check");
    f.dataset.charts = total; f.dataset.drawn = drawn; f.dataset.images = imgs.length; f.dataset.imagesOk = ok;
    f.textContent = "offline page: drew " + drawn + " of " + total + " charts; " + ok + " of " + imgs.length +
      " images (vega " + (window.vega ? vega.version : "missing") + ")";
    if ((drawn < total || ok < imgs.length) && Date.now() - t0 < 20000) setTimeout(count, 200);
  }
  // Each chart's colour legend as vega drew it: the series colour scale ("color", nominal) of the view that
  // vegaEmbed returned (HOOK keeps the calls) is written to the chart's div as data-colours ({value: colour}),
  // next to data-title, for the browser test to compare with corda.report's colour tables.
  function colours() {
    (window.cordaEmbeds || []).forEach(function (call) {
      call.result.then(function (res) {
        var el = document.querySelector(call.target), spec = call.spec, map = {};
        try {
          var sc = res.view.scale("color");
          if (sc && sc.type === "ordinal") {
            var d = sc.domain(), r = sc.range();
            d.forEach(function (v, i) { map[v] = r[i % r.length]; });
          }
        } catch (e) { map = {}; }
        el.dataset.title = (spec.title && (spec.title.text || spec.title)) || "";
        el.dataset.colours = JSON.stringify(map);
      });
    });
  }
  window.addEventListener("load", function () { setTimeout(count, 200); colours(); });
})();
</script>
"""


def read_pkg(tgz: Path, name: str) -> tuple[str, str]:
    with tarfile.open(tgz) as tar:
        js = tar.extractfile(f"package/build/{name}.min.js").read().decode()
        lic = tar.extractfile("package/LICENSE").read().decode()
    if "</script" in js:
        raise SystemExit(f"{tgz}: the bundle contains '</script' and cannot be inlined")
    return js, lic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tarballs", type=Path, nargs=3, help="npm pack tarballs of vega, vega-lite, vega-embed")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("plots_offline.html"))
    args = ap.parse_args()
    scripts = []
    for name, tgz in zip(LIBS, args.tarballs):
        js, lic = read_pkg(tgz, name)
        scripts.append(f"<!-- {tgz.name}: {name}, licence follows\n{lic.replace('--', '- -')}\n-->\n<script>{js}</script>")
    page = ("<!DOCTYPE html>\n<html>\n<head>\n{refresh_tag}\n<title>DVC Plot (offline)</title>\n"
            + "\n".join(scripts)
            + "\n" + HOOK + "<style>table { border-spacing: 15px; }</style>\n</head>\n<body>\n{plot_divs}\n"
            + CHECK + "</body>\n</html>\n")
    for placeholder in ("{scripts}",):  # DVC would insert its CDN tags there
        assert placeholder not in page
    args.out.write_text(page)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
