"""Encodings the store writes into SQLite: JSON columns and array blobs.

Arrays are written as a standard ``.npz`` archive (a zip of ``.npy`` members) built
with ``allow_pickle=False`` and read back the same way, so a tampered database can
never make tenshot unpickle anything. ``np.load`` reads these blobs too.
"""

import io
import json
import zipfile
from datetime import datetime, timezone
from typing import Any

import numpy as np

from core.errors import StoreError

__all__ = [
    "pack_arrays",
    "unpack_arrays",
    "pack_predictions",
    "unpack_predictions",
    "dump_json",
    "load_json",
    "utc_now",
]


def pack_arrays(arrays: dict[str, np.ndarray]) -> bytes:
    """Serialise named arrays to ``.npz`` bytes without pickle.

    Raises StoreError for object arrays, which could only be stored by pickling.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, value in arrays.items():
            array = np.asarray(value)
            if array.dtype.hasobject:
                raise StoreError(
                    f"Array {name!r} holds Python objects (dtype {array.dtype}); "
                    "only numeric and string arrays can be stored. Convert it with "
                    "np.asarray(..., dtype=float) first."
                )
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
    return buffer.getvalue()


def unpack_arrays(blob: bytes) -> dict[str, np.ndarray]:
    """Read bytes written by :func:`pack_arrays` back into a dict of arrays (never unpickles)."""
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            for member in archive.namelist():
                with archive.open(member) as handle:
                    arrays[member.removesuffix(".npy")] = np.lib.format.read_array(
                        handle, allow_pickle=False
                    )
    except (zipfile.BadZipFile, ValueError) as err:
        raise StoreError(
            f"A stored array blob is damaged or not in .npz format ({err}). "
            "Retrain the model to replace it."
        ) from err
    return arrays


def pack_predictions(
    text_ids: np.ndarray, class_ids: np.ndarray, confidence: np.ndarray,
    prob_classes: list[str], probs: np.ndarray,
) -> bytes:
    """One model's predictions as one blob, instead of a row (and a JSON dict) per text.

    text_ids, class_ids (the predicted class's id), confidence: shape (n,);
    probs: float64 (n, len(prob_classes)), NaN where a row has no probability for that
    class name. Stored as a single npz, so saving 100,000 predictions is one write.
    """
    return pack_arrays({
        "text_id": np.asarray(text_ids, dtype=np.int64),
        "class_id": np.asarray(class_ids, dtype=np.int64),
        "confidence": np.asarray(confidence, dtype=np.float64),
        "probs": np.asarray(probs, dtype=np.float64).reshape(len(text_ids), len(prob_classes)),
    })


def unpack_predictions(blob: bytes) -> dict[str, np.ndarray]:
    """The arrays ``pack_predictions`` wrote: text_id, class_id, confidence, probs."""
    return unpack_arrays(blob)


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays turn up in metrics; store them as plain JSON
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dump_json(value: Any) -> str:
    """Serialise a JSON column value; numpy scalars and arrays become plain numbers and lists."""
    try:
        return json.dumps(value, default=_json_default)
    except TypeError as err:
        raise StoreError(f"Could not store this value as JSON: {err}.") from err


def load_json(text: str | None) -> Any:
    """Parse a JSON column value; SQL NULL becomes ``None``."""
    return None if text is None else json.loads(text)


def utc_now() -> str:
    """Return the current UTC time as ISO-8601 text with milliseconds: the store's timestamps."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
