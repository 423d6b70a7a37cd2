"""How much tenshot accepts: upload size, sentence length and project size.

There is no module-level setting to patch: the store and the file readers take a
``Limits`` (``Store.open(path, limits=...)``, ``read_records(..., limits=...)``), and
the app and the CLI build theirs with ``Limits.from_env()`` so a deployment can change
them without code.
"""

import os
from dataclasses import dataclass
from typing import Mapping

from core.errors import InputError

__all__ = ["DEFAULT_LIMITS", "ENV_NAMES", "Limits"]

# environment variable -> Limits field, for Limits.from_env
ENV_NAMES = {"TENSHOT_MAX_UPLOAD_BYTES": "upload_bytes", "TENSHOT_MAX_TEXT_CHARS": "text_chars",
             "TENSHOT_MAX_PROJECT_TEXTS": "project_texts"}


@dataclass(frozen=True)
class Limits:
    """Maximums shown in the UI and enforced on import."""

    upload_bytes: int = 25 * 1024 * 1024
    text_chars: int = 5_000
    project_texts: int = 100_000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Limits":
        """The defaults, with any ``TENSHOT_MAX_*`` variable of ``environ`` (default:
        the process environment) replacing its field, e.g. TENSHOT_MAX_PROJECT_TEXTS=500."""
        environ = os.environ if environ is None else environ
        changes = {}
        for name, field in ENV_NAMES.items():
            raw = environ.get(name)
            if raw is None:
                continue
            try:
                value = int(raw)
            except ValueError:
                value = 0
            if value < 1:
                raise InputError(f"{name} must be a whole number above 0; got {raw!r}.")
            changes[field] = value
        return cls(**changes)


DEFAULT_LIMITS = Limits()
