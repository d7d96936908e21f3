"""Background jobs: long work runs in the workspace's worker process (engine/jobs.py); these calls
only touch the databases, so they return at once. engine.jobs is imported on use to keep the facade light."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.store import Job, Workspace

if TYPE_CHECKING:
    from engine.jobs import JobReport, WorkerStatus


def submit_prediction(workspace: Workspace, scene_id: int, model: str = "default", **options: Any) -> Job:
    """Queue a prediction of a scene; options: tile, overlap, batch, tta, device, precision, threshold.

    When it succeeds the job's result names the new prediction and its mask version (`job_report`).
    """
    from engine import jobs

    return jobs.submit(workspace, "predict", {"scene_id": scene_id, "model": model, **options})


def submit_training(workspace: Workspace, scene_ids: list[int], **options: Any) -> Job:
    """Queue a fine-tune (or one pseudo-label round) on corrected scenes; see engine/jobs_train.py for
    the options (base, dataset, mode, epochs, lr, val_folder/val_split or val_scene_ids, name, ...).

    When it succeeds the job's result names the new model version and its before/after scores.
    """
    from engine import jobs

    return jobs.submit(workspace, "train", {"scene_ids": list(scene_ids), **options})


def cancel_job(workspace: Workspace, job_id: int) -> Job:
    """Takes effect at once; a running job stops at its next progress report and saves nothing."""
    from engine import jobs

    return jobs.cancel_job(workspace, job_id)


def retry_job(workspace: Workspace, job_id: int) -> Job:
    """A new job with the same parameters as a failed or cancelled one (e.g. after a worker crash)."""
    from engine import jobs

    return jobs.retry_job(workspace, job_id)


def job_status(workspace: Workspace, job_id: int) -> Job:
    """Read from the workspace database, so every tab and session sees the same state."""
    return workspace.get_job(job_id)


def list_jobs(workspace: Workspace, status: str | None = None) -> list[Job]:
    """Oldest first; `status` narrows to queued, running, succeeded, failed or cancelled."""
    return workspace.list_jobs(status)


def job_report(job: Job) -> JobReport:
    """Stage, one-line text, ETA and result of a job, decoded from its row."""
    from engine import jobs

    return jobs.job_report(job)


def ensure_worker(workspace: Workspace) -> int:
    """The pid of the workspace's job worker, started if none is alive; cheap enough for every rerun."""
    from engine import jobs

    return jobs.ensure_worker(workspace.root)


def worker_status(workspace: Workspace) -> WorkerStatus:
    """Whether a worker serves the workspace, its pid, last heartbeat and current job; starts nothing."""
    from engine import jobs

    return jobs.worker_status(workspace.root)
