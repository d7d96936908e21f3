"""The worker process: one per workspace, running queued jobs one at a time; after a crash, the clean-up
of what a dead worker left. It holds `worker.lock` while it lives (`engine.jobs_launch` starts it).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.errors import ConflictError, NotFoundError, ScarpError
from engine.jobs_core import (
    FileLock,
    JobCancelled,
    JobContext,
    JobKind,
    JobPaths,
    WorkerStopping,
    encode_message,
    holding,
)
from engine.jobs_launch import running_worker_pid
from engine.store import Job, Workspace

log = logging.getLogger(__name__)

POLL_S = 0.5
HEARTBEAT_S = 2.0
COMMIT_LOCK_TIMEOUT_S = 60.0

INTERRUPTED = (
    "the worker stopped while this job was running (it was killed or crashed); nothing was saved. "
    "Retry the job to run it again."
)
SHUT_DOWN = (
    "the worker was shut down before this job finished; nothing was saved. Retry the job to run it again."
)
MAX_RESUMES = 3
"""A resumable job (training) interrupted more often than this is failed: something keeps killing it."""
RESUME_COUNT_FILE = "interruptions"


@dataclass
class _Serving:
    """The state of the worker loop in this process, which the huey task reaches through `_serving`."""

    paths: JobPaths
    workspace: Workspace
    stop: threading.Event
    requeue: Callable[[int], None]
    started: str
    job_id: int | None = None
    jobs_done: int = 0


_serving: _Serving | None = None


def serve(
    workspace: Workspace,
    dequeue: Callable[[], Any],
    execute: Callable[[Any], Any],
    requeue: Callable[[int], None],
    pending: Callable[[], set[int]],
    handlers: Mapping[str, JobKind] | None = None,
) -> int:
    """Run jobs until SIGTERM/SIGINT; the huey plumbing is passed in by `engine.jobs.run_worker`.

    A shutdown signal stops the running job at its next progress report (failed, saying so, or queued
    again to continue from its checkpoint if its kind can resume) rather than killing it mid-write, and
    leaves queued jobs queued for the next worker.
    """
    global _serving
    paths = JobPaths(workspace.root)
    lock = FileLock(paths.worker_lock)
    if not lock.acquire(timeout=2.0):  # an ensure_worker probe holds it for an instant only
        pid = running_worker_pid(paths)
        raise ScarpError(f"another worker (pid {pid}) already serves the workspace {paths.root}")
    stop = threading.Event()
    received: list[int] = []
    previous = _install_signal_handlers(stop, received)
    state = _Serving(paths, workspace, stop, requeue, _now())
    beat = threading.Thread(target=_heartbeat_loop, args=(state,), name="heartbeat", daemon=True)
    try:
        lock.write(f"{os.getpid()}\n")
        _serving = state
        log.info("worker %d serving %s", os.getpid(), paths.root)
        recover(workspace, paths, requeue, pending, handlers)
        beat.start()
        while not stop.is_set():
            try:
                task = dequeue()
            except Exception:
                log.exception("could not read the job queue; retrying")
                stop.wait(POLL_S)
                continue
            if task is None:
                stop.wait(POLL_S)
            else:
                execute(task)
        names = ", ".join(signal.Signals(signum).name for signum in received)
        log.info("worker %d stopping%s", os.getpid(), f" ({names})" if names else "")
    finally:
        stop.set()
        _serving = None
        if beat.is_alive():
            beat.join(timeout=HEARTBEAT_S + 1)
        paths.heartbeat.unlink(missing_ok=True)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        lock.release()
    return 0


def _install_signal_handlers(stop: threading.Event, received: list[int]) -> dict[int, Any]:
    """The first signal only sets a flag (the handler runs in the middle of the job's code, where even
    logging could deadlock); a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handle(signum: int, _frame: Any) -> None:
        if stop.is_set():  # asked twice: stop now; the next worker fails the interrupted job
            raise KeyboardInterrupt
        received.append(signum)
        stop.set()

    return {signum: signal.signal(signum, handle) for signum in (signal.SIGTERM, signal.SIGINT)}


def recover(
    workspace: Workspace,
    paths: JobPaths,
    requeue: Callable[[int], None],
    pending: Callable[[], set[int]],
    handlers: Mapping[str, JobKind] | None = None,
) -> None:
    """Clean up after a worker that died: only called while holding the worker lock, so nothing runs.

    A job still "running" was interrupted. If its kind can resume and it left a checkpoint in its
    scratch folder (a training job after its first epoch), it is queued again and continues from
    there, at most MAX_RESUMES times; otherwise it is failed with a message saying so (`retry_job`
    offers it again). Results are registered in one transaction together with the job's success, so
    an interrupted job registered nothing. The other scratch folders are deleted; they were never
    registered, so no record points at a partial file. A queued job whose queue message was lost (a
    worker killed between taking the message and starting the job) is queued again.
    """
    for job in workspace.list_jobs("running"):
        requeued, note = _resume_later(workspace, paths, job, handlers or {}, counted=True)
        if requeued:
            log.warning("job %d was left running by a dead worker; queued again: %s", job.id, note)
            continue
        try:
            workspace.finish_job(job.id, "failed", error=INTERRUPTED + note)
            log.warning("job %d was left running by a dead worker; marked failed", job.id)
        except ConflictError:
            pass  # cancelled meanwhile
    queued = {job.id for job in workspace.list_jobs("queued")}
    for folder in (paths.root / "tmp").glob("job-*"):
        if _job_of(folder) not in queued:  # a queued job's folder holds the state it resumes from
            shutil.rmtree(folder, ignore_errors=True)
    for job_id in sorted(queued - pending()):
        log.warning("job %d was queued without a queue message; queued again", job_id)
        requeue(job_id)


def _job_of(folder: Path) -> int | None:
    try:
        return int(folder.name.removeprefix("job-"))
    except ValueError:
        return None


def _resume_later(
    workspace: Workspace, paths: JobPaths, job: Job, handlers: Mapping[str, JobKind], *, counted: bool
) -> tuple[bool, str]:
    """Queue an interrupted job again if its kind can continue from its scratch folder.

    Returns (queued again, a note for the job's message). `counted` interruptions (crashes, not clean
    shutdowns) are limited to MAX_RESUMES, so a job that keeps killing its worker ends as failed.
    """
    kind = handlers.get(job.kind)
    scratch = paths.scratch(job.id)
    if kind is None or kind.resumable is None or not scratch.is_dir():
        return False, ""
    try:
        if not kind.resumable(scratch):
            return False, ""
    except Exception:
        log.exception("could not tell whether job %d can resume", job.id)
        return False, ""
    counter = scratch / RESUME_COUNT_FILE
    try:
        count = int(counter.read_text().strip() or 0)
    except (OSError, ValueError):
        count = 0
    if counted:
        count += 1
        if count > MAX_RESUMES:
            return False, f" It was interrupted {count} times, so it is not resumed again."
        try:
            counter.write_text(f"{count}\n")
        except OSError:
            return False, ""
    why = "the worker stopped while this job was running" if counted else "the worker was shut down"
    text = f"{why}; it continues from its last checkpoint when a worker runs again"
    if count:
        text += f" (restart {count} of at most {MAX_RESUMES})"
    try:
        workspace.requeue_job(job.id, message=encode_message("queued", text))
    except ConflictError:
        return False, ""  # cancelled meanwhile
    return True, text


def execute_job(root: Path, job_id: int, handlers: Mapping[str, JobKind]) -> None:
    """Run one job to a final state; never raises, so one bad job cannot stop the worker."""
    state = _serving
    if state is None or state.paths.root != Path(root).resolve():
        # Not under `serve` (e.g. huey's own consumer): run without shutdown handling.
        with Workspace.open(root) as workspace:
            paths = JobPaths(workspace.root)
            state = _Serving(paths, workspace, threading.Event(), lambda _id: None, _now())
            _run(state, job_id, handlers)
        return
    _run(state, job_id, handlers)


def _run(state: _Serving, job_id: int, handlers: Mapping[str, JobKind]) -> None:
    workspace = state.workspace
    try:
        job = workspace.get_job(job_id)
    except NotFoundError:
        log.warning("job %d does not exist; skipped", job_id)
        return
    if job.status != "queued":
        log.info("job %d is %s; skipped", job_id, job.status)
        if job.done:  # e.g. cancelled while queued to resume: its checkpoint is of no use any more
            shutil.rmtree(state.paths.scratch(job_id), ignore_errors=True)
        return
    if state.stop.is_set():
        state.requeue(job_id)  # keep it for the next worker instead of losing the message
        return
    try:
        job = workspace.start_job(job_id)
    except ConflictError as exc:
        log.info("job %d not started: %s", job_id, exc)
        return
    state.job_id = job_id
    scratch = state.paths.scratch(job_id)
    started = time.monotonic()
    keep_scratch = False
    try:
        scratch.mkdir(parents=True, exist_ok=True)
        kind = handlers.get(job.kind)
        if kind is None:
            raise ScarpError(f"unknown job kind {job.kind!r}; this worker runs {', '.join(handlers)} jobs")
        context = JobContext(workspace, job, scratch, state.stop)
        log.info("job %d (%s) started: %s", job_id, job.kind, json.dumps(job.params, sort_keys=True))
        commit = kind.run(context)
        # From here on a shutdown waits: the results are computed and saving them takes a moment.
        context.report("saving", "saving the results", stoppable=False)
        with holding(state.paths.commit_lock, COMMIT_LOCK_TIMEOUT_S, "the job commit lock"):
            context.check(stoppable=False)  # a cancel that got the lock first wins: nothing is saved
            # One transaction: a worker killed half-way leaves neither half of the results registered
            # nor a succeeded job without them.
            with workspace.atomic():
                result = commit()
                workspace.finish_job(
                    job_id, "succeeded", message=encode_message("done", kind.describe(result), result=result)
                )
        log.info("job %d succeeded in %.1f s: %s", job_id, time.monotonic() - started, kind.describe(result))
    except JobCancelled as exc:
        log.info("job %d stopped: it was %s; nothing was saved", job_id, exc)
    except WorkerStopping:
        keep_scratch, note = _resume_later(workspace, state.paths, job, handlers, counted=False)
        if keep_scratch:
            log.info("job %d stopped by the shutdown; %s", job_id, note)
            state.requeue(job_id)
        else:
            _fail(workspace, job_id, SHUT_DOWN)
    except KeyboardInterrupt:  # a second shutdown signal: no time to unwind politely
        _fail(workspace, job_id, SHUT_DOWN)
        raise
    except ScarpError as exc:
        log.info("job %d failed: %s", job_id, exc)
        _fail(workspace, job_id, str(exc))
    except Exception as exc:
        log.exception("job %d failed with an internal error", job_id)  # the traceback, for the log only
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        _fail(
            workspace,
            job_id,
            f"internal error: {type(exc).__name__}: {first_line} (the worker log has the details)",
        )
    finally:
        state.job_id = None
        state.jobs_done += 1
        if not keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def _fail(workspace: Workspace, job_id: int, error: str) -> None:
    try:
        workspace.finish_job(job_id, "failed", error=error)
    except ConflictError:
        pass  # cancelled meanwhile: the user's word stands
    except ScarpError:
        log.exception("could not record the failure of job %d", job_id)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _heartbeat_loop(state: _Serving) -> None:
    """Tells the app what the worker is doing; liveness itself comes from the lock, not from this."""
    while True:
        data = {
            "pid": os.getpid(),
            "started": state.started,
            "heartbeat": _now(),
            "job_id": state.job_id,
            "jobs_done": state.jobs_done,
        }
        tmp = state.paths.heartbeat.with_name(f".{state.paths.heartbeat.name}.{os.getpid()}")
        try:
            tmp.write_text(json.dumps(data))
            os.replace(tmp, state.paths.heartbeat)
        except OSError as exc:
            log.warning("could not write the heartbeat: %s", exc)
        if state.stop.wait(HEARTBEAT_S):
            return
