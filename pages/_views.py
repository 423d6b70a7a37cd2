"""Drawing helpers shared by the Explain and Stability pages: the empty state, the
loaded model, the escaped word heatmap, small plotly charts and the stability badge.

User text reaches the page only as escaped HTML (``core.report.heatmap_html``),
escaped markdown, plotly labels through ``plot_text``, or plain widget options.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import streamlit as st

from core.figures import plot_text
from core.errors import TenshotError
from core.project import load_classifier
from core.report import AGAINST, INDIGO, TOWARDS, heatmap_html, legend_html, style_figure
from core.explain.stability import MODERATE, STABLE
from pages._shared import backbone, db_path, escape_markdown, show_error, store

__all__ = ["require_model", "model_backbone", "heatmap", "legend", "class_picker",
           "probability_figure", "word_figure", "phrases_figure", "spearman_figure",
           "topk_figure", "stability_badge", "short", "remember"]

GREY = "#9CA3AF"
BADGE = {STABLE: ("green", ":material/verified:"), MODERATE: ("orange", ":material/warning:")}


def no_model_yet(project, shows: str) -> None:
    """The empty state of a page that needs a model: the next step, then stop.

    shows: what the page will show once there is a model ("its predictions ...").
    """
    if not store().texts(project.id):
        st.info("Add some sentences first: type, paste or upload them on the Data page.",
                icon=":material/upload:")
        st.page_link("pages/data.py", label="Go to Data", icon=":material/upload:")
    else:
        st.info(f"No model yet. Label at least 2 sentences per class to train a first model; "
                f"then {shows} appear here.", icon=":material/school:")
        st.page_link("pages/label.py", label="Go to Label", icon=":material/label:")
    st.stop()


def require_model(project):
    """(latest ModelVersion, Classifier); otherwise the empty state with the next step, and stop."""
    s = store()
    latest = s.latest_model(project.id)
    if latest is None:
        no_model_yet(project, "its explanations and stability")
    key = ("_classifier", db_path(), latest.id)
    if key not in st.session_state:
        st.session_state[key] = load_classifier(latest)
    return latest, st.session_state[key]


def model_backbone(clf):
    """The model's backbone; explains and stops when it cannot be loaded or has no tokens."""
    try:
        bb = backbone(clf.settings.backbone)
    except TenshotError as err:
        show_error(err)
        st.stop()
    return bb


def remember(key, compute, limit: int = 12):
    """compute() once per key in this session. Token states of a long text under SmolLM2
    take a few MB, so only the last few are kept."""
    cache = st.session_state.setdefault("_views_cache", {})
    if key not in cache:
        cache[key] = compute()
        while len(cache) > limit:
            cache.pop(next(iter(cache)))
    return cache[key]


def short(text: str, n: int = 90) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= n else one_line[: n - 1] + "…"


def heatmap(text: str, pieces, *, scale: float | None = None) -> None:
    st.html(heatmap_html(text, pieces, scale=scale))


def legend(class_name: str) -> None:
    st.html(legend_html(class_name))


def class_picker(label: str, classes: list[str], default: str, key: str, help: str | None = None) -> str:
    """A segmented control for a few classes, a selectbox for many; names shown as text."""
    if len(classes) <= 5 and sum(len(c) for c in classes) <= 80:
        return st.segmented_control(label, classes, default=default, key=key, required=True,
                                    format_func=escape_markdown, help=help)
    return st.selectbox(label, classes, index=classes.index(default), key=key, help=help)


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


def topk_figure(result, tokens: Sequence[str]):
    """Bars: per token of the sentence, the share of refits that put it in their top k."""
    import plotly.graph_objects as go

    labels = [plot_text(tokens[p].strip() or "␣") for p in result["positions"]]
    x = list(range(len(labels)))
    fig = go.Figure(go.Bar(
        x=x, y=result["in_topk"], customdata=labels,
        marker_color=[f"rgb{TOWARDS}" if v > 0 else f"rgb{AGAINST}" for v in result["full"]],
        hovertemplate="%{customdata}: in the top %{meta} of %{y:.0%} of refits<extra></extra>",
        meta=result["k"]))
    fig.update_layout(title=f"How often each token is among the {result['k']} strongest",
                      xaxis=dict(tickvals=x, ticktext=labels, tickangle=-35),
                      yaxis=dict(title="share of refits", tickformat=".0%", range=[0, 1.05]))
    return style_figure(fig, height=320)


def stability_badge(result, *, where: str = "explanation") -> None:
    """The badge for a token-rank stability result, with its two numbers."""
    colour, icon = BADGE.get(result["badge"], ("red", ":material/error:"))
    st.badge(f"{where.capitalize()} {result['badge']}", color=colour, icon=icon)
    st.caption(f"Across the bootstrap refits the word ranking keeps a median Spearman "
               f"correlation of {result['median_spearman']:.2f}, and {result['mean_topk_overlap']:.0%} "
               f"of the {result['k']} strongest tokens stay among the {result['k']} strongest.")
