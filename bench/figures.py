"""Learning-curve figures from a bench/accuracy.py results folder.

    .venv/bin/python bench/figures.py [bench/results/smollm2-135m]

Writes, next to the per-set JSON files:
- learning_curve.html / .png: accuracy vs labels per class, mean over the sets, one line per method;
- learning_curve_sets.html / .png: the same per set (small multiples), ± std over seeds as
  error bars, with the published SetFit points where the data README gives them.
HTML files load plotly.js from its CDN to stay small. PNGs are screenshots of a copy with
plotly.js inlined, taken offline by Debian's Chromium through Playwright; when that is not
available the PNG is skipped with a note on stderr.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]


def load_results(folder: Path) -> dict:
    """{set name: per-set JSON} for the bench/accuracy.py outputs in folder."""
    out = {}
    for path in sorted(Path(folder).glob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "methods" in data:
            out[data["dataset"]] = data
    return out


def _shots(results: dict) -> list[int]:
    return sorted({int(k) for r in results.values() for m in r["methods"].values() for k in m["mean"]})


def mean_figure(results: dict):
    """Accuracy vs labels per class, averaged over the sets (sets missing a method are skipped for it)."""
    import plotly.graph_objects as go

    shots = _shots(results)
    fig = go.Figure()
    keys = list(dict.fromkeys(k for r in results.values() for k in r["methods"]))
    for i, key in enumerate(keys):
        have = [r for r in results.values() if key in r["methods"]]
        label = have[0]["methods"][key]["label"]
        ys = [sum(r["methods"][key]["mean"][str(k)]["accuracy"] for r in have) / len(have) for k in shots]
        fig.add_trace(go.Scatter(x=shots, y=ys, mode="lines+markers", name=f"{label} ({len(have)} sets)",
                                 line={"color": COLOURS[i % len(COLOURS)],
                                       "dash": "dash" if "zero-shot" in label else "solid"}))
    fig.update_layout(title=f"Few-shot accuracy, mean over {len(results)} sets",
                      xaxis={"title": "labels per class", "type": "log", "tickvals": shots},
                      yaxis={"title": "test accuracy"}, template="plotly_white", width=800, height=500)
    return fig


def sets_figure(results: dict, published: dict | None = None):
    """Small multiples: one panel per set, mean ± std over seeds per method, published points."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = list(results)
    cols = min(5, len(names))
    rows = math.ceil(len(names) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names, shared_xaxes=True,
                        vertical_spacing=0.12, horizontal_spacing=0.04)
    keys = list(dict.fromkeys(k for r in results.values() for k in r["methods"]))
    for n, name in enumerate(names):
        row, col = n // cols + 1, n % cols + 1
        for i, key in enumerate(keys):
            m = results[name]["methods"].get(key)
            if m is None:
                continue
            ks = sorted(int(k) for k in m["mean"])
            fig.add_trace(go.Scatter(
                x=ks, y=[m["mean"][str(k)]["accuracy"] for k in ks], mode="lines+markers", name=m["label"],
                legendgroup=key, showlegend=n == 0,
                error_y={"type": "data", "array": [m["mean"][str(k)]["accuracy_std"] for k in ks]},
                line={"color": COLOURS[i % len(COLOURS)], "dash": "dash" if "zero-shot" in m["label"] else "solid"}),
                row=row, col=col)
        for j, (label, ref) in enumerate((published or {}).get(name, {}).items()):
            fig.add_trace(go.Scatter(
                x=list(ref), y=[v / 100 for v in ref.values()], mode="markers", name=label, legendgroup=label,
                showlegend=label not in {t.name for t in fig.data},
                marker={"symbol": "star" if j == 0 else "diamond", "size": 10, "color": "black" if j == 0 else "grey"}),
                row=row, col=col)
    ticks = sorted(set(_shots(results)) | {k for refs in (published or {}).values() for r in refs.values() for k in r})
    fig.update_xaxes(type="log", tickvals=ticks)
    fig.update_yaxes(title_text="accuracy", col=1)
    fig.update_layout(title="Few-shot accuracy per set (mean ± std over seeds) vs labels per class",
                      template="plotly_white", width=1500, height=330 * rows + 120,
                      legend={"orientation": "h", "y": -0.08})
    return fig


def screenshot(fig, path: Path) -> bool:
    """PNG of the figure via headless Chromium (offline: plotly.js inlined). False if unavailable."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return False
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        return False
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "fig.html"
        fig.write_html(html, include_plotlyjs=True, full_html=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(chromium),
                                        args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": int(fig.layout.width) + 40,
                                              "height": int(fig.layout.height) + 40})
            page.goto(html.as_uri())
            page.wait_for_selector(".main-svg", timeout=30_000)
            page.locator(".plotly-graph-div").screenshot(path=str(path))
            browser.close()
    return True


def write_figures(folder: Path) -> list[Path]:
    """Write the two learning-curve figures (HTML, and PNG when Chromium is there) into folder."""
    from bench.accuracy import PUBLISHED

    results = load_results(folder)
    written = []
    for stem, fig in (("learning_curve", mean_figure(results)),
                      ("learning_curve_sets", sets_figure(results, PUBLISHED))):
        html = Path(folder) / f"{stem}.html"
        fig.write_html(html, include_plotlyjs="cdn")
        written.append(html)
        png = html.with_suffix(".png")
        try:
            if screenshot(fig, png):
                written.append(png)
            else:
                print(f"no PNG for {stem}: Playwright or /usr/bin/chromium is missing", file=sys.stderr)
        except Exception as err:  # a browser failure must not lose the benchmark's results
            print(f"no PNG for {stem}: {type(err).__name__}: {err}", file=sys.stderr)
    return written


if __name__ == "__main__":
    for p in write_figures(Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "bench" / "results" / "smollm2-135m")):
        print(p)
