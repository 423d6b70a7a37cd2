"""The CLI's files: the workspace checked before anything opens it, output paths checked
before any work is done, and outputs written atomically.

A refused command must leave everything as it was: ``Workspace.discard`` removes a
workspace that the refused run itself created, and ``write_atomically`` never leaves a
half-written output. Shortcut: "writable" is checked by creating a temporary file in the
folder, so the answer is right for root and network drives alike, at the cost of one
file creation.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from core.errors import InputError

__all__ = ["Workspace", "check_out", "write_atomically", "quoted"]


def quoted(name: str, most: int = 40) -> str:
    """A user's name inside a one-line message: cut, control characters shown as '?'."""
    short = name if len(name) <= most else name[: most - 1] + "…"
    return "'" + "".join(ch if ch.isprintable() else "?" for ch in short) + "'"


def check_out(out: str, inputs: dict[str, str | None], *, option: str = "--out") -> Path:
    """Refuse an output path that is one of the inputs, or whose folder is missing or not
    writable, before anything is computed. inputs: {option name: path or None}; option:
    how the output is named in messages. Example: check_out("in.csv", {"--data": "in.csv"})
    raises InputError("--out in.csv is the same file as --data; ...")."""
    path = Path(out)
    for source, given in inputs.items():
        if given and _same_file(path, Path(given)):
            raise InputError(f"{option} {out} is the same file as {source}; tenshot never overwrites "
                             f"its input. Choose another file name for {option}.")
    if path.is_dir():
        raise InputError(f"{option} {out} is a folder; give a file name inside it, such as "
                         f"{path / 'predictions.csv'}.")
    folder = path.parent
    if not folder.exists():
        raise InputError(f"{option} {out}: the folder '{folder}' does not exist. Create it first, "
                         "or check the path.")
    if not folder.is_dir():
        raise InputError(f"{option} {out}: '{folder}' is not a folder.")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise InputError(f"{option} {out}: cannot write in the folder '{folder}' ({err.strerror}).")
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def write_atomically(path: Path, data: bytes) -> None:
    """Write beside ``path``, then rename over it: a reader never sees half a file, and a
    failure leaves the old file as it was."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class Workspace:
    """The --db file, checked before anything opens it (see ``check_workspace``).

    new: this run creates the file; limits: what the workspace accepts.
    """

    def __init__(self, path: str, limits, *, must_exist: bool = False, project: str | None = None):
        self.path = path
        self.limits = limits
        self.new = check_workspace(path, must_exist=must_exist, project=project)

    def open(self):
        from core.store import Store

        return Store.open(self.path, limits=self.limits)

    def discard(self) -> None:
        """Remove the workspace this run created (a refused command leaves none behind)."""
        if self.new:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(self.path + suffix).unlink(missing_ok=True)


def check_workspace(path: str, *, must_exist: bool = False, project: str | None = None) -> bool:
    """Refuse a --db in a missing folder, or a missing file when ``must_exist`` (a command
    that reads a project: ``project`` names it in the message); True when the file is new."""
    file = Path(path)
    if path == ":memory:" or file.is_file():
        return False
    if file.is_dir():
        raise InputError(f"--db {path} is a folder; give a workspace file, such as "
                         f"{file / 'tenshot.db'}.")
    if not file.parent.is_dir():
        raise InputError(f"The folder '{file.parent}' of the workspace --db {path} does not "
                         "exist. Create it first, or check the path (and $TENSHOT_DB) for a typo.")
    if must_exist:
        wanted = f", so there is no project {quoted(project)}" if project else ""
        raise InputError(f"No workspace at '{path}' (the file does not exist){wanted}. Check "
                         "--db (or $TENSHOT_DB); `tenshot train` creates a workspace.")
    return True
