"""tenshot's library: everything the app, the CLI and the Python API share (no streamlit).

Imports run one way: services (this folder) -> explain -> learn -> model -> errors;
the store depends only on errors, hashing and limits. See core/README.md.
"""
