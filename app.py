"""tenshot: build a text classifier from a few dozen labels, on your own machine."""

import streamlit as st

from pages._shared import current_project, store

st.set_page_config(page_title="tenshot", page_icon=":material/target:", layout="wide")

PAGES = [
    st.Page("pages/projects.py", title="Projects", icon=":material/folder:", default=True),
    st.Page("pages/data.py", title="Data", icon=":material/upload:"),
    st.Page("pages/label.py", title="Label", icon=":material/label:"),
    st.Page("pages/predictions.py", title="Predictions", icon=":material/insights:"),
    st.Page("pages/model.py", title="Model", icon=":material/tune:"),
    st.Page("pages/export.py", title="Export", icon=":material/download:"),
]

with st.sidebar:
    st.markdown("### tenshot")
    projects = store().projects()
    if projects:
        ids = [p.id for p in projects]
        names = {p.id: p.name for p in projects}
        current = current_project()
        choice = st.selectbox("Project", ids, format_func=names.get,
                              index=ids.index(current.id) if current else 0)
        st.session_state["project_id"] = choice
    else:
        st.caption("No project yet.")

st.navigation(PAGES).run()
