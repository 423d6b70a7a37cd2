"""tenshot: build a text classifier from a few dozen labels, on your own machine.

Run with: streamlit run app.py --server.headless true --server.address 127.0.0.1
"""

import streamlit as st

from pages._shared import current_project, escape_markdown, percent, store

# an emoji favicon is drawn in the page; a :material/...: one is fetched from fonts.gstatic.com,
# and nothing may leave the machine (tests/test_e2e_offline.py)
st.set_page_config(page_title="tenshot", page_icon="🎯", layout="wide")
# No "Download as CSV" in the tables' toolbars: that CSV keeps cells such as
# "=cmd|' /C calc'!A0" live for a spreadsheet. The Export page writes neutralised files.
# .streamlit/config.toml sets it from the first page; this covers a server started
# from another folder (it then applies from the session's next run).
st.set_option("client.disableDataExport", True)

PAGES = [
    st.Page("pages/projects.py", title="Projects", icon=":material/folder:", default=True),
    st.Page("pages/data.py", title="Data", icon=":material/upload:"),
    st.Page("pages/label.py", title="Label", icon=":material/label:"),
    st.Page("pages/predictions.py", title="Predictions", icon=":material/insights:"),
    st.Page("pages/explain.py", title="Explain", icon=":material/lightbulb:"),
    st.Page("pages/model.py", title="Model", icon=":material/tune:"),
    st.Page("pages/stability.py", title="Stability", icon=":material/balance:"),
    st.Page("pages/export.py", title="Export", icon=":material/download:"),
]


def _pick_project() -> None:
    st.session_state["project_id"] = st.session_state["_project_picker"]


def _sidebar() -> None:
    st.markdown("### :material/target: tenshot")
    st.caption("A text classifier from a few dozen labels, on your own machine.")
    projects = store().projects()
    if not projects:
        st.caption("No project yet: create one on the Projects page.")
        return
    ids = [p.id for p in projects]
    names = {p.id: p.name for p in projects}
    current = current_project()
    if current is None:
        current = projects[0]
        st.session_state["project_id"] = current.id
    # a page may have switched the project: keep the picker in step before it is drawn
    st.session_state["_project_picker"] = current.id
    st.selectbox("Project", ids, format_func=names.get, key="_project_picker",
                 on_change=_pick_project)
    counts = store().label_counts(current.id)
    n_texts = len(store().texts(current.id))
    model = store().latest_model(current.id)
    accuracy = ""
    if model is not None:
        score = "macro-F1 " if current.multi_label else ""
        metric = "cv_macro_f1" if current.multi_label else "cv_accuracy"
        accuracy = f" · model v{model.version}: {score}{percent(model.metrics.get(metric))}"
    noun = "sentence" if n_texts == 1 else "sentences"
    # a multi-label sentence may count in several classes, or in none ("none of these")
    n_labelled = len(store().label_sets(current.id)) if current.multi_label else sum(counts.values())
    st.caption(escape_markdown(f"{n_texts} {noun} · {n_labelled} labelled{accuracy}"))


# st.navigation before the sidebar: it switches off the legacy pages/ folder handling
page = st.navigation(PAGES)
with st.sidebar:
    _sidebar()
page.run()
