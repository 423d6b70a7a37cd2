"""Plotly figures for the Model, Explain and Stability pages and the stakeholder report,
and the colours they share with the report's HTML.

Figures are built here, not in the pages, so they are tested without Streamlit. User
text (class names, words, sentences) goes through ``plot_text``: plotly renders a
subset of HTML in labels, and user text must never become markup. The Model page's
diagnostics keep plotly's default look; the others go through ``style_figure``.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np

from core.learn.curves import Diagnostics, LabelsNeeded, LearningCurve, accuracy_noise, saturating

__all__ = ["TOWARDS", "AGAINST", "DIVERGING", "INDIGO", "GREY", "FONT", "rgba", "plot_text",
           "short", "share_range", "style_figure", "history_figure", "confusion_figure", "curve_figure",
           "layer_figure", "describe_estimate", "noise_note", "layer_weights_figure",
           "probability_figure", "coverage_figure", "word_figure", "phrases_figure", "oob_figure",
           "count_axis", "agreement_figure", "sign_figure", "spearman_figure", "topk_figure"]

TOWARDS = (79, 70, 229)  # indigo, the app's primary colour: pushes towards the class
AGAINST = (220, 38, 38)  # red: pushes away from it
DIVERGING = [[0.0, "rgb(220,38,38)"], [0.5, "rgb(255,255,255)"], [1.0, "rgb(79,70,229)"]]
INDIGO, GREY = "#4F46E5", "#9CA3AF"
FONT = "'Source Sans Pro', 'Source Sans 3', system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"


def rgba(rgb: tuple[int, int, int], alpha: float) -> str:
    """A CSS colour: ``rgba((79, 70, 229), 0.5) -> 'rgba(79,70,229,0.50)'``."""
    return f"rgba({rgb[0]},{rgb[1]},{rgb[2]},{alpha:.2f})"


def plot_text(value: str) -> str:
    """User text for a plotly label: plotly reads a subset of HTML, so escape it."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def short(text: str, n: int = 90) -> str:
    """``text`` on one line in at most n characters: "a  b\nc" -> "a b c"; cut with "…"."""
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= n else one_line[: n - 1] + "…"



def style_figure(fig, *, height: int | None = None):
    """The app's look: white, system font, indigo first; returns ``fig``."""
    fig.update_layout(template="plotly_white", font=dict(family=FONT, size=13, color="#31333F"),
                      margin=dict(l=10, r=10, t=48, b=10), title=dict(font=dict(size=16)),
                      colorway=[INDIGO, "#F59E0B", "#10B981", "#EC4899", "#06B6D4", GREY])
    if height:
        fig.update_layout(height=height)
    return fig


# --- the Model page's diagnostics --------------------------------------------

def history_figure(models: Sequence):
    """CV accuracy of each stored model version (ModelVersion rows, oldest first)."""
    import plotly.graph_objects as go

    xs = [m.version for m in models]
    fig = go.Figure(go.Scatter(x=xs, y=[m.metrics.get("cv_accuracy") for m in models],
                               mode="lines+markers", customdata=[m.n_labels for m in models],
                               hovertemplate="v%{x}: %{y:.0%} on %{customdata} labels<extra></extra>"))
    fig.update_layout(title="Accuracy by model version", height=260, margin=dict(t=40, b=40),
                      xaxis=dict(title="model version", tickvals=xs, tickprefix="v"),
                      yaxis=dict(title="CV accuracy", tickformat=".0%", range=[0, 1.02]))
    return fig


def confusion_figure(diag: Diagnostics):
    """Heatmap of out-of-fold counts; rows are true classes, columns predicted ones."""
    import plotly.graph_objects as go

    names = [plot_text(c) for c in diag.classes]
    fig = go.Figure(go.Heatmap(z=diag.confusion, x=names, y=names, colorscale="Blues",
                               text=diag.confusion, texttemplate="%{text}", showscale=False,
                               hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>"))
    fig.update_layout(title="Confusion matrix (out-of-fold predictions)", height=360,
                      xaxis_title="predicted class",
                      yaxis=dict(title="true class", autorange="reversed"))
    return fig


def share_range(*values, min_span: float = 0.1) -> list[float]:
    """A y range over shares (0..1) that spans at least ``min_span``, so ticks written as
    whole percents all differ (a curve at 99-100% read "100%, 100%, 100%, 99%, 99%")."""
    v = np.concatenate([np.ravel(np.asarray(x, dtype=float)) for x in values])
    v = v[np.isfinite(v)]
    lo, hi = (float(v.min()), float(v.max())) if len(v) else (0.0, 1.0)
    pad = max(0.0, min_span - (hi - lo)) / 2
    lo, hi = lo - pad, hi + pad
    shift = max(0.0, hi - 1.0) - max(0.0, -lo)  # keep the span inside [0, 1]
    return [max(0.0, lo - shift) - 0.01, min(1.0, hi - shift) + 0.01]


def curve_figure(curve: LearningCurve, est: LabelsNeeded):
    """Measured accuracy (mean ± std over runs), the fitted curve, the target and where
    the fit reaches it, against labels per class on a log axis."""
    import plotly.graph_objects as go

    x, mean, std = curve.sizes, curve.mean, curve.std
    fig = go.Figure([
        go.Scatter(x=np.r_[x, x[::-1]], y=np.r_[mean + std, (mean - std)[::-1]], fill="toself",
                   mode="lines", line=dict(width=0), opacity=0.2, name="± 1 std",
                   hoverinfo="skip"),
        go.Scatter(x=x, y=mean, mode="lines+markers", name="held-out accuracy",
                   hovertemplate="%{x} per class: %{y:.0%}<extra></extra>")])
    ticks, shown = [int(v) for v in x], [mean + std, mean - std, [est.target]]
    if est.method == "saturating" and est.params:
        reach = est.per_class if est.finite and not est.reached else None
        grid = np.geomspace(x[0], max(reach * 1.3 if reach else x[-1] * 3, x[-1] * 1.5), 60)
        shown.append(saturating(grid, *est.params))
        fig.add_scatter(x=grid, y=shown[-1], mode="lines", name="fitted curve",
                        line=dict(dash="dot"), hoverinfo="skip")
        if reach:
            fig.add_scatter(x=[reach], y=[est.target], mode="markers", name="target reached",
                            marker=dict(symbol="star", size=13),
                            hovertemplate="≈%{x:.0f} per class<extra></extra>")
            ticks.append(round(reach))
    fig.add_hline(y=est.target, line=dict(dash="dash", color="gray"))
    fig.update_layout(title="Learning curve", height=380, margin=dict(t=40, b=40),
                      xaxis=dict(title="labels per class", type="log", tickvals=ticks),
                      yaxis=dict(title="accuracy", tickformat=".0%", range=share_range(*shown)),
                      legend=dict(orientation="h", y=-0.25))
    return fig


def layer_figure(profile: dict[str, np.ndarray], chosen: Sequence[int] = ()):
    """One line per pooling: accuracy of each layer alone; chosen layers are marked."""
    import plotly.graph_objects as go

    fig = go.Figure([go.Scatter(x=list(range(len(acc))), y=acc, mode="lines+markers", name=p)
                     for p, acc in profile.items()])
    for layer in chosen:
        fig.add_vline(x=layer, line=dict(dash="dot", color="gray"))
    fig.update_layout(title="Cross-validated accuracy of each layer alone", height=360,
                      xaxis_title="layer (0 = token embeddings)",
                      yaxis=dict(title="accuracy", tickformat=".0%"))
    return fig


def describe_estimate(est: LabelsNeeded) -> str:
    """The labels-needed estimate in words (markdown without user text), saying how it was
    made and how uncertain it is."""
    how = ("by fitting accuracy = a − b·n^(−c) to the learning curve" if est.method == "saturating"
           else "by a straight-line fit of accuracy against log(labels)")
    if est.reached:
        return f"The model already reaches {est.target:.0%} (estimated {how})."
    if not est.finite:
        where = (f" levels off near {est.plateau:.0%}" if est.plateau is not None
                 else " rises too slowly")
        return (f"The fitted curve{where}, below the {est.target:.0%} target: more labels alone "
                "are unlikely to get there. Try another prompt, backbone or feature mode.")
    if math.isfinite(est.high):
        spread = f"likely between {est.low:,.0f} and {est.high:,.0f}"
    else:  # "at least 0" would say nothing
        spread = ((f"at least {est.low:,.0f}; " if est.low >= 1 else "")
                  + "some refits never reach the target")
    text = (f"About **{est.extra:,.0f} more label{'' if est.extra == 1 else 's'}** "
            f"({math.ceil(est.per_class):,} per class) "
            f"to reach {est.target:.0%}, estimated {how} and solving for the target; "
            f"{spread} (10th–90th percentile over bootstrap refits of the curve).")
    if est.plateau is not None and est.plateau_interval is not None:
        lo, hi = est.plateau_interval
        text += f" Estimated plateau: {est.plateau:.0%} ({lo:.0%}–{hi:.0%})."
    return text + " Extrapolating a few noisy points is rough: treat this as an order of magnitude."


def noise_note(accuracy: float, n: int, what: str) -> str:
    """'With 32 labels, differences under about 16% between layers are within noise.'"""
    return (f"With {n} labels, differences under about {accuracy_noise(accuracy, n):.0%} "
            f"{what} are within noise.")


# --- the Predictions and Export pages' coverage control ---------------------

def coverage_figure(curve: dict[str, list], threshold: float | None):
    """Estimated accuracy above each confidence threshold (with its 95% band) and the share
    of predictions that clear it; ``curve`` from ``core.learn.coverage.curve``; a dotted
    line at the threshold in force (None: no threshold reaches the target)."""
    import plotly.graph_objects as go

    x = np.asarray(curve["threshold"])
    known = np.array([a is not None for a in curve["accuracy"]])
    xs = x[known]
    low = np.array([v for v in curve["low"] if v is not None])
    high = np.array([v for v in curve["high"] if v is not None])
    fig = go.Figure([
        go.Scatter(x=np.r_[xs, xs[::-1]], y=np.r_[high, low[::-1]], fill="toself", mode="lines",
                   line=dict(width=0), fillcolor=rgba(TOWARDS, 0.15), name="95% interval",
                   hoverinfo="skip"),
        go.Scatter(x=xs, y=[a for a in curve["accuracy"] if a is not None], mode="lines",
                   name="estimated accuracy above", line=dict(color=INDIGO),
                   hovertemplate="confidence ≥ %{x:.0%}: %{y:.0%} right<extra></extra>"),
        go.Scatter(x=x, y=curve["share"], mode="lines", name="share of predictions kept",
                   line=dict(color="#F59E0B", dash="dash"),
                   hovertemplate="confidence ≥ %{x:.0%}: %{y:.0%} kept<extra></extra>")])
    if threshold is not None:
        fig.add_vline(x=threshold, line=dict(dash="dot", color=GREY))
    fig.update_layout(title="Accuracy and coverage by confidence threshold",
                      xaxis=dict(title="confidence threshold", tickformat=".0%",
                                 range=[float(x.min()), 1]),
                      yaxis=dict(title=None, tickformat=".0%", range=[0, 1.02]),
                      legend=dict(orientation="h", y=-0.25))
    return style_figure(fig, height=340)


# --- the Explain page --------------------------------------------------------

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


def probability_figure(classes: Sequence[str], probs, *, before=None, highlight: str | None = None):
    """Horizontal bars of class probabilities; with ``before``, the original ones beside."""
    import plotly.graph_objects as go

    names = [plot_text(c) for c in classes]
    fig = go.Figure()
    if before is not None:
        fig.add_bar(y=names, x=before, orientation="h", name="original", marker_color=GREY,
                    hovertemplate="%{y}: %{x:.0%}<extra>original</extra>")
    colours = [INDIGO if c == highlight or highlight is None else "#A5B4FC" for c in classes]
    fig.add_bar(y=names, x=probs, orientation="h", name="your version" if before is not None
                else "probability", marker_color=colours, text=[f"{p:.0%}" for p in probs],
                textposition="outside", hovertemplate="%{y}: %{x:.0%}<extra></extra>")
    fig.update_layout(title="Class probabilities", barmode="group", showlegend=before is not None,
                      xaxis=dict(range=[0, 1.15], tickformat=".0%", title=None),
                      yaxis=dict(autorange="reversed", title=None),
                      legend=dict(orientation="h", y=-0.2))
    return style_figure(fig, height=110 + 42 * len(classes) * (2 if before is not None else 1))


def _top_pieces(pieces, top: int):
    scored = [i for i, p in enumerate(pieces) if p.score != 0]  # e.g. unknown tokens score 0
    order = sorted(scored, key=lambda i: -abs(pieces[i].score))[:top]
    return sorted(order)  # keep the sentence's word order


def word_figure(coef, shap=None, *, top: int = 12):
    """The words that pushed hardest (by the model weights), in sentence order; with SHAP's
    scores of the same words beside them. Both are in logit units."""
    import plotly.graph_objects as go

    keep = _top_pieces(coef, top)
    labels = [plot_text(coef[i].text) for i in keep]
    ticks = list(range(len(keep)))
    scores = [coef[i].score for i in keep]
    fig = go.Figure(go.Bar(
        y=ticks, x=scores, orientation="h", name="model weights (filled)",
        marker_color=[f"rgb{TOWARDS}" if v > 0 else f"rgb{AGAINST}" for v in scores],
        customdata=labels, hovertemplate="%{customdata}: %{x:+.3f}<extra>model weights</extra>"))
    if shap is not None:
        fig.add_bar(y=ticks, x=[shap[i].score for i in keep], orientation="h", name="SHAP (outline)",
                    marker=dict(color="rgba(0,0,0,0)", line=dict(color="#111827", width=1.5)),
                    customdata=labels, hovertemplate="%{customdata}: %{x:+.3f}<extra>SHAP</extra>")
    fig.update_layout(title="Strongest words", barmode="group", showlegend=shap is not None,
                      yaxis=dict(tickvals=ticks, ticktext=labels, autorange="reversed"),
                      xaxis=dict(title="contribution to the score (logit)", zeroline=True,
                                 zerolinecolor="#6b7280"),
                      legend=dict(orientation="h", y=-0.25))
    return style_figure(fig, height=140 + 26 * len(keep) * (1.6 if shap is not None else 1))


def phrases_figure(class_name: str, phrases):
    """Bars of the words that push hardest towards one class across the corpus."""
    import plotly.graph_objects as go

    labels = [plot_text(p.text) for p in phrases]
    hover = ["<br>".join(plot_text(short(e, 70)) for e in p.examples) for p in phrases]
    fig = go.Figure(go.Bar(
        y=list(range(len(phrases))), x=[p.score for p in phrases], orientation="h",
        marker_color=[f"rgb{TOWARDS}" if p.score > 0 else f"rgb{AGAINST}" for p in phrases],
        customdata=np.array([[lab, p.count, h] for lab, p, h in zip(labels, phrases, hover)], dtype=object),
        hovertemplate="<b>%{customdata[0]}</b>: %{x:+.3f} on average over %{customdata[1]} "
                      "uses<br>%{customdata[2]}<extra></extra>"))
    fig.update_layout(title=f"Words that point to “{plot_text(class_name)}”",
                      yaxis=dict(tickvals=list(range(len(phrases))), ticktext=labels,
                                 autorange="reversed"),
                      xaxis_title="mean contribution (logit, relative to the other classes)")
    return style_figure(fig, height=120 + 24 * max(1, len(phrases)))


# --- the Stability page ------------------------------------------------------

_SHARE_BINS = np.arange(22) * 0.05  # the histograms' bins over [0, 1]: 0.05 wide, 1.0 in the last


def count_axis(title: str, *shares: np.ndarray) -> dict:
    """A y axis for histogram counts of shares in [0, 1]: whole-number ticks (plotly puts
    ticks at 0.5 and 1.5 when the tallest bar is 2; from 6 up its own steps are whole)."""
    top = max((int(np.histogram(x, bins=_SHARE_BINS)[0].max()) for x in shares if len(x)), default=0)
    return dict(title=title, rangemode="tozero", **({"tick0": 0, "dtick": 1} if top <= 5 else {}))


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
                      yaxis=count_axis("refits", acc), bargap=0.05)
    return style_figure(fig, height=320)


def agreement_figure(stability, threshold: float = 0.8):
    """Histograms of the share of refits that agree with the model, per sentence."""
    import plotly.graph_objects as go

    fig, shares = go.Figure(), []
    for name, share, colour in (("labelled", stability.agreement, INDIGO),
                                ("unlabelled", stability.other_agreement, "#F59E0B")):
        share = share[np.isfinite(share)]
        shares.append(share)
        if len(share):
            fig.add_histogram(x=share, name=f"{name} ({len(share)})", marker_color=colour,
                              opacity=0.75, xbins=dict(start=0, end=1.0001, size=0.05),
                              hovertemplate="%{x}: %{y} sentences<extra></extra>")
    fig.add_vrect(x0=0, x1=threshold, fillcolor=rgba(AGAINST, 0.07), line_width=0, layer="below",
                  annotation=dict(text="unstable", font=dict(color=rgba(AGAINST, 1))),
                  annotation_position="top left")
    fig.update_layout(title="How often the refits agree with the model, per sentence",
                      barmode="overlay", xaxis=dict(title="share of refits predicting the same class",
                                                    tickformat=".0%", range=[0, 1.02]),
                      yaxis=count_axis("sentences", *shares), legend=dict(orientation="h", y=-0.25))
    return style_figure(fig, height=340)


def sign_figure(stability):
    """Scatter, one point per feature any refit used: how often it is selected against how
    often its weight keeps its sign; colour is the layer, filled points are in the model.
    On a fused model the hover and the title name the backbone each feature reads."""
    import plotly.graph_objects as go

    freq = stability.selection_frequency
    with warnings.catch_warnings():  # features no refit selected: a mean of NaNs, dropped below
        warnings.simplefilter("ignore", RuntimeWarning)
        sign = np.nanmean(stability.sign_stability, axis=1)
    in_model = (stability.coef != 0).any(1)
    part, layer, neuron = stability.feature_part, stability.feature_layer, stability.feature_neuron
    names = np.array([plot_text(p) for p in part], dtype=object)
    used = freq > 0
    fused = any(part)  # names are "" on a single backbone
    one_layer = len(set(zip(part[used], layer[used]))) <= 1
    # one layer number (means over layers are all -1): a colour scale would say nothing
    one_colour = len(set(layer[used])) <= 1
    fig = go.Figure()
    for inside, name, symbol in ((True, "in the model", "circle"),
                                 (False, "in refits only", "circle-open")):
        keep = np.flatnonzero(used & (in_model == inside) & np.isfinite(sign))
        columns = [layer[keep], neuron[keep]] + ([names[keep]] if fused else [])
        trace = go.Scattergl if len(keep) > 2000 else go.Scatter
        fig.add_trace(trace(
            x=freq[keep], y=sign[keep], mode="markers", name=name,
            customdata=np.stack(columns, 1) if len(keep) else None,
            marker=dict(color=INDIGO if one_colour else layer[keep], symbol=symbol, size=8,
                        opacity=0.7, coloraxis=None if one_colour else "coloraxis"),
            hovertemplate=("%{customdata[2]}: " if fused else "")
            + "layer %{customdata[0]}, neuron %{customdata[1]}<br>selected in %{x:.0%} "
              "of refits, same sign in %{y:.0%}<extra></extra>"))
    where = (f" ({names[used][0] + ' ' if fused else ''}layer {int(layer[used][0])})"
             if one_layer and used.any() and layer[used][0] >= 0 else "")
    fig.update_layout(title=f"How reliably each feature is used{where}",
                      coloraxis=dict(colorscale="Viridis", colorbar=dict(title="layer"),
                                     showscale=not one_colour),
                      xaxis=dict(title="selected in this share of refits", tickformat=".0%",
                                 range=[-0.02, 1.02]),
                      yaxis=dict(title="weight keeps its sign", tickformat=".0%", range=[-0.02, 1.05]),
                      legend=dict(orientation="h", y=-0.25))
    return style_figure(fig, height=380)


def spearman_figure(result):
    """Histogram of each refit's Spearman correlation with the model's token ranking."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Histogram(x=result["spearman"], xbins=dict(start=-1, end=1.0001, size=0.1),
                                 marker_color=INDIGO, opacity=0.85,
                                 hovertemplate="%{x}: %{y} refits<extra></extra>"))
    fig.add_vline(x=result["median_spearman"], line=dict(color="#111827", dash="dash"),
                  annotation_text=f"median {result['median_spearman']:.2f}",
                  annotation_position="top left")
    fig.update_layout(title="Do the refits rank the words the same way?",
                      xaxis=dict(title="Spearman correlation with the model's ranking",
                                 range=[-1.05, 1.05]), yaxis_title="refits")
    return style_figure(fig, height=320)


def topk_figure(result, tokens: Sequence[str] = ()):
    """Bars: per word (or token) of the sentence, the share of refits that put it in their
    top k. Words come from ``result["labels"]`` when the result was merged into words;
    otherwise ``tokens`` names the units at ``result["positions"]``."""
    import plotly.graph_objects as go

    names = result.get("labels") or [tokens[p] for p in result["positions"]]
    labels = [plot_text(name.strip() or "␣") for name in names]
    x = list(range(len(labels)))
    fig = go.Figure(go.Bar(
        x=x, y=result["in_topk"], customdata=labels,
        marker_color=[f"rgb{TOWARDS}" if v > 0 else f"rgb{AGAINST}" for v in result["full"]],
        hovertemplate="%{customdata}: in the top %{meta} of %{y:.0%} of refits<extra></extra>",
        meta=result["k"]))
    unit = "word" if result.get("labels") else "token"
    fig.update_layout(title=f"How often each {unit} is among the {result['k']} strongest",
                      xaxis=dict(tickvals=x, ticktext=labels, tickangle=-35),
                      yaxis=dict(title="share of refits", tickformat=".0%", range=[0, 1.05]))
    return style_figure(fig, height=320)
