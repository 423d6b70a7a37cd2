"""Pooled features -> probabilities: the solver, the head, feature selection (layer,
fusion, STC), the classifier and its bundle, learning curves, the zero-shot baseline."""
