"""The stakeholder report: one self-contained HTML file about a trained model, and the
pieces of it the Explain and Stability pages draw too (the word heatmap, the model
card, the layer and stability figures).

Safety: everything a user typed (project name, class names, prompt, sentences) enters
the HTML through ``html.escape``; inside plotly figures it goes through
``charts.plot_text``, and plotly's JSON encoder writes "<" as \\u003c, so no user text
can close a <script>. plotly.js is inlined once, so the file works offline (~4.7 MB).

Shortcuts admitted: the example sentences are explained with coefficient
attributions only (SHAP costs seconds per sentence), and every figure is a snapshot.
"""

from __future__ import annotations

import html
import re
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Sequence

import numpy as np
from scipy.special import softmax

from core.figures import confusion_figure, curve_figure, layer_figure
from core.learn.curves import labels_needed
from core.explain.words import Piece, text_segments, word_attributions
from core.learn.features import FeatureSpec

__all__ = ["TOWARDS", "AGAINST", "DIVERGING", "EXACT_TOLERANCE", "Example", "example_of",
           "exactness_text", "heatmap_html", "legend_html", "pick_examples", "model_card",
           "style_figure", "layer_weights_figure", "oob_figure", "agreement_figure",
           "sign_figure", "build_report", "report_filename"]

TOWARDS = (79, 70, 229)  # indigo, the app's primary colour: pushes towards the class
AGAINST = (220, 38, 38)  # red: pushes away from it
DIVERGING = [[0.0, "rgb(220,38,38)"], [0.5, "rgb(255,255,255)"], [1.0, "rgb(79,70,229)"]]
INDIGO, GREY = "#4F46E5", "#9CA3AF"
EXACT_TOLERANCE = 1e-4
_FONT = "'Source Sans Pro', 'Source Sans 3', system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"


@dataclass(frozen=True)
class Example:
    """One sentence explained for one class by its exact (mean pooling) token attributions.

    probs: (K,) class probabilities; pieces: the word pieces of ``text`` with their
    contribution to the logit of ``classes[class_index]``. words (the pieces' sum) +
    prompt + constant == logit when ``exact``; label: its label, if it has one.
    """

    text: str
    classes: list[str]
    probs: np.ndarray
    class_index: int
    pieces: list[Piece]
    words: float
    prompt: float
    constant: float
    logit: float
    exact: bool
    label: str | None = None

    @property
    def predicted(self) -> str:
        return self.classes[int(np.argmax(self.probs))]

    @property
    def gap(self) -> float:
        """(words + prompt + constant) - logit: zero up to rounding under mean pooling."""
        return self.words + self.prompt + self.constant - self.logit

    @property
    def adds_up(self) -> bool:
        return abs(self.gap) < EXACT_TOLERANCE


def example_of(attribution, classes: Sequence[str], text: str, *, class_index: int | None = None,
               label: str | None = None) -> Example:
    """An Example from a ``core.explain.attributions.Attribution`` of ``text``; class: the predicted one
    unless ``class_index`` is given."""
    probs = softmax(np.asarray(attribution.logits, dtype=np.float64))
    k = int(np.argmax(probs)) if class_index is None else int(class_index)
    pieces = word_attributions(attribution, text, k)
    return Example(text, list(classes), probs, k, pieces, float(sum(p.score for p in pieces)),
                   float(attribution.prompt_total[k]), float(attribution.constant[k]),
                   float(attribution.logits[k]), bool(attribution.exact), label)


def exactness_text(ex: Example) -> str:
    """The sum check in words (plain text, no markup); numbers to 5 decimals.

    'words +1.23456 + prompt -0.10000 + constant +0.20000 = +1.33456; the model's score
    (logit) for “pos” is +1.33456: they add up exactly (difference 2e-08).'
    """
    total = ex.words + ex.prompt + ex.constant
    head = (f"Words {ex.words:+.5f} + prompt {ex.prompt:+.5f} + constant {ex.constant:+.5f} "
            f"= {total:+.5f}; the model's score (logit) for “{ex.classes[ex.class_index]}” is "
            f"{ex.logit:+.5f}")
    if ex.adds_up:
        return f"{head}: they add up exactly (difference {abs(ex.gap):.0e})."
    return f"{head}: they do not add up (difference {abs(ex.gap):.3g})."


def _rgba(rgb: tuple[int, int, int], alpha: float) -> str:
    return f"rgba({rgb[0]},{rgb[1]},{rgb[2]},{alpha:.2f})"


def heatmap_html(text: str, pieces: Sequence[Piece], *, scale: float | None = None) -> str:
    """``text`` as escaped HTML, each word on a background from red (pushes away from the
    class) through white to indigo (pushes towards it); the score shows on hover.

    scale: the |score| that gets the strongest colour (default: the largest here), so
    two heatmaps drawn with one scale compare. Every character of ``text`` is kept.
    """
    scale = scale or max((abs(p.score) for p in pieces), default=0.0) or 1.0
    out = []
    for seg in text_segments(text, pieces):
        body = html.escape(seg.text)
        if not seg.text.strip() or seg.score == 0:
            out.append(body)
            continue
        strength = min(1.0, abs(seg.score) / scale)
        colour = TOWARDS if seg.score > 0 else AGAINST
        ink = "#ffffff" if strength > 0.55 else "#111827"
        tip = html.escape(f"{seg.text.strip()}: {seg.score:+.4f}")
        out.append(f'<span title="{tip}" style="background:{_rgba(colour, 0.06 + 0.84 * strength)};'
                   f'color:{ink};border-radius:0.3em;padding:0.1em 0.15em">{body}</span>')
    return ('<div class="tenshot-heatmap" style="font-size:1.2rem;line-height:2.1;white-space:pre-wrap;'
            'overflow-wrap:anywhere;padding:0.6rem 0.9rem;border:1px solid rgba(49,51,63,0.15);'
            f'border-radius:0.6rem;background:#ffffff;color:#111827">{"".join(out)}</div>')


def legend_html(class_name: str) -> str:
    """A colour bar saying which colour pushes towards or away from ``class_name``."""
    name = html.escape(class_name)
    bar = f"linear-gradient(to right,{_rgba(AGAINST, 0.9)},#ffffff,{_rgba(TOWARDS, 0.9)})"
    return ('<div style="display:flex;flex-wrap:wrap;align-items:center;gap:0.2rem 0.5rem;'
            'font-size:0.8rem;color:#6b7280;margin-top:0.35rem">'
            f'<span style="white-space:nowrap">away from “{name}”</span>'
            f'<span style="flex:0 0 6rem;height:0.6rem;border-radius:0.3rem;background:{bar};'
            'border:1px solid rgba(49,51,63,0.15)"></span>'
            f'<span style="white-space:nowrap">towards “{name}”</span></div>')


def pick_examples(predictions: Sequence, labelled: Sequence, classes: Sequence[str], *,
                  first: str | None = None, limit: int = 5) -> list[tuple[str, str | None]]:
    """(text, label or None) pairs worth showing: ``first``, then the most confident
    unlabelled prediction of each class, then the least confident one; labelled texts
    (one per class) fill in when there are few predictions.

    predictions: objects with .text, .label, .confidence; labelled: with .text, .label.
    """
    out: dict[str, str | None] = {}
    labels = {r.text: r.label for r in labelled}
    if first:
        out[first] = labels.get(first)
    ranked = sorted(predictions, key=lambda p: -p.confidence)
    for name in classes:
        best = next((p for p in ranked if p.label == name and p.text not in out), None)
        if best is not None:
            out[best.text] = None
    if ranked and ranked[-1].text not in out:
        out[ranked[-1].text] = None
    for name in classes:
        row = next((r for r in labelled if r.label == name and r.text not in out), None)
        if row is not None and len(out) < limit:
            out[row.text] = row.label
    return list(out.items())[:limit]


def model_card(project_name: str, model) -> list[tuple[str, str]]:
    """(field, value) rows describing a stored model version (a ``ModelVersion``): plain
    text, escape it before display."""
    params, m = model.params, model.metrics
    s = params.get("settings", {})
    counts = m.get("counts") or {}
    spec = FeatureSpec.from_json(params["spec"]) if params.get("spec") else None
    pct = lambda v: "–" if v is None else f"{v:.0%}"  # noqa: E731
    return [("Project", project_name), ("Classes", ", ".join(params.get("classes", []))),
            ("Model version", f"v{model.version}, trained {model.created_at[:16].replace('T', ' ')}"),
            ("Language model (backbone)", str(s.get("backbone", "–"))),
            ("Prompt", s.get("prompt") or "(none: the bare sentence)"),
            ("Pooling", str(s.get("pooling", "mean"))),
            ("Features", f"{s.get('mode', '–')} mode: {spec.describe() if spec else '–'}"),
            ("Penalty", f"{s.get('penalty', '–')} (C = {m.get('C', float('nan')):.3g}), "
                        f"{m.get('n_selected', 0):,} of {m.get('n_features', 0):,} features used"),
            ("Labels", f"{model.n_labels:,}: " + ", ".join(f"{c} {n}" for c, n in counts.items())),
            ("Cross-validated accuracy", pct(m.get("cv_accuracy"))),
            ("Cross-validated macro-F1", pct(m.get("cv_macro_f1")))]


def style_figure(fig, *, height: int | None = None):
    """The app's look: white, system font, indigo first; returns ``fig``."""
    fig.update_layout(template="plotly_white", font=dict(family=_FONT, size=13, color="#31333F"),
                      margin=dict(l=10, r=10, t=48, b=10), title=dict(font=dict(size=16)),
                      colorway=[INDIGO, "#F59E0B", "#10B981", "#EC4899", "#06B6D4", GREY])
    if height:
        fig.update_layout(height=height)
    return fig


def layer_weights_figure(weights: Sequence, backbone: str | None = None):
    """Bars: each hidden-state layer's share of the head's |weight| (``LayerWeight`` rows);
    backbone: its name, for one backbone of a fused model."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Bar(
        x=[w.layer for w in weights], y=[w.share for w in weights], marker_color=INDIGO,
        customdata=[w.n_features for w in weights],
        hovertemplate="layer %{x}: %{y:.0%} of the weight, %{customdata} features<extra></extra>"))
    where = "the network" if backbone is None else backbone
    fig.update_layout(title=f"Where in {where} the signal lives",
                      xaxis=dict(title="layer (0 = token embeddings)", dtick=max(1, len(weights) // 15)),
                      yaxis=dict(title="share of the model's weight", tickformat=".0%"))
    return style_figure(fig, height=300)


def oob_figure(stability):
    """Histogram of each refit's accuracy on the labels it did not draw, median marked."""
    import plotly.graph_objects as go

    acc = stability.oob_accuracy[np.isfinite(stability.oob_accuracy)]
    fig = go.Figure(go.Histogram(x=acc, xbins=dict(start=0, end=1.0001, size=0.05),
                                 marker_color=INDIGO, opacity=0.85,
                                 hovertemplate="%{x}: %{y} refits<extra></extra>"))
    if len(acc):
        med = float(np.median(acc))
        fig.add_vline(x=med, line=dict(color="#111827", dash="dash"),
                      annotation=dict(text=f"median {med:.0%}", bgcolor="rgba(255,255,255,0.85)"),
                      annotation_position="top left")
    fig.update_layout(title=f"Accuracy on unseen labels across {stability.B} refits",
                      xaxis=dict(title="out-of-bag accuracy", tickformat=".0%", range=[0, 1.02]),
                      yaxis_title="refits", bargap=0.05)
    return style_figure(fig, height=320)


def agreement_figure(stability, threshold: float = 0.8):
    """Histograms of the share of refits that agree with the model, per sentence."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, share, colour in (("labelled", stability.agreement, INDIGO),
                                ("unlabelled", stability.other_agreement, "#F59E0B")):
        share = share[np.isfinite(share)]
        if len(share):
            fig.add_histogram(x=share, name=f"{name} ({len(share)})", marker_color=colour,
                              opacity=0.75, xbins=dict(start=0, end=1.0001, size=0.05),
                              hovertemplate="%{x}: %{y} sentences<extra></extra>")
    fig.add_vrect(x0=0, x1=threshold, fillcolor=_rgba(AGAINST, 0.07), line_width=0, layer="below",
                  annotation=dict(text="unstable", font=dict(color=_rgba(AGAINST, 1))),
                  annotation_position="top left")
    fig.update_layout(title="How often the refits agree with the model, per sentence",
                      barmode="overlay", xaxis=dict(title="share of refits predicting the same class",
                                                    tickformat=".0%", range=[0, 1.02]),
                      yaxis_title="sentences", legend=dict(orientation="h", y=-0.25))
    return style_figure(fig, height=340)


def sign_figure(stability):
    """Scatter, one point per feature any refit used: how often it is selected against how
    often its weight keeps its sign; colour is the layer, filled points are in the model."""
    import plotly.graph_objects as go

    freq = stability.selection_frequency
    with warnings.catch_warnings():  # features no refit selected: a mean of NaNs, dropped below
        warnings.simplefilter("ignore", RuntimeWarning)
        sign = np.nanmean(stability.sign_stability, axis=1)
    in_model = (stability.coef != 0).any(1)
    layer, neuron = stability.feature_layer, stability.feature_neuron
    one_layer = len(np.unique(layer[freq > 0])) <= 1
    fig = go.Figure()
    for inside, name, symbol in ((True, "in the model", "circle"),
                                 (False, "in refits only", "circle-open")):
        keep = np.flatnonzero((freq > 0) & (in_model == inside) & np.isfinite(sign))
        trace = go.Scattergl if len(keep) > 2000 else go.Scatter
        fig.add_trace(trace(
            x=freq[keep], y=sign[keep], mode="markers", name=name,
            customdata=np.stack([layer[keep], neuron[keep]], 1) if len(keep) else None,
            marker=dict(color=INDIGO if one_layer else layer[keep], symbol=symbol, size=8,
                        opacity=0.7, coloraxis=None if one_layer else "coloraxis"),
            hovertemplate="layer %{customdata[0]}, neuron %{customdata[1]}<br>selected in %{x:.0%} "
                          "of refits, same sign in %{y:.0%}<extra></extra>"))
    where = (f" (layer {int(layer[freq > 0][0])})"
             if one_layer and (freq > 0).any() and layer[freq > 0][0] >= 0 else "")
    fig.update_layout(title=f"How reliably each feature is used{where}",
                      coloraxis=dict(colorscale="Viridis", colorbar=dict(title="layer"),
                                     showscale=not one_layer),
                      xaxis=dict(title="selected in this share of refits", tickformat=".0%",
                                 range=[-0.02, 1.02]),
                      yaxis=dict(title="weight keeps its sign", tickformat=".0%", range=[-0.02, 1.05]),
                      legend=dict(orientation="h", y=-0.25))
    return style_figure(fig, height=380)


def report_filename(project_name: str, version: int) -> str:
    """'tenshot-report-movie-reviews-v3.html': a safe file name from any project name."""
    slug = re.sub(r"[^a-z0-9]+", "-", project_name.lower()).strip("-")[:40] or "project"
    return f"tenshot-report-{slug}-v{int(version)}.html"


def _figure_html(fig, n: int) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"figure-{n}",
                       config={"displaylogo": False, "responsive": True})


def _probabilities_html(ex: Example) -> str:
    rows = []
    for name, p in sorted(zip(ex.classes, ex.probs), key=lambda t: -t[1]):
        colour = INDIGO if name == ex.predicted else GREY
        rows.append(f'<div class="prob"><span class="name">{html.escape(name)}</span>'
                    f'<span class="track"><span style="width:{100 * p:.1f}%;background:{colour}">'
                    f'</span></span><span class="pct">{p:.0%}</span></div>')
    return "".join(rows)


def _example_html(ex: Example) -> str:
    label = "" if ex.label is None else f" · labelled “{html.escape(ex.label)}”"
    note = ("The coloured contributions, the prompt's and a constant add up exactly to the "
            "model's score." if ex.exact and ex.adds_up else
            "This model's pooling is not a mean over words, so the colours are an approximation.")
    return (f'<div class="card example"><div class="meta">Predicted '
            f'<b>{html.escape(ex.predicted)}</b> ({ex.probs.max():.0%}){label} · colours explain '
            f'“{html.escape(ex.classes[ex.class_index])}”</div>'
            f'{heatmap_html(ex.text, ex.pieces)}{legend_html(ex.classes[ex.class_index])}'
            f'<div class="probs">{_probabilities_html(ex)}</div>'
            f'<div class="note">{html.escape(note)}</div></div>')


_CSS = """
body{margin:0;background:#f5f6fb;color:#31333F;font-family:%s;}
main{max-width:1100px;margin:0 auto;padding:0 1.5rem 3rem}
header{background:linear-gradient(120deg,#4F46E5,#6366F1);color:#fff;padding:2.2rem 1.5rem}
header .inner{max-width:1100px;margin:0 auto}
header h1{margin:0 0 .3rem;font-size:2rem} header p{margin:0;opacity:.9}
h2{margin:2.2rem 0 .4rem;color:#1f2937} p.lead{margin:.2rem 0 1rem;color:#4b5563}
.card{background:#fff;border:1px solid #e5e7eb;border-radius:.8rem;padding:1rem 1.2rem;
 margin:.8rem 0;box-shadow:0 1px 2px rgba(0,0,0,.04)}
.tiles{display:flex;gap:1rem;flex-wrap:wrap}.tile{flex:1 1 10rem}
.tile .v{font-size:1.9rem;font-weight:600;color:#4F46E5}.tile .k{color:#6b7280;font-size:.9rem}
table.card-table{border-collapse:collapse;width:100%%}
.card-table th{text-align:left;width:15rem;color:#6b7280;font-weight:500;vertical-align:top}
.card-table th,.card-table td{padding:.35rem .5rem;border-bottom:1px solid #f0f0f5;
 white-space:pre-wrap;overflow-wrap:anywhere}
.grid{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:1rem}
@media (max-width:900px){.grid{grid-template-columns:minmax(0,1fr)}}
.grid>.card{min-width:0;overflow:hidden}
.meta{color:#4b5563;margin-bottom:.5rem}.note{color:#6b7280;font-size:.85rem;margin-top:.4rem}
.probs{margin-top:.6rem}.prob{display:flex;align-items:center;gap:.6rem;margin:.15rem 0}
.prob .name{flex:0 0 12rem;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.prob .track{flex:1;height:.7rem;background:#eef0f6;border-radius:.35rem;overflow:hidden}
.prob .track span{display:block;height:100%%}.prob .pct{flex:0 0 3rem;text-align:right}
footer{color:#6b7280;font-size:.85rem;margin-top:3rem}
""" % _FONT


def build_report(project_name: str, model, examples: Sequence[Example], *, diagnostics=None,
                 profile: dict | None = None, layer_shares: Sequence | None = None,
                 stability=None, generated: datetime | None = None) -> str:
    """The whole report as one HTML document (str).

    model: the ``ModelVersion``; examples: from ``example_of``; diagnostics: a
    ``core.learn.curves.Diagnostics`` (learning curve + confusion matrix); profile: the Model
    page's {pooling: per-layer accuracy}; layer_shares: ``explain.layer_weights_by_backbone``;
    stability: a ``core.explain.stability.Stability`` of this model. Each optional part that is
    None is left out (with a line saying how to get it).
    """
    from plotly.offline import get_plotlyjs

    figures: list[str] = []

    def fig(figure) -> str:
        figures.append(_figure_html(figure, len(figures)))
        return f'<div class="card">{figures[-1]}</div>'

    m = model.metrics
    when = (generated or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f'<header><div class="inner"><h1>{html.escape(project_name)}</h1><p>Text classifier '
             f'report · model v{model.version} · generated {when} by tenshot</p></div></header><main>',
             '<h2>Summary</h2><div class="tiles">']
    for key, name in (("cv_accuracy", "accuracy (cross-validated)"),
                      ("cv_macro_f1", "macro-F1 (cross-validated)")):
        value = "–" if m.get(key) is None else f"{m[key]:.0%}"
        parts.append(f'<div class="card tile"><div class="v">{value}</div><div class="k">{name}</div></div>')
    parts.append(f'<div class="card tile"><div class="v">{model.n_labels:,}</div>'
                 '<div class="k">labelled sentences</div></div></div>')
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                   for k, v in model_card(project_name, model))
    parts.append(f'<h2>Model card</h2><div class="card"><table class="card-table">{rows}</table></div>')
    parts.append('<h2>How good is it?</h2><p class="lead">Every number here comes from labels the '
                 'model did not see while it was trained (cross-validation).</p>')
    if diagnostics is not None:
        confusion = confusion_figure(diagnostics).update_traces(colorscale=[[0, "#EEF2FF"], [1, INDIGO]])
        charts = [fig(style_figure(confusion))]
        if diagnostics.curve is not None:
            best = float(diagnostics.curve.mean.max())
            target = min(0.99, max(0.5, round(best + 0.05, 2)))
            charts.append(fig(style_figure(curve_figure(diagnostics.curve,
                                                        labels_needed(diagnostics.curve, target)))))
        parts.append(f'<div class="grid">{"".join(charts)}</div>')
    else:
        parts.append('<p class="note">Learning curve not included.</p>')
    parts.append('<h2>Where in the network?</h2><p class="lead">Which depths of the language model '
                 'carry the information the classifier uses.</p><div class="grid">')
    if profile:
        spec = FeatureSpec.from_json(model.params["spec"])
        parts.append(fig(style_figure(layer_figure(profile, spec.layers))))
    for backbone, shares in layer_shares or ():
        parts.append(fig(layer_weights_figure(shares, backbone)))
    parts.append('</div><h2>Example explanations</h2><p class="lead">Each word is coloured by how '
                 'much it pushed the model towards (indigo) or away from (red) a class.</p>')
    parts += [_example_html(ex) for ex in examples] or ['<p class="note">No example.</p>']
    parts.append('<h2>How stable is it?</h2>')
    if stability is not None:
        parts.append(f'<p class="lead">The model was refitted {stability.B} times on resampled '
                     f'labels (seed {stability.seed}): results that hold across refits do not hinge '
                     'on a few particular labels.</p><div class="grid">'
                     + fig(oob_figure(stability)) + fig(agreement_figure(stability))
                     + fig(sign_figure(stability)) + '</div>')
    else:
        parts.append('<p class="note">No bootstrap run is stored for this model version: run one '
                     'on the Stability page to include it.</p>')
    parts.append('<footer>Made with tenshot: a sparse logistic-regression head on the hidden '
                 'states of a small language model that runs locally. Word contributions are '
                 'exact for mean pooling: with the prompt\'s share and a constant they add up to '
                 'the model\'s score.</footer></main>')
    title = html.escape(f"{project_name} · tenshot report")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<style>{_CSS}</style><script type="text/javascript">{get_plotlyjs()}</script>'
            f'</head><body>{"".join(parts)}</body></html>')
