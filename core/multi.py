"""Multi-backbone fusion (LLMEmbed-style): several backbones' features under one head.

A group is written with "+" between registry names, e.g. ``smollm2-135m+minilm-l6``.
Its pooled features are every part's (n, layers + 1, hidden) array stacked along the
layer axis and zero-padded to the widest hidden size, so the rest of the pipeline
(cache, store, bootstrap) still sees one (n, n_states, width) array:

    X[:, offset_p : offset_p + n_states_p, :width_p] == features of part p.

Feature selection runs within each part under the project's mode; the head then sees
the parts' columns side by side and standardises every column, so each backbone's
block is standardised on its own. Each part is mean-pooled over its own tokens, so a
part's token attributions stay exact and the parts' sums plus the constant give the
logit. Generative parts get the task prompt; sentence encoders get the bare text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .backbones import REGISTRY, load_backbone
from .errors import InputError

if TYPE_CHECKING:
    from .explain import Attribution

__all__ = ["SEP", "ENCODERS", "BackboneGroup", "Part", "is_group", "group_parts", "load_group", "group_attributions",
           "part_prompt", "embed_group"]

SEP = "+"
# sentence encoders: trained to embed bare sentences, so they get no task prompt
ENCODERS = frozenset({"minilm-l6"})


@dataclass(frozen=True)
class Part:
    """Where one backbone's features sit inside a group's padded X."""

    name: str
    offset: int
    n_states: int
    width: int

    @property
    def rows(self) -> slice:
        return slice(self.offset, self.offset + self.n_states)


def is_group(spec: object) -> bool:
    """True for "a+b" written with registry names (a path that exists is never a group)."""
    return isinstance(spec, str) and SEP in spec and not Path(spec).exists()


def group_parts(spec: str) -> list[Part]:
    """The parts of a group spec, from the registry's layer counts and widths."""
    names = [n.strip() for n in spec.split(SEP)]
    unknown = [n for n in names if n not in REGISTRY]
    if unknown or len(names) < 2 or len(set(names)) != len(names):
        raise InputError(
            f"A multi-backbone spec joins 2 or more different packaged backbones with '+', "
            f"e.g. 'smollm2-135m+minilm-l6'; {spec!r} has "
            + (f"unknown names {unknown}. Known: {', '.join(REGISTRY)}." if unknown
               else "too few or repeated names."))
    parts, offset = [], 0
    for name in names:
        entry = REGISTRY[name]
        parts.append(Part(name, offset, entry.layers + 1, entry.hidden))
        offset += entry.layers + 1
    return parts


def part_prompt(name: str, prompt: str | None) -> str | None:
    """The prompt one part gets: the task prompt, or none for a sentence encoder."""
    return None if name in ENCODERS else prompt


@dataclass(frozen=True)
class BackboneGroup:
    """Several loaded backbones used together; quacks like a Backbone where it can."""

    name: str
    backbones: tuple
    parts: tuple

    @property
    def fingerprint(self) -> str:
        return SEP.join(b.fingerprint for b in self.backbones)

    @property
    def n_layers(self) -> int:
        """Hidden-state rows of the padded X (every part's layers + 1, stacked)."""
        return sum(p.n_states for p in self.parts)

    @property
    def hidden_size(self) -> int:
        return max(p.width for p in self.parts)

    @property
    def tokenizer(self):
        """The first part's tokenizer (SHAP's text masker splits words with it)."""
        return self.backbones[0].tokenizer

    @property
    def device(self) -> str:
        return getattr(self.backbones[0], "device", "cpu")


def load_group(spec: str, **kwargs) -> BackboneGroup:
    """Load every part of "a+b"; keyword arguments go to each ``load_backbone``."""
    parts = group_parts(spec)
    backbones = tuple(load_backbone(p.name, **kwargs) for p in parts)
    for part, bb in zip(parts, backbones):
        if (bb.n_layers, bb.hidden_size) != (part.n_states, part.width):
            raise InputError(f"Backbone {part.name} has {bb.n_layers} hidden states of width "
                             f"{bb.hidden_size}; the registry says {part.n_states} × {part.width}.")
    return BackboneGroup(SEP.join(p.name for p in parts), backbones, tuple(parts))


def embed_group(group: BackboneGroup, texts, *, pooling: str, prompt: str | None, max_length: int,
                cache=None, progress=None) -> np.ndarray:
    """Padded X (n, sum of n_states, widest hidden) of texts; each part cached on its own."""
    from .embed import embed

    n = len(texts)
    X = np.zeros((n, group.n_layers, group.hidden_size), dtype=np.float32)
    for i, (part, bb) in enumerate(zip(group.parts, group.backbones)):
        step = None
        if progress is not None:
            step = lambda done, total, i=i: progress(i * total + done, len(group.parts) * total)
        X[:, part.rows, :part.width] = embed(bb, texts, pooling=pooling, prompt=part_prompt(part.name, prompt),
                                             max_length=max_length, cache=cache, progress=step)
    return X


def group_attributions(group: BackboneGroup, clf, text: str) -> list[tuple[str, Attribution]]:
    """Exact token attributions of a fused model, one ``Attribution`` per backbone.

    Each part's ``values`` are its own tokens' contributions (its tokenizer, its prompt);
    every part carries the model's one ``constant`` and ``logits``, and under mean pooling
    the parts' summed values plus the constant equal the logits.
    """
    from .classifier import features_for
    from .embed import token_states
    from .explain import Attribution, linear_weights, token_contributions

    s = clf.settings
    V, b = linear_weights(clf)
    logits = clf.decision_features(features_for(group, [text], s))[0].astype(np.float64)
    out = []
    for part, bb in zip(group.parts, group.backbones):
        states = token_states(bb, text, prompt=part_prompt(part.name, s.prompt), max_length=s.max_length)
        pooled = np.arange(len(states.tokens)) > 0  # the sink is never pooled
        values = token_contributions(states.hidden, pooled, V[part.rows, :part.width])
        out.append((part.name, Attribution(list(states.tokens), list(states.encoded.user_spans), values, b,
                                           logits, exact=s.pooling == "mean")))
    return out
