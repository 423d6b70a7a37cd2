"""The Model page on a trained tiny-model project: metrics, diagnostics charts, settings,
prompt comparison."""

from __future__ import annotations

from core.store import Store
from tests.helpers import CLASSES, N_LABELLED, open_page, plotly_array, plotly_specs


def _chart(at, title: str) -> dict:
    specs = [s for s in plotly_specs(at) if title in str(s["layout"].get("title", ""))]
    assert len(specs) == 1, [s["layout"].get("title") for s in plotly_specs(at)]
    return specs[0]


def test_shows_cross_validated_metrics(workspace):
    db, pid, _ = workspace
    at = open_page("model")
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    with Store.open(db) as store:
        latest = store.latest_model(pid)
    assert metrics["Model"] == "v2"
    assert metrics["CV accuracy"] == f"{latest.metrics['cv_accuracy']:.0%}"
    assert metrics["Labels"] == str(2 * N_LABELLED)
    _chart(at, "Accuracy by model version")


def test_diagnostics_draw_confusion_matrix_and_learning_curve(workspace):
    at = open_page("model")
    at.button(key="m_diag").click().run()
    assert not at.exception
    heat = _chart(at, "Confusion matrix")["data"][0]
    assert heat["x"] == CLASSES and heat["y"] == CLASSES
    assert plotly_array(heat["z"]).sum() == 2 * N_LABELLED  # every label predicted once
    curve = _chart(at, "Learning curve")
    measured = next(t for t in curve["data"] if t.get("name") == "held-out accuracy")
    sizes = plotly_array(measured["x"])
    assert sizes[0] == 2 and (plotly_array(measured["y"]) <= 1).all()
    assert any("to reach" in m.value or "already reaches" in m.value or "levels off" in m.value
               for m in at.markdown)
    # cached per model version: a rerun keeps the charts without recomputing
    at.run()
    _chart(at, "Confusion matrix")


def test_labels_needed_agrees_with_the_cv_accuracy_shown(workspace):
    # issue 15 bug 5: "19 more labels to reach 55%" while the page showed CV accuracy 56%
    db, pid, _ = workspace
    with Store.open(db) as store:
        cv = store.latest_model(pid).metrics["cv_accuracy"]
    at = open_page("model")
    at.button(key="m_diag").click().run()
    measured = next(t for t in _chart(at, "Learning curve")["data"]
                    if t.get("name") == "held-out accuracy")
    target = max(50, int(cv * 100))
    assert plotly_array(measured["y"]).max() < target / 100, "the curve's points lie below the CV accuracy"
    at.slider(key="m_target").set_value(target).run()
    assert not at.exception
    text = "\n".join(m.value for m in at.markdown)
    assert f"The model already reaches {target}%" in text and "more labels" not in text


def test_layer_profile_has_one_line_per_pooling(workspace):
    at = open_page("model")
    # issue 15 bug 3: a reload during the profile lost it without warning
    assert any("a reload loses the profile" in c.value for c in at.caption)
    at.button(key="m_layers").click().run()
    assert not at.exception
    lines = _chart(at, "each layer")["data"]
    assert [t["name"] for t in lines] == ["mean", "last", "max"]
    assert all(len(plotly_array(t["y"])) == 3 for t in lines)  # embeddings + 2 layers


def test_saving_settings_updates_the_project_and_retrains(workspace):
    db, pid, _ = workspace
    at = open_page("model")
    at.selectbox(key="m_penalty").set_value("l2")
    at.button(key="m_save").click().run()
    assert not at.exception
    with Store.open(db) as store:
        assert store.project(pid).settings["penalty"] == "l2"
        latest = store.latest_model(pid)
    assert latest.version == 3 and latest.params["settings"]["penalty"] == "l2"
    assert any("Model v3 trained" in s.value for s in at.success)



def test_the_longest_sentence_is_a_setting(workspace):
    db, pid, _ = workspace
    at = open_page("model")
    assert at.number_input(key="m_max_length").value == 256
    at.number_input(key="m_max_length").set_value(64)
    at.button(key="m_save").click().run()
    assert not at.exception
    with Store.open(db) as store:
        assert store.project(pid).settings["max_length"] == 64
        assert store.latest_model(pid).params["settings"]["max_length"] == 64

def test_a_prompt_without_text_placeholder_cannot_be_saved(workspace):
    db, pid, _ = workspace
    at = open_page("model")
    at.text_area(key="m_prompt").input("Review:").run()
    assert any("{text} exactly once" in w.value for w in at.warning)
    assert at.button(key="m_save").disabled
    with Store.open(db) as store:
        assert store.project(pid).settings["prompt"] is None


def test_a_missing_backbone_folder_is_refused_in_plain_words(workspace, tmp_path):
    db, pid, _ = workspace
    at = open_page("model")
    at.text_input(key="m_path").input(str(tmp_path / "nowhere.gguf"))
    at.button(key="m_save").click().run()
    assert not at.exception
    assert any("No model file or folder" in e.value for e in at.error)
    with Store.open(db) as store:
        assert "nowhere" not in store.project(pid).settings["backbone"]


def test_compare_two_prompts_reports_both_accuracies(workspace):
    at = open_page("model")
    at.text_area(key="m_prompt_b").input("Review: {text}\nSentiment:")
    at.button(key="m_compare").click().run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Prompt A"].endswith("%") and metrics["Prompt B"].endswith("%")


def _open_tab(at) -> int:
    """The index of the tab the browser is told to show (the tab container's default)."""
    def containers(node):
        proto = getattr(node, "proto", None)
        fields = proto.DESCRIPTOR.fields_by_name if hasattr(proto, "DESCRIPTOR") else {}
        if "tab_container" in fields and proto.HasField("tab_container"):
            yield proto.tab_container
        for child in getattr(node, "children", {}).values():
            yield from containers(child)

    (tabs,) = list(containers(at._tree))
    return tabs.default_tab_index


def test_choosing_a_setting_keeps_the_settings_tab_open(workspace):
    # issue 15 item 9: any choice in Model settings jumped the view back to the Quality tab
    at = open_page("model")
    at.session_state["model_tab"] = "Settings"
    at.run()
    at.selectbox(key="m_mode").set_value("fusion").run()
    assert not at.exception
    assert _open_tab(at) == 1
    at.selectbox(key="m_pooling").set_value("max").run()
    assert _open_tab(at) == 1


def test_shows_the_device_and_dtype_the_backbone_runs_on(workspace):
    # issue 13: the Model page did not say where the model runs or in which precision
    at = open_page("model")
    assert not at.exception
    assert any("Runs on cpu · float32" in c.value for c in at.caption), [c.value for c in at.caption]


def test_the_page_states_what_the_head_reads_and_how_many_weights_are_non_zero(workspace):
    # issue 12: the design card asks for a sparse head; the page says what is sparse, in numbers
    db, pid, _ = workspace
    with Store.open(db) as store:
        m = store.latest_model(pid).metrics
    at = open_page("model")
    assert not at.exception
    note = next(c.value for c in at.caption if c.value.startswith("What is sparse")).replace("\\", "")
    # the workspace's project reads one layer of the tiny model's 3 hidden states
    assert "the head reads 1 of 3 hidden states" in note
    assert f"{m['n_nonzero']:,} of its {m['n_weights']:,} weights are non-zero" in note
    assert 0 < m["n_nonzero"] <= m["n_weights"]


def test_the_automatic_mode_help_names_its_threshold_and_fallback(workspace, monkeypatch):
    # issue 12 follow-up: the help said auto mode "tries the options below and keeps the best
    # by cross-validation", but below AUTO_MIN_PER_CLASS labels a class it uses the fixed fusion
    import core.learn.features as features
    import core.model.cache as cache

    monkeypatch.setattr(features, "AUTO_MIN_PER_CLASS", 48)  # the page reads the constants
    monkeypatch.setattr(cache, "FUSION_DEPTHS", (0.25, 0.5, 0.75))
    at = open_page("model")
    at.selectbox(key="m_penalty").set_value("l2")
    at.selectbox(key="m_mode").set_value("auto").run()
    assert not at.exception
    (auto,) = [c.value for c in at.caption if c.value.startswith("Automatic:")]
    assert "at least 48 labels in every class" in auto and "nested cross-validation" in auto
    assert "with fewer it uses Fusion (the hidden states at 25%, 50% and 75% of the network's depth" in auto
    assert "L2 (dense): every feature counts a little (the default" in auto
    at.selectbox(key="m_mode").set_value("fusion").run()
    assert any(c.value.startswith("Fusion (LLMEmbed): the hidden states at 25%, 50% and 75%")
               for c in at.caption)
    # the other modes choose within the band, which stops at the deepest fusion depth
    at.selectbox(key="m_mode").set_value("layer").run()
    assert any("cross-validates best, up to 75% of the depth" in c.value for c in at.caption)
