"""tenshot's persistence layer: one SQLite file per workspace, holding every SQL statement.

``Store`` is the one facade, assembled from a file per table group (as sqlite-utils
keeps one ``Database`` with a module per concern):

- :mod:`core.store.connection`: opening, transactions, lock retries, shared lookups;
- :mod:`core.store.projects`: projects and their settings;
- :mod:`core.store.classes`: classes, class changes and their undo;
- :mod:`core.store.texts`: texts, labels, label events and label undo;
- :mod:`core.store.label_sets`: multi-label projects' label sets and "none of these";
- :mod:`core.store.edits`: deleting and editing single texts, and their undo;
- :mod:`core.store.features`: the feature cache;
- :mod:`core.store.models`: model versions and stored explanations;
- :mod:`core.store.predictions`: predictions, one blob per model version;
- :mod:`core.store.jobs`: progress of long work;
- :mod:`core.store.schema`: connection settings and schema versioning;
  :mod:`core.store.migrations` the table layout and forward migrations; :mod:`core.store.rows`
  the row types; :mod:`core.store.codec` JSON and array blobs.

Every public method that writes runs in one transaction and returns after it is
committed, so an acknowledged label survives a crash. A project is single-label or
multi-label (``create_project(..., task_type=...)``). Shortcuts: undo of labels
and undo of class changes are two separate stacks; label undo is per labeller
(``session``), class undo is per project.

Example::

    with Store.open("work.db") as store:
        project = store.create_project("reviews", ["negative", "positive"])
        ids = store.add_texts(project.id, ["great phone", "awful battery"]).text_ids
        store.set_label(project.id, ids[0], "positive")
"""

from core.store.classes import ClassesMixin
from core.store.edits import TextEditsMixin
from core.store.features import FeatureCacheMixin
from core.store.jobs import JobsMixin
from core.store.label_sets import LabelSetsMixin
from core.store.models import ModelsMixin
from core.store.predictions import PredictionsMixin
from core.store.projects import ProjectsMixin
from core.store.rows import AddResult, Job, Label, LabelSet, ModelVersion, Prediction, Project, TextRow
from core.store.schema import SCHEMA_VERSION
from core.store.texts import TextsMixin

__all__ = ["SCHEMA_VERSION", "AddResult", "Job", "Label", "LabelSet", "ModelVersion", "Prediction", "Project",
           "Store", "TextRow"]


class Store(ProjectsMixin, ClassesMixin, TextsMixin, LabelSetsMixin, TextEditsMixin, FeatureCacheMixin,
            ModelsMixin, PredictionsMixin, JobsMixin):
    """A tenshot workspace. Open with ``Store.open(path)``; use one per thread."""
