"""What every part of the job system shares: file names, locks, progress messages and the job context.

Standard library and the store only, so the app can submit, watch and cancel jobs without importing
torch; the heavy work happens in the worker process (`engine.jobs_worker`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ScarpError
from engine.store import Job, Workspace

Commit = Callable[[], dict[str, Any]]
"""Registers a finished job's results in the workspace and returns them; runs under the commit lock."""

PROGRESS_INTERVAL_S = 0.25
"""Progress is written at most this often; cancellation is still checked at every callback."""


@dataclass(frozen=True)
class JobPaths:
    """The job system's files, all inside the workspace so they move (and get backed up) with it."""

    root: Path

    @property
    def huey_db(self) -> Path:
        return self.root / "jobs.huey.db"

    @property
    def worker_lock(self) -> Path:
        """Held (flock) by the one live worker; its content is that worker's pid."""
        return self.root / "worker.lock"

    @property
    def spawn_lock(self) -> Path:
        """Serialises `ensure_worker` calls, so two sessions never start two workers."""
        return self.root / "worker.spawn.lock"

    @property
    def commit_lock(self) -> Path:
        """Held while a job registers its results, and while a job is cancelled: never both at once."""
        return self.root / "jobs.lock"

    @property
    def heartbeat(self) -> Path:
        return self.root / "worker.json"

    @property
    def log(self) -> Path:
        return self.root / "worker.log"

    def scratch(self, job_id: int) -> Path:
        """Where a job writes its rasters before they are registered; removed when the job ends."""
        return self.root / "tmp" / f"job-{job_id}"


class FileLock:
    """An exclusive flock on a file: the kernel drops it when its holder dies, even by SIGKILL.

    flock locks belong to an open file, so two FileLocks on one path exclude each other even inside one
    process (two app sessions are two threads of one Streamlit server).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self, timeout: float = 0.0, poll: float = 0.05) -> bool:
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already locked by this FileLock")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(poll)
                continue
            self._fd = fd
            return True

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor releases the lock

    def write(self, text: str) -> None:
        """Replace the lock file's content through the held descriptor (e.g. the holder's pid)."""
        if self._fd is None:
            raise RuntimeError(f"{self.path} is not locked by this FileLock")
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, text.encode(), 0)

    @property
    def held(self) -> bool:
        return self._fd is not None


def lock_is_held(path: Path) -> bool:
    """Whether some process holds the lock; probing takes it for an instant, never blocks."""
    probe = FileLock(path)
    if probe.acquire():
        probe.release()
        return False
    return True


@contextlib.contextmanager
def holding(path: Path, timeout: float, what: str) -> Iterator[None]:
    lock = FileLock(path)
    if not lock.acquire(timeout):
        raise ScarpError(f"{what} is busy (the lock {path.name} stayed taken for {timeout:.0f} s); try again")
    try:
        yield
    finally:
        lock.release()


# --- progress messages ------------------------------------------------------------------------------
# A job's `message` column holds a small JSON object so the UI gets structured fields (stage, ETA,
# result) without a schema change; `text` is the one line to show people.


def encode_message(stage: str, text: str, **fields: Any) -> str:
    return json.dumps({"stage": stage, "text": text, **fields}, sort_keys=True)


@dataclass(frozen=True)
class JobReport:
    """A job as people read it: what it is doing, how long it may take, and what it produced."""

    id: int
    kind: str
    status: str
    stage: str
    text: str
    progress: float
    eta_s: float | None
    error: str | None
    result: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)  # per-epoch figures of a training job


def job_report(job: Job) -> JobReport:
    """Decode a job's message; a plain-text message (not written by this module) is shown as it is."""
    try:
        data = json.loads(job.message) if job.message else {}
    except ValueError:
        data = {"text": job.message}
    if not isinstance(data, dict):
        data = {"text": job.message}
    stage = str(data.get("stage") or job.status)
    text = str(data.get("text") or "")
    if job.status == "failed":
        stage, text = "failed", job.error or text or "failed"
    elif job.status == "queued" and not text:
        text = "waiting for the worker"
    eta = data.get("eta_s") if job.status == "running" else None
    result = dict(data.get("result") or {}) if job.status == "succeeded" else {}
    return JobReport(
        id=job.id,
        kind=job.kind,
        status=job.status,
        stage=stage,
        text=text,
        progress=job.progress,
        eta_s=float(eta) if isinstance(eta, int | float) else None,
        error=job.error,
        result=result,
        history=list(data.get("history") or result.get("history") or []),
    )


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


# --- running a job ----------------------------------------------------------------------------------


class JobStopped(Exception):
    """Raised inside a job's work to unwind it; never a ScarpError, so no handler mistakes it for one."""


class JobCancelled(JobStopped):
    """The job was cancelled (or otherwise ended) by someone else; it must save nothing."""


class WorkerStopping(JobStopped):
    """The worker was asked to shut down; the job is failed with a message saying so."""


class JobContext:
    """What a job handler gets: its job, the workspace, a scratch folder, and progress reporting.

    Every report is also a cancellation check, because `update_job` on a cancelled job returns it
    unchanged instead of failing: a handler that reports progress stops at its next report.
    """

    def __init__(self, workspace: Workspace, job: Job, scratch: Path, stop: threading.Event):
        self.workspace = workspace
        self.job = job
        self.scratch = scratch
        self.stop = stop

    def check(self, *, stoppable: bool = True) -> None:
        if stoppable and self.stop.is_set():
            raise WorkerStopping
        current = self.workspace.get_job(self.job.id)
        if current.done:
            raise JobCancelled(current.status)

    def report(
        self, stage: str, text: str, progress: float | None = None, *, stoppable: bool = True, **fields: Any
    ) -> None:
        if stoppable and self.stop.is_set():
            raise WorkerStopping
        if progress is not None:
            progress = min(1.0, max(0.0, progress))
        current = self.workspace.update_job(
            self.job.id, progress=progress, message=encode_message(stage, text, **fields)
        )
        if current.done:
            raise JobCancelled(current.status)

    def counter(
        self, stage: str, unit: str, span: tuple[float, float] = (0.0, 0.95)
    ) -> Callable[[int, int], None]:
        """A `progress(done, total)` callback that reports "stage: 12/35 unit, ETA 40 s"."""
        return _Counter(self, stage, unit, span)


class _Counter:
    def __init__(self, context: JobContext, stage: str, unit: str, span: tuple[float, float]):
        self.context = context
        self.stage = stage
        self.unit = unit
        self.span = span
        self.started = time.monotonic()
        self.first: tuple[float, int] | None = None  # the first report: steady-state rate from there
        self.last_write = float("-inf")

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last_write < PROGRESS_INTERVAL_S:
            self.context.check()
            return
        self.last_write = now
        eta = self._eta(now, done, total)
        text = f"{self.stage}: {done}/{total} {self.unit}"
        if eta is not None and done < total:
            text += f", ETA {format_duration(eta)}"
        low, high = self.span
        fraction = done / total if total else 1.0
        self.context.report(
            self.stage,
            text,
            low + (high - low) * fraction,
            done=done,
            total=total,
            eta_s=None if eta is None else round(eta, 1),
        )

    def _eta(self, now: float, done: int, total: int) -> float | None:
        if done <= 0:
            return None
        if self.first is None or done <= self.first[1]:
            if self.first is None:
                self.first = (now, done)
            rate = (now - self.started) / done  # includes start-up costs: errs on the long side
        else:
            rate = (now - self.first[0]) / (done - self.first[1])
        return rate * (total - done)


@dataclass(frozen=True)
class JobKind:
    """One kind of job; add a kind by adding one of these to `engine.jobs.HANDLERS`.

    `prepare` runs in the submitting process (cheap, no torch): it checks and completes the parameters
    so a bad request fails at once, not minutes later in the worker. `run` runs in the worker: the long,
    cancellable part, which must register nothing and instead returns a `Commit` that the worker runs
    under the commit lock. `describe` turns the commit's result into the finished job's one line.

    `resumable(scratch)`, when given, says whether an interrupted job left a state in its scratch folder
    to continue from (a training checkpoint): the next worker then queues the job again, keeping the
    folder, instead of failing it; `run` must pick the state up.
    """

    name: str
    prepare: Callable[[Workspace, dict[str, Any]], dict[str, Any]]
    run: Callable[[JobContext], Commit]
    describe: Callable[[dict[str, Any]], str]
    resumable: Callable[[Path], bool] | None = None
