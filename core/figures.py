"""Plotly figures and plain-language summaries for the Model page's diagnostics.

Figures are built here, not in the page, so they are tested without Streamlit. User
text (class names) goes through ``plot_text``: plotly renders a subset of HTML in
labels, and a class name must never become markup.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from core.learn.curves import Diagnostics, LabelsNeeded, LearningCurve, accuracy_noise, saturating

__all__ = ["plot_text", "history_figure", "confusion_figure", "curve_figure", "layer_figure",
           "describe_estimate", "noise_note"]


def plot_text(value: str) -> str:
    """User text for a plotly label: plotly reads a subset of HTML, so escape it."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


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
    ticks = [int(v) for v in x]
    if est.method == "saturating" and est.params:
        reach = est.per_class if est.finite and not est.reached else None
        grid = np.geomspace(x[0], max(reach * 1.3 if reach else x[-1] * 3, x[-1] * 1.5), 60)
        fig.add_scatter(x=grid, y=saturating(grid, *est.params), mode="lines", name="fitted curve",
                        line=dict(dash="dot"), hoverinfo="skip")
        if reach:
            fig.add_scatter(x=[reach], y=[est.target], mode="markers", name="target reached",
                            marker=dict(symbol="star", size=13),
                            hovertemplate="≈%{x:.0f} per class<extra></extra>")
            ticks.append(round(reach))
    fig.add_hline(y=est.target, line=dict(dash="dash", color="gray"))
    fig.update_layout(title="Learning curve", height=380, margin=dict(t=40, b=40),
                      xaxis=dict(title="labels per class", type="log", tickvals=ticks),
                      yaxis=dict(title="accuracy", tickformat=".0%"),
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
    spread = (f"likely between {est.low:,.0f} and {est.high:,.0f}" if math.isfinite(est.high)
              else f"at least {est.low:,.0f}; some refits never reach the target")
    text = (f"About **{est.extra:,.0f} more labels** ({math.ceil(est.per_class):,} per class) "
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
