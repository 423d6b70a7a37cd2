"""A trained classifier: settings + feature spec + head, and how to train one.

This is the Python API's centre. It needs a backbone only to turn texts into
features; given features it is pure numpy/scikit-learn, so a saved classifier
predicts the same whether it is loaded from the store or from a bundle.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Callable, Sequence

import numpy as np

from core.errors import InputError
from core.learn.coverage import Calibration, calibrate, fit_calibration
from core.learn.features import OOF_KEY, FeatureSpec, select_features, select_group_features
from core.learn.head import Head, check_labels
from core.model.cache import FeatureCache
from core.model.embed import POOLINGS, features, truncated_count
from core.model.group import group_parts, is_fused
from core.model.registry import DEFAULT_BACKBONE, is_encoder
from core.model.tokens import DEFAULT_MAX_LENGTH

__all__ = ["DEFAULT_PROMPT", "MODES", "PENALTIES", "MIN_TOKENS", "MAX_TOKENS", "Settings", "Classifier",
           "default_prompt", "train", "features_for", "jsonable", "n_truncated", "with_settings"]

MODES = ("auto", "layer", "fusion", "stc")
MIN_TOKENS, MAX_TOKENS = 8, 4096  # the range of Settings.max_length
PENALTIES = ("l1", "elasticnet", "l2")
# A neutral task frame: a suffix that asks for a label makes the last tokens summarise
# the text, which measured better than the bare sentence (DESIGN.md's probe).
DEFAULT_PROMPT = "Text: {text}\nCategory:"


def default_prompt(backbone: str) -> str | None:
    """The prompt a backbone gets unless the user sets one: none for sentence encoders."""
    return None if is_encoder(backbone) else DEFAULT_PROMPT


@dataclass(frozen=True)
class Settings:
    """How a project turns text into a prediction. Stored as JSON with each model."""

    backbone: str = DEFAULT_BACKBONE
    prompt: str | None = DEFAULT_PROMPT
    pooling: str = "mean"
    mode: str = "auto"
    # chosen on the tuning half of bench/protocol.py (issue 12): the head is sparse in what
    # it reads (a few hidden states, core.learn.features), and within them L2 beat
    # elastic-net by 3.7 / 2.1 points and L1 by 8.7 / 3.9 points at 8 / 32 labels per class
    penalty: str = "l2"
    max_length: int = DEFAULT_MAX_LENGTH
    # echo embeddings (core.model.tokens.echo_template): the text twice, the second copy
    # pooled; causal decoders only, sentence encoders ignore it
    echo: bool = False

    def check(self) -> "Settings":
        if self.pooling not in POOLINGS:
            raise InputError(f"Unknown pooling '{self.pooling}'; choose one of {', '.join(POOLINGS)}.")
        if self.mode not in MODES:
            raise InputError(f"Unknown feature mode '{self.mode}'; choose one of {', '.join(MODES)}.")
        if self.penalty not in PENALTIES:
            raise InputError(f"Unknown penalty '{self.penalty}'; choose one of {', '.join(PENALTIES)}.")
        if self.prompt and self.prompt.count("{text}") != 1:
            raise InputError(f"The prompt template must contain {{text}} exactly once; got {self.prompt!r}.")
        if not MIN_TOKENS <= int(self.max_length) <= MAX_TOKENS:
            raise InputError(f"The longest sentence must be set between {MIN_TOKENS} and {MAX_TOKENS} "
                             f"tokens; got {self.max_length}.")
        if not isinstance(self.echo, bool):
            raise InputError(f"Echo embeddings are on (true) or off (false); got {self.echo!r}.")
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        # a model saved before echo existed stores no "echo": leaving the default out keeps
        # its settings equal to today's (the Model page and retrain compare these dicts)
        if not self.echo:
            del d["echo"]
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> "Settings":
        """Stored settings -> Settings. A stored dict that leaves out the backbone or the
        penalty was written under the defaults before issue 12 (SmolLM2 alone, elastic-net)
        and keeps them, so a saved project never changes backbone or head by itself."""
        known = {f.name for f in fields(cls)}
        return cls(**{**_STORED_DEFAULTS, **{k: v for k, v in (d or {}).items() if k in known}})


# what a stored settings dict without these fields meant (the defaults before issue 12)
_STORED_DEFAULTS = {"backbone": "smollm2-135m", "penalty": "elasticnet"}


@dataclass
class Classifier:
    """Everything needed to predict from pooled features.

    classes: class names, in the order of the head's outputs. Probabilities are
    calibrated by the temperature in ``metrics["calibration"]`` (core.learn.coverage);
    a model saved before calibration existed has none and keeps softmax(logits).
    """

    classes: list[str]
    settings: Settings
    spec: FeatureSpec
    head: Head
    metrics: dict = field(default_factory=dict)

    def predict_proba_features(self, X: np.ndarray) -> np.ndarray:
        """X: float32 (n, n_layers, hidden) pooled features -> (n, n_classes) probabilities."""
        cal = self.calibration
        if cal is None:
            return self.head.predict_proba(self.spec.transform(X))
        return calibrate(self.decision_features(X), cal.temperature)

    @property
    def calibration(self) -> Calibration | None:
        """The temperature and OOF confidences from training, or None for an older model."""
        return Calibration.from_json(self.metrics.get("calibration"))

    def decision_features(self, X: np.ndarray) -> np.ndarray:
        """Logits of shape (n, n_classes)."""
        return self.head.decision_function(self.spec.transform(X))

    def predict_proba(self, backbone, texts: Sequence[str], *, cache: FeatureCache | None = None,
                      progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Probabilities (n, n_classes) of texts; the forward stops after the deepest row
        the head reads (``spec.layers``), as the pool's predictions do."""
        return self.predict_proba_features(features_for(backbone, texts, self.settings, cache=cache,
                                                        progress=progress, rows=self.spec.layers))

    def predict(self, backbone, texts: Sequence[str], **kwargs) -> list[str]:
        probs = self.predict_proba(backbone, texts, **kwargs)
        return [self.classes[i] for i in probs.argmax(1)]

    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """JSON-able params and named arrays; the inverse is ``from_state``."""
        head_params, arrays = self.head.to_state()
        params = {"classes": self.classes, "settings": self.settings.to_dict(),
                  "spec": self.spec.to_json(), "head": head_params, "metrics": self.metrics}
        return params, arrays

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> "Classifier":
        return cls(list(params["classes"]), Settings.from_dict(params["settings"]),
                   FeatureSpec.from_json(params["spec"]), Head.from_state(params["head"], arrays),
                   dict(params.get("metrics", {})))


def features_for(backbone, texts: Sequence[str], settings: Settings, *,
                 cache: FeatureCache | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 rows: Sequence[int] | None = None) -> np.ndarray:
    """Pooled features (n, n_layers, hidden) of texts under the settings' prompt and pooling.

    For a backbone group (core.model.group) the parts' features are stacked and padded.
    rows: the rows read, e.g. the band of the settings' backbone (``band_rows``, what a
    submit reads); the layers above the deepest do not run and the rows above it are
    NaN. None reads every row.
    """
    return features(backbone, texts, pooling=settings.pooling, prompt=settings.prompt,
                    max_length=settings.max_length, cache=cache, progress=progress, echo=settings.echo,
                    rows=rows)


def n_truncated(backbone, texts: Sequence[str], settings: Settings) -> int:
    """How many texts are longer than ``settings.max_length`` tokens with the prompt (for
    any backbone of a group): they lose their end when embedded."""
    return truncated_count(backbone, texts, prompt=settings.prompt, max_length=settings.max_length,
                           echo=settings.echo)


def train(X: np.ndarray, labels: Sequence[str], classes: Sequence[str], settings: Settings, *,
          spec: FeatureSpec | None = None, random_state: int = 0) -> Classifier:
    """Fit a classifier on pooled features.

    X: float32 (n, n_layers, hidden); labels: n class names, each one of ``classes``.
    spec: reuse this feature spec (a fast refit that only re-selects C); when None the
    features are selected by CV according to ``settings.mode``.
    Raises NotEnoughLabels when some class has fewer than 2 labels.
    """
    settings.check()
    classes = list(classes)
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({lab for lab in labels if lab not in index})
    if unknown:
        raise InputError(f"Labels {unknown} are not classes of this project ({', '.join(classes)}).")
    y = np.array([index[lab] for lab in labels], dtype=int)
    check_labels(y, classes)
    report: dict = {}
    if spec is None and is_fused(settings.backbone):
        spec, report = select_group_features(X, y, group_parts(settings.backbone), mode=settings.mode,
                                             penalty=settings.penalty, random_state=random_state)
    elif spec is None:
        spec, report = select_features(X, y, mode=settings.mode, penalty=settings.penalty,
                                       random_state=random_state)
    head = Head(settings.penalty, random_state=random_state).fit(spec.transform(X), y)
    # auto mode's nested CV reran the selection in each fold: its logits are honest; the
    # head's own CV used a spec chosen with every label (optimistic after STC's selection)
    oof = report.pop(OOF_KEY, None)
    for part in report.get("parts", {}).values():
        part.pop(OOF_KEY, None)
    metrics = {"cv_accuracy": float(head.cv_accuracy_), "cv_macro_f1": float(head.cv_macro_f1_),
               "C": float(head.C_), "n_labels": int(len(y)), "n_features": int(spec.transform(X[:1]).shape[1]),
               "n_selected": int(len(head.selected_features())), "selection": jsonable(report),
               "n_nonzero": head.weight_counts()[0], "n_weights": head.weight_counts()[1],
               "reads": spec.reads(),
               "calibration": fit_calibration(head.oof_logits_ if oof is None else oof, y).to_json()}
    return Classifier(classes, settings, spec, head, metrics)


def jsonable(obj):
    """obj with numpy scalars and arrays as Python numbers and lists, and dict keys as
    strings: what a model's metrics hold, so they go into the store as JSON."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def with_settings(settings: Settings, **changes) -> Settings:
    """A copy of settings with some fields changed, checked."""
    return replace(settings, **changes).check()
