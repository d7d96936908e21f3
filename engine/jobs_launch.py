"""Starting the workspace's job worker and watching it, from the app or the CLI.

Liveness is a flock on `worker.lock` rather than a pid file alone: the kernel drops the lock the moment
the worker dies, however it dies, so a stale pid can never pass for a live worker, and only one worker
can ever serve a workspace (a second one gives up at start).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.errors import InputError, ScarpError
from engine.jobs_core import JobPaths, holding, lock_is_held

PROJECT_ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 60.0
LOG_ROTATE_BYTES = 10 << 20


@dataclass(frozen=True)
class WorkerStatus:
    alive: bool
    pid: int | None
    started: datetime | None
    heartbeat: datetime | None
    job_id: int | None
    log_path: Path


def running_worker_pid(paths: JobPaths, wait_s: float = 2.0) -> int | None:
    """The live worker's pid, or None; waits briefly for a worker that has the lock but no pid written yet."""
    deadline = time.monotonic() + wait_s
    while lock_is_held(paths.worker_lock):
        try:
            pid = int(paths.worker_lock.read_text().strip() or 0)
        except (OSError, ValueError):
            pid = 0
        if pid > 0 and _pid_exists(pid):
            return pid
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)
    return None


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_status(root: Path) -> WorkerStatus:
    paths = JobPaths(Path(root).resolve())
    pid = running_worker_pid(paths, wait_s=0.2)
    beat: dict[str, Any] = {}
    if pid is not None:
        try:
            beat = json.loads(paths.heartbeat.read_text())
        except (OSError, ValueError):
            beat = {}
        if beat.get("pid") != pid:
            beat = {}
    return WorkerStatus(
        alive=pid is not None,
        pid=pid,
        started=datetime.fromisoformat(beat["started"]) if beat.get("started") else None,
        heartbeat=datetime.fromisoformat(beat["heartbeat"]) if beat.get("heartbeat") else None,
        job_id=beat.get("job_id"),
        log_path=paths.log,
    )


def ensure_worker(root: Path, timeout: float = START_TIMEOUT_S) -> int:
    """The pid of the workspace's worker, starting one (detached, logging to worker.log) if none lives.

    Cheap when a worker runs (one lock probe), so the app can call it on every page load. Starting is
    serialised by `worker.spawn.lock` and waits until the new worker holds its lock, so concurrent
    callers all get the same pid.
    """
    paths = JobPaths(Path(root).resolve())
    if not paths.root.is_dir():
        raise InputError(paths.root, "is not a workspace folder")
    pid = running_worker_pid(paths)
    if pid is not None:
        return pid
    with holding(paths.spawn_lock, timeout, "starting the job worker"):
        pid = running_worker_pid(paths)  # started by another session while we waited
        if pid is not None:
            return pid
        process = _spawn(paths)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = running_worker_pid(paths, wait_s=0.0)
            if pid is not None:
                return pid
            if process.poll() is not None:
                pid = running_worker_pid(paths)  # it lost to a worker started some other way
                if pid is not None:
                    return pid
                raise ScarpError(
                    f"the job worker exited at once (code {process.returncode}): {_last_line(paths.log)}"
                )
            time.sleep(0.05)
    raise ScarpError(f"the job worker did not start within {timeout:.0f} s; see {paths.log}")


def _spawn(paths: JobPaths) -> subprocess.Popen[bytes]:
    """A worker in its own session: a Ctrl-C or a restart of the app does not stop running jobs."""
    try:
        if paths.log.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(paths.log, paths.log.with_name(paths.log.name + ".1"))
    except FileNotFoundError:
        pass
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    command = [sys.executable, "-m", "engine", "worker", "--workspace", str(paths.root)]
    with open(paths.log, "ab") as out:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
            env=env,
            start_new_session=True,
        )
    # Reap it when it exits, so a dead worker does not linger as a zombie of the app process.
    threading.Thread(target=process.wait, name=f"reap-worker-{process.pid}", daemon=True).start()
    return process


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return f"no log at {path}"
    return lines[-1] if lines else f"nothing in {path}"
