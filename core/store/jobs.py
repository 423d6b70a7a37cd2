"""The jobs table: progress of long work (embedding, SHAP, bootstrap) that pages poll.

A job row records the process that runs it (``pid`` and that process's start time), so
a job whose process is gone can be told apart from a slow one (``core.jobs``).
"""

from core.errors import InputError, StoreError
from core.store.codec import utc_now
from core.store.connection import StoreBase, transactional
from core.store.rows import JOB_STATUSES, Job

__all__ = ["JobsMixin"]

_JOB_COLUMNS = ("id, project_id, kind, status, done, total, message, created_at, updated_at, "
                "pid, process_started")


class JobsMixin(StoreBase):
    """Starting, updating and reading jobs."""

    @transactional
    def start_job(
        self, project_id: int, kind: str, total: int, *, pid: int | None = None,
        process_started: float | None = None,
    ) -> int:
        """Record a running job of ``total`` steps and return its id.

        pid, process_started: the process that will run it and its start time (seconds
        since the epoch); None when unknown.
        """
        self._project_name(project_id)
        now = utc_now()
        cursor = self.db.execute(
            "INSERT INTO jobs (project_id, kind, status, done, total, created_at, updated_at, "
            "pid, process_started) VALUES (?, ?, 'running', 0, ?, ?, ?, ?, ?)",
            [project_id, kind, int(total), now, now, pid, process_started],
        )
        return cursor.lastrowid

    @transactional
    def update_job(
        self, job_id: int, *, done: int, message: str | None = None, status: str | None = None
    ) -> None:
        """Record progress; ``message`` and ``status`` keep their old values when None."""
        if status is not None and status not in JOB_STATUSES:
            raise InputError(f"Job status must be one of {JOB_STATUSES}, but got {status!r}.")
        cursor = self.db.execute(
            "UPDATE jobs SET done = ?, message = COALESCE(?, message), "
            "status = COALESCE(?, status), updated_at = ? WHERE id = ?",
            [int(done), message, status, utc_now(), job_id],
        )
        if cursor.rowcount == 0:
            raise _no_job(job_id)

    def job(self, job_id: int) -> Job:
        """Return a job's current progress; StoreError if it does not exist."""
        row = self._one(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", [job_id])
        if row is None:
            raise _no_job(job_id)
        return Job(*row)

    def running_jobs(self) -> list[Job]:
        """Every job of the workspace still recorded as running, oldest first."""
        rows = self._all(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE status = 'running' ORDER BY id")
        return [Job(*row) for row in rows]

    @transactional
    def interrupt_job(self, job_id: int, message: str) -> bool:
        """Mark a running job ``interrupted``; False when it is no longer running."""
        cursor = self.db.execute(
            "UPDATE jobs SET status = 'interrupted', message = ?, updated_at = ? "
            "WHERE id = ? AND status = 'running'",
            [message, utc_now(), job_id],
        )
        return cursor.rowcount == 1

    def latest_job(self, project_id: int, kind: str) -> Job | None:
        """Return the project's most recently started job of ``kind``, or None."""
        row = self._one(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE project_id = ? AND kind = ? "
            "ORDER BY id DESC LIMIT 1",
            [project_id, kind],
        )
        return None if row is None else Job(*row)


def _no_job(job_id: int) -> StoreError:
    return StoreError(f"There is no job with id {job_id}; it may belong to a deleted project.")
