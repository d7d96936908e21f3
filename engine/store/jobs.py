"""Job tracking: long work runs in its own process and reports progress through the workspace database."""

from __future__ import annotations

import sqlite3
from typing import Any

from engine.errors import ConflictError, InputError, NotFoundError
from engine.store.base import WorkspaceBase
from engine.store.records import JOB_FINAL_STATUSES, JOB_STATUSES, Job, job_from_row, to_json, utc_now


class JobQueue(WorkspaceBase):
    """Jobs go queued → running → succeeded/failed/cancelled; a finished job never changes again.

    A running job whose worker died may go back to queued (`requeue_job`) when it can resume.
    """

    def create_job(self, kind: str, params: dict[str, Any]) -> Job:
        kind = str(kind).strip()
        if not kind:
            raise InputError("job kind", "must not be empty")
        params_json = to_json(params, "params")
        with self._tx() as conn:
            cursor = conn.execute(
                "INSERT INTO jobs (kind, params, status, progress, message, created)"
                " VALUES (?, ?, 'queued', 0, '', ?)",
                (kind, params_json, utc_now()),
            )
            return job_from_row(self._job_row(conn, int(cursor.lastrowid or 0)), self.root)

    def start_job(self, job_id: int) -> Job:
        """Claim a queued job; ConflictError if it was already started or cancelled elsewhere."""
        with self._tx() as conn:
            row = self._job_row(conn, job_id)
            if row["status"] != "queued":
                raise ConflictError(f"Job {job_id} is {row['status']}; only a queued job can be started")
            conn.execute("UPDATE jobs SET status = 'running', started = ? WHERE id = ?", (utc_now(), job_id))
            return job_from_row(self._job_row(conn, job_id), self.root)

    def update_job(self, job_id: int, *, progress: float | None = None, message: str | None = None) -> Job:
        """Report progress; returns the job so a worker sees when it was cancelled and should stop.

        A finished (e.g. cancelled) job is returned unchanged rather than refused, so a late progress
        report from a worker never fails the worker.
        """
        if progress is not None and not 0.0 <= float(progress) <= 1.0:
            raise InputError("job progress", f"must be between 0 and 1, got {progress}")
        with self._tx() as conn:
            row = self._job_row(conn, job_id)
            if row["status"] not in JOB_FINAL_STATUSES:
                conn.execute(
                    "UPDATE jobs SET progress = coalesce(?, progress), message = coalesce(?, message)"
                    " WHERE id = ?",
                    (None if progress is None else float(progress), message, job_id),
                )
                row = self._job_row(conn, job_id)
            return job_from_row(row, self.root)

    def requeue_job(self, job_id: int, *, message: str | None = None) -> Job:
        """Put a running job back in the queue, to continue from its saved state in a later worker.

        Its progress stays (it is the same job, resumed); ConflictError unless it is running.
        """
        with self._tx() as conn:
            row = self._job_row(conn, job_id)
            if row["status"] != "running":
                raise ConflictError(
                    f"Job {job_id} is {row['status']}; only a running job can be queued again"
                )
            conn.execute(
                "UPDATE jobs SET status = 'queued', message = coalesce(?, message) WHERE id = ?",
                (message, job_id),
            )
            return job_from_row(self._job_row(conn, job_id), self.root)

    def finish_job(
        self, job_id: int, status: str, *, error: str | None = None, message: str | None = None
    ) -> Job:
        """End a job (cancelling a queued one included); ConflictError if it already ended."""
        if status not in JOB_FINAL_STATUSES:
            raise InputError(status, f"is not a final job status; use one of {', '.join(JOB_FINAL_STATUSES)}")
        with self._tx() as conn:
            row = self._job_row(conn, job_id)
            if row["status"] in JOB_FINAL_STATUSES:
                raise ConflictError(f"Job {job_id} already ended as {row['status']} at {row['finished']}")
            conn.execute(
                "UPDATE jobs SET status = ?, error = ?, message = coalesce(?, message), finished = ?,"
                " progress = CASE WHEN ? = 'succeeded' THEN 1.0 ELSE progress END WHERE id = ?",
                (status, error, message, utc_now(), status, job_id),
            )
            return job_from_row(self._job_row(conn, job_id), self.root)

    def get_job(self, job_id: int) -> Job:
        with self._tx(write=False) as conn:
            return job_from_row(self._job_row(conn, job_id), self.root)

    def list_jobs(self, status: str | None = None) -> list[Job]:
        if status is not None and status not in JOB_STATUSES:
            raise InputError(status, f"is not a job status; use one of {', '.join(JOB_STATUSES)}")
        with self._tx(write=False) as conn:
            if status is None:
                rows = conn.execute("SELECT * FROM jobs ORDER BY id").fetchall()
            else:
                rows = conn.execute("SELECT * FROM jobs WHERE status = ? ORDER BY id", (status,)).fetchall()
        return [job_from_row(row, self.root) for row in rows]

    def _job_row(self, conn: sqlite3.Connection, job_id: int) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"Job {job_id} does not exist in this workspace")
        return row
