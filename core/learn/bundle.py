"""Export and import a trained classifier as a file, with no pickle anywhere.

A bundle is a zip holding ``manifest.json`` (format name, version, sha256 of each
member), ``params.json`` (classes, settings, feature spec, head parameters,
metrics) and ``arrays.npz`` (read with ``allow_pickle=False``). A file that is
not such a zip, or whose checksums do not match, is refused before anything in
it is used.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np

from core.learn.classifier import Classifier
from core.learn.multilabel import classifier_from_state
from core.errors import BundleError

__all__ = ["BUNDLE_FORMAT", "BUNDLE_VERSION", "save_bundle", "load_bundle", "bundle_bytes"]

BUNDLE_FORMAT = "tenshot-bundle"
BUNDLE_VERSION = 1
_MAX_BUNDLE_BYTES = 512 * 1024 * 1024


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def bundle_bytes(clf: Classifier) -> bytes:
    """The bundle of a classifier, as bytes (for a download button)."""
    params, arrays = clf.to_state()
    params_raw = json.dumps(params, indent=1, sort_keys=True).encode()
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    arrays_raw = buf.getvalue()
    manifest = {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION,
                "sha256": {"params.json": _sha(params_raw), "arrays.npz": _sha(arrays_raw)}}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest, indent=1))
        zf.writestr("params.json", params_raw)
        zf.writestr("arrays.npz", arrays_raw)
    return out.getvalue()


def save_bundle(clf: Classifier, path: str | Path) -> Path:
    path = Path(path)
    path.write_bytes(bundle_bytes(clf))
    return path


def _member(zf: zipfile.ZipFile, name: str, expected: str | None) -> bytes:
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise BundleError(f"The bundle has no '{name}'; it is incomplete or not a tenshot bundle.")
    # the declared size bounds what zipfile will inflate: a zip bomb stops here
    if info.file_size > _MAX_BUNDLE_BYTES:
        raise BundleError(f"The bundle's '{name}' would unpack to {info.file_size:,} bytes, more "
                          "than any tenshot bundle holds; it was not written by tenshot.")
    data = zf.read(info)
    if expected is not None and _sha(data) != expected:
        raise BundleError(f"The bundle's '{name}' does not match its checksum: the file was "
                          "changed after export. Export the model again.")
    return data


def load_bundle(source: str | Path | bytes) -> Classifier:
    """Read a bundle written by save_bundle; raises BundleError for anything else.

    A multi-label model's bundle (its params say ``"task_type": "multi_label"``) loads as a
    ``core.learn.multilabel.MultiLabelClassifier``, with its classes and thresholds.

    Nothing in the file is executed: JSON is parsed, arrays are read with
    ``allow_pickle=False``, and every member must match the manifest's sha256.
    """
    raw = source if isinstance(source, bytes) else _read_file(Path(source))
    if not zipfile.is_zipfile(io.BytesIO(raw)):
        raise BundleError("This file is not a tenshot model bundle (it is not a zip archive). "
                          "Export a bundle from the app or with `tenshot export`.")
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            manifest = json.loads(_member(zf, "manifest.json", None))
            if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
                raise BundleError("This zip file is not a tenshot model bundle.")
            if manifest.get("version") != BUNDLE_VERSION:
                raise BundleError(f"This bundle has format version {manifest.get('version')!r:.20}; "
                                  f"this tenshot reads version {BUNDLE_VERSION}. Upgrade tenshot.")
            sums = manifest.get("sha256")
            sums = sums if isinstance(sums, dict) else {}
            params = json.loads(_member(zf, "params.json", sums.get("params.json", "missing")))
            arrays_raw = _member(zf, "arrays.npz", sums.get("arrays.npz", "missing"))
        with np.load(io.BytesIO(arrays_raw), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        return classifier_from_state(params, arrays)
    except BundleError:
        raise
    except Exception as err:  # zipfile, zlib, json, numpy and the classifier raise many types
        # the detail stays in __cause__ (the CLI's --debug shows it): it is jargon to a user
        raise BundleError("This model bundle is damaged or was not written by tenshot, so it "
                          "cannot be read. Export the model again.") from err


def _read_file(path: Path) -> bytes:
    if not path.is_file():
        raise BundleError(f"No bundle file at '{path}'.")
    if path.stat().st_size > _MAX_BUNDLE_BYTES:
        raise BundleError(f"'{path.name}' is too large to be a tenshot bundle.")
    return path.read_bytes()
