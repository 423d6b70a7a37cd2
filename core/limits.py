"""How much tenshot accepts: upload size, sentence length and project size."""

from dataclasses import dataclass

__all__ = ["LIMITS", "Limits"]


@dataclass(frozen=True)
class Limits:
    """Maximums shown in the UI and enforced on import."""

    upload_bytes: int = 25 * 1024 * 1024
    text_chars: int = 5_000
    project_texts: int = 100_000


LIMITS = Limits()
