"""Backbone groups (LLMEmbed-style fusion): several backbones' features under one head.

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

This module owns the question "is this backbone fused?" (``is_fused``) and the
per-part view of any backbone (``parts_of``). Loading a group is in
``core.model.loading``; embedding one in ``core.model.embed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from core.errors import InputError
from core.model.registry import REGISTRY, is_encoder

__all__ = ["SEP", "BackboneGroup", "Part", "PartView", "is_fused", "group_parts", "part_prompt",
           "parts_of"]

SEP = "+"


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


def is_fused(backbone: object) -> bool:
    """Whether ``backbone`` is a group of several backbones.

    Takes a loaded backbone (a ``BackboneGroup`` is fused) or a backbone spec: "a+b"
    written with registry names is a group, but a path that exists never is.
    """
    if isinstance(backbone, BackboneGroup):
        return True
    return isinstance(backbone, str) and SEP in backbone and not Path(backbone).exists()


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
    return None if is_encoder(name) else prompt


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


class PartView(NamedTuple):
    """One backbone of a (possibly fused) model: its part (None for a single backbone),
    the loaded backbone and the prompt it gets."""

    part: Part | None
    backbone: object
    prompt: str | None


def parts_of(backbone, prompt: str | None) -> list[PartView]:
    """Every backbone that runs for a model on ``backbone``, with the prompt each gets.

    A single backbone is one view with ``part=None``; a group has one per part, in the
    order of its rows in the padded X (``Part.rows``).
    """
    if not is_fused(backbone):
        return [PartView(None, backbone, prompt)]
    return [PartView(part, bb, part_prompt(part.name, prompt))
            for part, bb in zip(backbone.parts, backbone.backbones)]
