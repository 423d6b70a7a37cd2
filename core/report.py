"""The stakeholder report: one self-contained HTML file about a trained model, and the
pieces of it the Explain page draws too (the word heatmap, the legend, the sum check).
Its figures come from ``core.figures``.

Safety: everything a user typed (project name, class names, prompt, sentences) enters
the HTML through ``html.escape``; inside plotly figures it goes through
``core.figures.plot_text``, and plotly's JSON encoder writes "<" as \\u003c, so no user text
can close a <script>. plotly.js is inlined once, so the file works offline (~4.7 MB).

Shortcuts admitted: the example sentences are explained with coefficient
attributions only (SHAP costs seconds per sentence), and every figure is a snapshot.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Sequence

import numpy as np
from scipy.special import softmax

from core.figures import (AGAINST, FONT, GREY, INDIGO, TOWARDS, agreement_figure, confusion_figure,
                          curve_figure, layer_figure, layer_weights_figure, oob_figure, rgba,
                          sign_figure, style_figure)
from core.explain.attributions import layer_weights_by_backbone
from core.explain.sentence import sentence_attribution
from core.explain.stability import load_stability
from core.explain.words import Piece, text_segments, word_attributions
from core.learn.classifier import features_for
from core.learn.coverage import temperature_of
from core.learn.curves import diagnose, labels_needed, profile_layers
from core.learn.features import FeatureSpec

__all__ = ["EXACT_TOLERANCE", "Example", "example_of", "exactness_text", "heatmap_html",
           "legend_html", "pick_examples", "model_card", "build_report", "stakeholder_report",
           "report_filename"]

EXACT_TOLERANCE = 1e-4


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
               label: str | None = None, temperature: float = 1.0) -> Example:
    """An Example from a ``core.explain.attributions.Attribution`` of ``text``; class: the predicted one
    unless ``class_index`` is given. temperature: the model's calibration
    (``core.learn.coverage.temperature_of``), so the probabilities are the ones the
    Predictions page and the export show."""
    probs = softmax(np.asarray(attribution.logits, dtype=np.float64) / temperature)
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
        out.append(f'<span title="{tip}" style="background:{rgba(colour, 0.06 + 0.84 * strength)};'
                   f'color:{ink};border-radius:0.3em;padding:0.1em 0.15em">{body}</span>')
    return ('<div class="tenshot-heatmap" style="font-size:1.2rem;line-height:2.1;white-space:pre-wrap;'
            'overflow-wrap:anywhere;padding:0.6rem 0.9rem;border:1px solid rgba(49,51,63,0.15);'
            f'border-radius:0.6rem;background:#ffffff;color:#111827">{"".join(out)}</div>')


def legend_html(class_name: str) -> str:
    """A colour bar saying which colour pushes towards or away from ``class_name``."""
    name = html.escape(class_name)
    bar = f"linear-gradient(to right,{rgba(AGAINST, 0.9)},#ffffff,{rgba(TOWARDS, 0.9)})"
    return ('<div style="display:flex;flex-wrap:wrap;align-items:center;gap:0.2rem 0.5rem;'
            'font-size:0.8rem;color:#6b7280;margin-top:0.35rem">'
            f'<span style="white-space:nowrap">away from “{name}”</span>'
            f'<span style="flex:0 0 6rem;height:0.6rem;border-radius:0.3rem;background:{bar};'
            'border:1px solid rgba(49,51,63,0.15)"></span>'
            f'<span style="white-space:nowrap">towards “{name}”</span></div>')


def pick_examples(predictions: Sequence, labelled: Sequence, classes: Sequence[str], *,
                  first: str | None = None, limit: int = 5) -> list[tuple[str, str | None]]:
    """(text, label or None) pairs worth showing, confident ones first.

    The most confident unlabelled prediction of each class, most confident first (a
    reader meets the model where it is sure before where it guesses); then ``first``
    (the sentence the user was looking at, always kept); then the least confident
    prediction, as the honest "unsure" case; labelled texts (one per class) fill in when
    there are few predictions.

    predictions: objects with .text, .label, .confidence; labelled: with .text, .label.
    """
    labels = {r.text: r.label for r in labelled}
    ranked = sorted(predictions, key=lambda p: -p.confidence)
    confident = [best for name in classes
                 if (best := next((p for p in ranked if p.label == name and p.text != first), None))]
    confident.sort(key=lambda p: -p.confidence)
    out: dict[str, str | None] = {p.text: None for p in confident[:limit - (1 if first else 0)]}
    if first:
        out[first] = labels.get(first)
    if ranked and ranked[-1].text not in out and len(out) < limit:
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
""" % FONT


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
            cv = model.metrics.get("cv_accuracy")
            best = max(float(diagnostics.curve.mean.max()), cv or 0.0)
            target = min(0.99, max(0.5, round(best + 0.05, 2)))
            charts.append(fig(style_figure(curve_figure(
                diagnostics.curve, labels_needed(diagnostics.curve, target, current=cv)))))
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


def stakeholder_report(store, project, backbone, clf, model, *, first: str | None = None,
                       diagnostics=None, profile: dict | None = None, with_profile: bool = True,
                       cache=None, attribute: Callable | None = None,
                       progress: Callable[[float, str], None] | None = None) -> bytes:
    """The report of ``model`` (a stored ``ModelVersion`` of ``project``) as UTF-8 HTML.

    clf: the model's Classifier, on ``backbone``. diagnostics, profile: the Model page's,
    when computed already; otherwise the learning curve is computed here, and the layer
    profile too when ``with_profile`` (each re-reads the labelled sentences, through
    ``cache``). first: a sentence to show among the examples (after the confident ones). attribute(text) -> Attribution,
    by default ``sentence_attribution``'s (pass a cached one). progress(share 0..1, what).
    """
    say = progress or (lambda share, what: None)
    rows = [r for r in store.labelled(project.id) if r.label in clf.classes]
    texts, labels = [r.text for r in rows], [r.label for r in rows]
    if diagnostics is None:
        diagnostics = diagnose(clf, features_for(backbone, texts, clf.settings, cache=cache), labels,
                               progress=lambda d, t: say(0.6 * d / t, "Learning curve..."))
    if profile is None and with_profile:
        profile = profile_layers(backbone, texts, labels, clf, cache=cache, progress=lambda d, t:
                                 say(0.6 + 0.3 * d / t, f"Layer profile: {d}/{t}"))
    say(0.95, "Explaining examples...")
    attribute = attribute or (lambda text: sentence_attribution(backbone, clf, text)[1])
    examples = [example_of(attribute(t), clf.classes, t, label=lab, temperature=temperature_of(clf))
                for t, lab in pick_examples(store.predictions(model.id), rows, clf.classes, first=first)]
    html_text = build_report(project.name, model, examples, diagnostics=diagnostics, profile=profile,
                             layer_shares=layer_weights_by_backbone(clf),
                             stability=load_stability(store, model.id))
    return html_text.encode("utf-8")
