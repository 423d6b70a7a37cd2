"""The Explain page's class choice for a multi-label project (issue 16, item 7).

A multi-label model has one head per class, so an explanation is always of one class:
the page shows every class's probability and the predicted set, the user picks a class,
and the rest of the page (word colours, SHAP, what-if, what the model learned, the
report) runs on that class's own head as a yes/no classifier
(``MultiLabelClassifier.class_classifier``: classes ``["not <name>", name]``).
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from core.figures import probability_figure
from core.hashing import text_hash
from core.multilabel import effective_thresholds
from pages._multilabel import describe_set
from pages._shared import escape_markdown
from pages._views import class_picker

__all__ = ["multilabel_class_view"]


def multilabel_class_view(project, latest, clf, bb, text: str, label: str | None, attribute):
    """Draw the probabilities and the class picker; return (that class's binary view, its name).

    clf: the MultiLabelClassifier; attribute(clf) -> the text's Attribution under clf (its
    logits are each class's log-odds); label: the user's labels in words, or None.
    """
    logits = np.asarray(attribute(clf).logits, dtype=np.float64)
    probs = 0.5 * (1.0 + np.tanh(0.5 * logits))
    thresholds = effective_thresholds(project, latest)
    predicted = tuple(c for c, p in zip(clf.classes, probs) if p >= thresholds[c])
    left, right = st.columns([3, 2], vertical_alignment="center")
    with left:
        name = class_picker("Explain the class", clf.classes, clf.classes[int(probs.argmax())],
                            key=f"ex_mlclass_{latest.id}_{text_hash(text)[:16]}",
                            help="Each class has its own yes/no model: the colours below show "
                                 "what pushes this class's probability up or down.")
        k = clf.classes.index(name)
        verdict = "in" if name in predicted else "not in"
        st.markdown(escape_markdown(f"Predicted set: {describe_set(predicted)}")
                    + ("" if label is None else "  \n" + escape_markdown(f"Your labels: {label}")))
        st.caption(escape_markdown(f"“{name}”: probability {probs[k]:.0%}, threshold "
                                   f"{thresholds[name]:.0%}, so it is {verdict} the predicted set."))
    with right:
        st.plotly_chart(probability_figure(clf.classes, probs, highlight=name), key="ex_ml_probs")
        st.caption("Each class on its own: the probabilities need not add up to 100%.")
    return clf.class_classifier(name), name
