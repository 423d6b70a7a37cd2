"""Identities: a text is known by the sha256 of its UTF-8 bytes everywhere (the store's
de-duplication, the feature cache's keys, stored explanations)."""

import hashlib

__all__ = ["prompt_hash", "text_hash"]


def text_hash(text: str) -> str:
    """Return the identity of a text: the sha256 hex digest of its UTF-8 bytes.

    The text is hashed exactly as given; the store strips whitespace before it
    saves a text, so hash the stored text. Example: ``text_hash("hi")`` starts
    with ``"8f434346"``.
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def prompt_hash(prompt: str | None) -> str:
    """Return the feature-cache key of a prompt template; ``None`` and ``""`` are the same key."""
    return text_hash(prompt or "")
