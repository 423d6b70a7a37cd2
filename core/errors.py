"""Named exceptions. Every error a user can cause derives from TenshotError.

Messages say what was received, what was expected, and what to do next; the UI
and the CLI show ``str(err)`` as-is, so it must read as plain language.
"""

__all__ = [
    "TenshotError",
    "BackboneError",
    "BackboneUnavailable",
    "InputError",
    "NotEnoughLabels",
    "StoreError",
    "UnknownProject",
    "BundleError",
]


class TenshotError(Exception):
    """Base class for every error tenshot raises on purpose."""


class BackboneError(TenshotError):
    """A backbone could not be loaded or run."""


class BackboneUnavailable(BackboneError):
    """An optional backbone's package is not installed; the message names the pip command."""


class InputError(TenshotError):
    """User-supplied data (file, text, argument) is unusable."""


class NotEnoughLabels(TenshotError):
    """Fitting was refused because some class has too few labels."""

    def __init__(self, message: str, missing: dict[str, int]):
        super().__init__(message)
        #: class name -> how many more labels that class needs
        self.missing = missing


class StoreError(TenshotError):
    """The SQLite store could not do what was asked."""


class UnknownProject(StoreError):
    """No project of that name exists."""


class BundleError(TenshotError):
    """A model bundle is missing, foreign, tampered with or of an unknown version."""
