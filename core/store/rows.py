"""The immutable row types the store returns. Plain values: no connection, no lazy loading."""

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "Project",
    "AddResult",
    "TextRow",
    "Label",
    "LabelSet",
    "ModelVersion",
    "Prediction",
    "Job",
    "JOB_STATUSES",
]

#: Allowed values of ``Job.status``; a job starts as ``"running"``.
#: ``interrupted``: the process running it is gone (see ``core.jobs.mark_interrupted``).
JOB_STATUSES = ("running", "done", "failed", "cancelled", "interrupted")


@dataclass(frozen=True)
class Project:
    """A project: its classes live in the ``classes`` table, ``settings`` is free-form JSON."""

    id: int
    name: str
    task_type: str
    settings: dict[str, Any] = field(hash=False)

    @property
    def multi_label(self) -> bool:
        """Whether a text may have zero, one or many classes (``task_type`` multi_label)."""
        return self.task_type == "multi_label"


@dataclass(frozen=True)
class AddResult:
    """What ``Store.add_texts`` did.

    ``text_ids`` is aligned with the non-empty inputs after de-duplication (first
    occurrence kept, input order), and includes the ids of texts the project
    already had. Example: inputs ``["a", " ", "b", "a"]`` in a project that
    already holds ``"b"`` give ``added=1, duplicates=2, empty=1`` and two ids.
    ``labelled`` counts the labels that changed: a label a text already had is not one.
    """

    added: int
    duplicates: int
    empty: int
    text_ids: list[int]
    labelled: int = 0


class TextRow(NamedTuple):
    """A stored text; unpacks as ``(id, text)``."""

    id: int
    text: str


class Label(NamedTuple):
    """A labelled text; unpacks as ``(text_id, text, label)``."""

    text_id: int
    text: str
    label: str


class LabelSet(NamedTuple):
    """A labelled text of a multi-label project; unpacks as ``(text_id, text, labels)``.

    labels: class names in class order; ``()`` is the answer "none of these".
    """

    text_id: int
    text: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class ModelVersion:
    """A trained head saved by ``Store.save_model``.

    ``state`` is unpacked eagerly by ``Store.model`` and ``Store.latest_model``;
    ``Store.models`` lists versions with ``state=None`` so that listing stays cheap.
    """

    id: int
    version: int
    created_at: str
    params: dict[str, Any] = field(hash=False)
    metrics: dict[str, Any] = field(hash=False)
    n_labels: int
    state: dict[str, np.ndarray] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Prediction:
    """One model's prediction for one text.

    ``label`` is the predicted class's current name; ``probs`` maps class names,
    as they were when the model predicted, to probabilities.
    """

    text_id: int
    text: str
    label: str
    confidence: float
    probs: dict[str, float] = field(hash=False)


@dataclass(frozen=True)
class Job:
    """Progress of background work (embedding, SHAP, bootstrap): ``done`` of ``total`` steps."""

    id: int
    project_id: int
    kind: str
    status: str
    done: int
    total: int
    message: str | None
    created_at: str
    updated_at: str
    pid: int | None = None  # the process running the job, and its start time (epoch seconds)
    process_started: float | None = None
