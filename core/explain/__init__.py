"""Why a classifier decides: exact linear token attributions, SHAP, word pieces and the
agreement of two views, and bootstrap stability."""
