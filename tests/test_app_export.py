"""The Export page: CSV / JSONL downloads that parse back, and a model bundle that loads
and predicts like the stored model."""

from __future__ import annotations

import csv
import io
import json

from numpy.testing import assert_allclose

from core.model.loading import load_backbone
from core.learn.bundle import load_bundle
from core.project import load_classifier
from core.store import Store
from tests.helpers import CLASSES, N_LABELLED, UNLABELLED, open_page


def _one(downloads, suffix: str) -> bytes:
    (name,) = [n for n in downloads if n.endswith(suffix)]
    assert name.startswith("reviews-")
    return downloads[name]


def test_csv_and_jsonl_downloads_parse_back(workspace, downloads):
    db, pid, ids = workspace
    at = open_page("export")
    assert not at.exception
    with Store.open(db) as store:
        n_texts = len(store.texts(pid))
    rows = list(csv.DictReader(io.StringIO(_one(downloads, ".csv").decode("utf-8-sig"), newline="")))
    assert len(rows) == n_texts
    assert sum(r["label"] != "" for r in rows) == 2 * N_LABELLED
    assert all((r["label"] == "") != (r["predicted"] == "") for r in rows)
    by_id = {int(r["text_id"]): r for r in rows}
    assert by_id[ids[UNLABELLED[3]]]["text"] == "'" + UNLABELLED[3]  # formula neutralised
    assert by_id[ids[UNLABELLED[4]]]["text"] == UNLABELLED[4]
    assert {r["label"] or r["predicted"] for r in rows} <= set(CLASSES)
    records = [json.loads(line) for line in _one(downloads, ".jsonl").decode().splitlines()]
    assert {r["text"] for r in records} >= set(UNLABELLED)  # JSONL keeps text exactly
    assert all(r["probs"] is None for r in records if r["label"] is not None)


def test_labels_only_export(workspace, downloads):
    at = open_page("export")
    at.selectbox(key="export_include").set_value("labels").run()
    assert not at.exception
    rows = list(csv.DictReader(io.StringIO(_one(downloads, "-labels.csv").decode("utf-8-sig"))))
    assert len(rows) == 2 * N_LABELLED and {r["predicted"] for r in rows} == {""}


def test_bundle_loads_and_predicts_like_the_stored_model(workspace, downloads, tiny_model_dir):
    db, pid, _ = workspace
    at = open_page("export")
    assert not at.exception
    raw = _one(downloads, "-v2.tenshot.zip")
    clf = load_bundle(raw)
    with Store.open(db) as store:
        latest = store.latest_model(pid)
        preds = store.predictions(latest.id)  # what the freshly trained model predicted
    assert clf.classes == load_classifier(latest).classes
    bb = load_backbone(tiny_model_dir)
    probs = clf.predict_proba(bb, [p.text for p in preds])
    assert_allclose(probs, [[p.probs[c] for c in clf.classes] for p in preds], atol=1e-6)
    assert [clf.classes[i] for i in probs.argmax(1)] == [p.label for p in preds]
    assert any("tenshot predict --bundle reviews-v2.tenshot.zip" in c.value for c in at.code)


def test_empty_project_explains_the_next_step(fresh_workspace, tiny_model_dir, whole_app_reruns):
    with Store.open(fresh_workspace) as store:
        store.create_project("new", CLASSES, settings={"backbone": str(tiny_model_dir)})
    at = open_page("export")
    assert not at.exception
    assert "Nothing to export yet" in at.info[0].value
    assert "No model yet" in at.info[1].value


def test_the_stakeholder_report_is_on_the_export_page(workspace, downloads):
    # issue 15 item 9: the report could only be found on the Explain page
    at = open_page("export")
    at.checkbox(key="export_report_profile").uncheck()
    at.button(key="export_report_build").click().run()
    assert not at.exception
    (name,) = [n for n in downloads if n.endswith(".html")]
    assert name == "tenshot-report-reviews-v2.html"
    report = downloads[name].decode()
    assert "Model card" in report and "Learning curve" in report


def test_the_export_marks_predictions_below_the_chosen_threshold(workspace, downloads):
    # issue 15 item 12: the export had no way to say which predictions need a human
    at = open_page("export")
    at.toggle(key="export_mark").set_value(True).run()
    at.slider(key="export_cover_threshold").set_value(60).run()
    assert not at.exception
    rows = list(csv.DictReader(io.StringIO(_one(downloads, "-both.csv").decode("utf-8-sig"), newline="")))
    assert list(rows[0])[:6] == ["text_id", "text", "label", "predicted", "confidence", "needs_human"]
    predicted = [r for r in rows if r["predicted"]]
    assert [r["needs_human"] for r in predicted] == ["yes" if float(r["confidence"]) < 0.6 else "no"
                                                     for r in predicted]
    assert {r["needs_human"] for r in rows if r["label"]} == {""}
    below = sum(r["needs_human"] == "yes" for r in rows)
    assert 0 < below < len(predicted)  # both marks appear: the threshold splits the rows
    marked = "The other one is marked" if below == 1 else f"The other {below} are marked"
    assert any(marked in i.value for i in at.info)
    records = [json.loads(line) for line in _one(downloads, "-both.jsonl").decode().splitlines()]
    assert sum(r["needs_human"] is True for r in records) == below
