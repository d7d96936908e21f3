"""Background jobs: a durable queue in the workspace, served by one worker process per workspace.

- The queue is huey's SqliteHuey in `<workspace>/jobs.huey.db`. A message carries only a job id; the
  job's kind, parameters, status, progress and result live in the workspace's `jobs` table, so every
  browser tab and every process sees the same state, and nothing is lost on a reload or an app restart.
- Submitting checks the parameters (`JobKind.prepare`), adds a queued row, enqueues its id and
  returns at once. The worker (`python -m engine worker`, or `ensure_worker` from the app) takes
  messages in order; a job that is no longer queued (cancelled) is skipped.
- A job's `message` is a JSON object: `stage`, `text` (the line to show, e.g. "predicting: 12/35 tiles,
  ETA 40 s"), and while running `done`, `total`, `eta_s`; a finished job's holds `result` (for
  `predict`: prediction_id, mask_version_id, parent_id, landslide_fraction, tiles, seconds, ...).
  `job_report(job)` decodes it. A failure's words are in `error`, never a traceback.
- Cancelling marks the job cancelled at once; a running job notices at its next progress report and
  unwinds. Results are registered only in a commit step, under `jobs.lock`, which `cancel_job` takes
  too: either the cancel comes first and nothing is registered, or the job has already succeeded and
  the cancel is refused. The commit and the job's success are one database transaction, so a worker
  killed mid-commit leaves nothing half-registered.
- A worker that dies (SIGKILL, crash) leaves its job "running"; the next worker fails it, or, for a kind
  that can resume (`train`, once it has a checkpoint), queues it again to continue from there.
- New kinds: add a `JobKind` to `HANDLERS` (see `engine.jobs_predict` for the pattern).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from huey import SqliteHuey
from huey.api import TaskWrapper

from engine.errors import ConflictError, InputError, ScarpError
from engine.jobs_core import (
    JobContext,
    JobKind,
    JobPaths,
    JobReport,
    encode_message,
    holding,
    job_report,
)
from engine.jobs_launch import WorkerStatus, ensure_worker, worker_status
from engine.jobs_predict import PREDICT
from engine.jobs_train import TRAIN
from engine.jobs_worker import execute_job, serve
from engine.store import Job, Workspace

__all__ = [
    "HANDLERS",
    "JobContext",
    "JobKind",
    "JobPaths",
    "JobReport",
    "WorkerStatus",
    "cancel_job",
    "ensure_worker",
    "job_report",
    "retry_job",
    "run_worker",
    "submit",
    "worker_status",
]

HANDLERS: dict[str, JobKind] = {PREDICT.name: PREDICT, TRAIN.name: TRAIN}
"""Job kind → handler; the worker looks kinds up here when it runs a job, so a kind added later works."""

QUEUE_NAME = "scarp"
CANCEL_LOCK_TIMEOUT_S = 60.0

_queues: dict[Path, tuple[SqliteHuey, TaskWrapper]] = {}
_queues_lock = threading.Lock()


def _queue(root: Path) -> tuple[SqliteHuey, TaskWrapper]:
    """One huey per workspace and process (its connection is shared by the process's threads)."""
    root = Path(root).resolve()
    with _queues_lock:
        found = _queues.get(root)
        if found is None:
            huey = SqliteHuey(
                name=QUEUE_NAME,
                filename=str(JobPaths(root).huey_db),
                results=False,  # results go to the jobs table, where every process can read them
                utc=True,
                fsync=True,
                timeout=30,
                strict_fifo=True,  # jobs run in the order they were submitted
            )

            def run_job(job_id: int) -> None:
                execute_job(root, int(job_id), HANDLERS)

            found = _queues[root] = (huey, huey.task(name="run_job")(run_job))
    return found


def submit(workspace: Workspace, kind: str, params: dict[str, Any]) -> Job:
    """Queue a job and return its row at once; the parameters are checked here, not in the worker."""
    handler = HANDLERS.get(kind)
    if handler is None:
        raise InputError(kind, f"is not a job kind; use one of {', '.join(HANDLERS)}")
    prepared = handler.prepare(workspace, dict(params))
    job = workspace.create_job(kind, prepared)
    try:
        _queue(workspace.root)[1](job.id)
    except Exception as exc:
        reason = f"could not queue the job ({type(exc).__name__}: {exc})"
        workspace.finish_job(job.id, "failed", error=reason)
        raise ScarpError(f"{reason}; it will not run") from exc
    return job


def cancel_job(workspace: Workspace, job_id: int) -> Job:
    """Cancel a queued or running job; cancelling a cancelled job is a no-op, a finished one a conflict."""
    with holding(JobPaths(workspace.root).commit_lock, CANCEL_LOCK_TIMEOUT_S, "the job commit lock"):
        job = workspace.get_job(job_id)
        if job.status == "cancelled":
            return job
        if job.done:
            raise ConflictError(f"Job {job_id} already {job.status}; there is nothing to cancel")
        text = "cancelled before it started" if job.status == "queued" else f"cancelled at {job.progress:.0%}"
        return workspace.finish_job(job_id, "cancelled", message=encode_message("cancelled", text))


def retry_job(workspace: Workspace, job_id: int) -> Job:
    """Submit a failed or cancelled job again, as a new job with the same kind and parameters."""
    job = workspace.get_job(job_id)
    if job.status not in ("failed", "cancelled"):
        raise ConflictError(f"Job {job_id} is {job.status}; only a failed or cancelled job can be retried")
    return submit(workspace, job.kind, job.params)


def run_worker(root: str | Path) -> int:
    """Serve the workspace's queue in this process until SIGTERM or SIGINT (`python -m engine worker`)."""
    with Workspace.open(root) as workspace:  # creates the workspace if the worker comes first
        huey, run_job = _queue(workspace.root)

        def pending() -> set[int]:
            return {int(task.args[0]) for task in huey.pending() if task.args}

        return serve(workspace, huey.dequeue, huey.execute, run_job, pending, HANDLERS)
