"""Background jobs end to end: real worker processes on real scenes, cancellation, crashes, restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine import api, jobs
from engine.errors import ConflictError, InputError, NotFoundError
from engine.io.raster import describe
from engine.store import Job, Workspace, is_temp_file

ROOT = Path(__file__).resolve().parents[1]
SLOW = {"tile": 64, "overlap": 0, "batch": 1}  # Iburi in 64 px tiles: 384 of them, a progress report each


def start_worker(root: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(root / "test-worker.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "engine", "worker", "--workspace", str(root)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop_pid(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM (the worker's clean stop), then SIGKILL if it does not go."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    """A zombie is dead, but only once all its threads are: until then it still holds its files (locks)."""
    if not Path("/proc").is_dir():
        return _exists(pid)  # no way to tell a zombie here
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return _exists(pid)
    for task in tasks:
        try:
            if (task / "stat").read_text().rsplit(")", 1)[-1].split()[0] not in ("Z", "X"):
                return True
        except OSError:
            continue  # that thread just went
    return False


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for(ws: Workspace, job_id: int, until: Callable[[Job], bool], timeout: float = 60.0) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        job = ws.get_job(job_id)
        if until(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job.status} ({job.message}) after {timeout} s")
        time.sleep(0.05)


def finished(ws: Workspace, job_id: int, timeout: float = 60.0) -> Job:
    return wait_for(ws, job_id, lambda job: job.done, timeout)


def predicting(job: Job) -> bool:
    """Past model loading, into the tiles: a cancel or a kill now interrupts real work."""
    return job.done or (job.status == "running" and job.progress > 0)


def temp_files(root: Path) -> list[Path]:
    return [p for folder in ("predictions", "masks") for p in (root / folder).rglob("*") if is_temp_file(p)]


@pytest.fixture
def pids() -> Iterator[list[int]]:
    """Worker pids a test started (directly or through ensure_worker); all stopped at teardown."""
    started: list[int] = []
    yield started
    for pid in started:
        stop_pid(pid)


@pytest.fixture(scope="module")
def studio(tmp_path_factory, bijie_pair, iburi_post) -> Iterator[tuple[Workspace, int, int]]:
    """One workspace with a Bijie and an Iburi scene, served by one worker for the module's tests."""
    root = tmp_path_factory.mktemp("studio")
    ws = api.open_workspace(root)
    bijie = api.import_scene(ws, bijie_pair[0], mask=bijie_pair[1]).scene
    iburi = api.import_scene(ws, iburi_post).scene
    worker = start_worker(ws.root)
    try:
        yield ws, bijie.id, iburi.id
    finally:
        stop_pid(worker.pid)
        worker.wait(timeout=10)
        ws.close()


def test_submit_checks_options_before_anything_is_queued(tmp_path, bijie_pair):
    with api.open_workspace(tmp_path / "ws") as ws:
        scene = api.import_scene(ws, bijie_pair[0]).scene
        for options, words in (
            ({"tile": 0}, "tile: must be between"),
            ({"tile": 64, "overlap": 64}, "overlap: must be between 0 and 63"),
            ({"tiles": 256}, "unknown option tiles"),
            ({"tta": "yes"}, "tta: must be true or false"),
            ({"device": "tpu"}, "device: must be one of"),
        ):
            with pytest.raises(InputError, match=words):
                api.submit_prediction(ws, scene.id, "segformer_b0", **options)
        with pytest.raises(NotFoundError):
            api.submit_prediction(ws, 999)
        with pytest.raises(InputError, match="not a job kind"):
            jobs.submit(ws, "retrain_everything", {})
        assert api.list_jobs(ws) == []

        job = api.submit_prediction(ws, scene.id, "segformer_b0", tile=256)
        assert job.status == "queued" and job.params["tile"] == 256 and job.params["overlap"] == 64
        assert api.job_report(job).text == "waiting for the worker"
        cancelled = api.cancel_job(ws, job.id)
        assert cancelled.status == "cancelled" and api.cancel_job(ws, job.id) == cancelled
        assert api.job_report(cancelled).text == "cancelled before it started"
        again = api.retry_job(ws, job.id)
        assert again.id != job.id and again.params == job.params and again.status == "queued"
        assert [j.id for j in api.list_jobs(ws, "queued")] == [again.id]


def test_prediction_job_records_a_prediction_and_a_mask_version(studio):
    ws, bijie, _ = studio
    imported = ws.latest_mask_version(bijie)
    job = api.submit_prediction(ws, bijie, "segformer_b0")
    job = finished(ws, job.id)
    assert job.status == "succeeded", job.error
    assert job.progress == 1.0
    report = api.job_report(job)
    assert report.stage == "done" and "mask version" in report.text
    prediction = ws.get_prediction(report.result["prediction_id"])
    assert prediction.scene_id == bijie and prediction.params["job_id"] == job.id
    mask = ws.get_mask_version(report.result["mask_version_id"])
    assert mask.source == "prediction" and mask.prediction_id == prediction.id
    assert mask.parent_id == imported.id  # on top of the imported truth
    scene = ws.get_scene(bijie)
    for raster in (mask.raster_path, prediction.raster_path):
        d = describe(raster)
        assert (d.width, d.height) == (scene.descriptor["width"], scene.descriptor["height"])
    with pytest.raises(ConflictError, match="already succeeded"):
        api.cancel_job(ws, job.id)


def test_bad_model_fails_with_words_not_a_traceback(studio):
    ws, bijie, _ = studio
    before = len(ws.list_predictions(bijie))
    job = finished(ws, api.submit_prediction(ws, bijie, "no_such_net").id)
    assert job.status == "failed"
    assert "no_such_net" in job.error and "neither a checkpoint" in job.error
    assert "Traceback" not in job.error and "Traceback" not in job.message
    assert api.job_report(job).text == job.error
    assert len(ws.list_predictions(bijie)) == before


def test_cancelled_queued_job_is_skipped(studio):
    ws, bijie, iburi = studio
    before = len(ws.list_predictions(bijie)), len(ws.list_mask_versions(bijie))
    ahead = api.submit_prediction(ws, iburi, "segformer_b0", **SLOW)  # ahead in the queue (FIFO)...
    queued = api.submit_prediction(ws, bijie, "segformer_b0")  # ...so this one is still waiting
    assert api.cancel_job(ws, queued.id).status == "cancelled"
    api.cancel_job(ws, ahead.id)
    after = finished(ws, api.submit_prediction(ws, bijie, "segformer_b0").id)
    assert after.status == "succeeded", after.error  # the worker went past the cancelled job
    skipped = ws.get_job(queued.id)
    assert skipped.status == "cancelled" and skipped.started is None
    assert len(ws.list_predictions(bijie)) == before[0] + 1
    assert len(ws.list_mask_versions(bijie)) == before[1] + 1
    assert all(p.params["job_id"] == after.id for p in ws.list_predictions(bijie)[before[0] :])


def test_cancelling_a_running_prediction_stops_it_and_saves_nothing(studio):
    ws, _, iburi = studio
    job = api.submit_prediction(ws, iburi, "segformer_b0", **SLOW)
    running = wait_for(ws, job.id, predicting)
    assert running.status == "running", running.error
    report = api.job_report(running)
    assert report.stage == "predicting" and "/384 tiles" in report.text
    cancelled = api.cancel_job(ws, job.id)
    assert cancelled.status == "cancelled"
    log = ws.root / "test-worker.log"
    deadline = time.monotonic() + 30
    while f"job {job.id} stopped: it was cancelled" not in log.read_text():  # the worker noticed
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.05)
    job = ws.get_job(job.id)
    assert job.status == "cancelled" and job.progress < 0.95
    assert ws.list_predictions(iburi) == [] and ws.list_mask_versions(iburi) == []
    while (ws.root / "tmp" / f"job-{job.id}").exists():  # removed just after the log line
        assert time.monotonic() < deadline, "the cancelled job's scratch folder was not removed"
        time.sleep(0.05)
    assert temp_files(ws.root) == []


def test_job_of_a_sigkilled_worker_is_failed_by_the_next_worker(tmp_path, iburi_post, pids):
    with api.open_workspace(tmp_path / "ws") as ws:
        scene = api.import_scene(ws, iburi_post).scene
        job = api.submit_prediction(ws, scene.id, "segformer_b0", **SLOW)
        first = start_worker(ws.root)
        try:
            assert wait_for(ws, job.id, predicting).status == "running"
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        assert ws.get_job(job.id).status == "running"  # nobody left to say otherwise
        assert (ws.root / "tmp" / f"job-{job.id}").exists()
        lost = ws.create_job("predict", {"scene_id": scene.id})  # queued, but its queue message is gone
        pids.append(api.ensure_worker(ws))
        job = finished(ws, job.id, timeout=30)
        assert job.status == "failed" and "worker stopped while this job was running" in job.error
        assert "Traceback" not in job.error
        assert ws.list_predictions(scene.id) == [] and ws.list_mask_versions(scene.id) == []
        assert not (ws.root / "tmp" / f"job-{job.id}").exists() and temp_files(ws.root) == []
        lost = finished(ws, lost.id, timeout=30)  # queued again by the new worker, and run
        assert lost.status == "failed"  # its params were never prepared: an internal error, in short
        assert lost.error.startswith("internal error: KeyError") and "Traceback" not in lost.error
        assert "Traceback" in (ws.root / "worker.log").read_text()  # the details went to the log
        retried = api.retry_job(ws, job.id)
        assert retried.status == "queued" and retried.params == job.params


def test_ensure_worker_starts_one_worker_and_replaces_a_dead_one(tmp_path, pids):
    with api.open_workspace(tmp_path / "ws") as ws:
        assert not api.worker_status(ws).alive
        found: list[int] = []
        callers = [threading.Thread(target=lambda: found.append(api.ensure_worker(ws))) for _ in range(2)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join()
        pids.append(found[0])
        assert len(found) == 2 and found[0] == found[1] and alive(found[0])
        assert api.ensure_worker(ws) == found[0]
        status = api.worker_status(ws)
        assert status.alive and status.pid == found[0]
        os.kill(pids.pop(), signal.SIGKILL)
        deadline = time.monotonic() + 10
        # Dead means its lock is free: a killed process keeps its files until its last thread is gone.
        while api.worker_status(ws).alive and time.monotonic() < deadline:
            time.sleep(0.05)
        replacement = api.ensure_worker(ws)
        pids.append(replacement)
        assert replacement != found[0] and alive(replacement)
        assert api.worker_status(ws).pid == replacement
        log = (ws.root / "worker.log").read_text()
        assert log.count("serving") == 2  # exactly one worker per start, none lost a race


def test_shutdown_fails_the_running_job_and_keeps_the_queue(tmp_path, iburi_post, bijie_pair):
    with api.open_workspace(tmp_path / "ws") as ws:
        iburi = api.import_scene(ws, iburi_post).scene
        bijie = api.import_scene(ws, bijie_pair[0]).scene
        running = api.submit_prediction(ws, iburi.id, "segformer_b0", **SLOW)
        waiting = api.submit_prediction(ws, bijie.id, "segformer_b0")
        worker = start_worker(ws.root)
        try:
            assert wait_for(ws, running.id, predicting).status == "running"
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0
        finally:
            if worker.poll() is None:
                worker.kill()
        job = ws.get_job(running.id)
        assert job.status == "failed" and "shut down before this job finished" in job.error
        assert ws.list_predictions(iburi.id) == [] and temp_files(ws.root) == []
        assert ws.get_job(waiting.id).status == "queued"  # for the next worker, message and all
        assert jobs._queue(ws.root)[0].pending_count() == 1
        assert not api.worker_status(ws).alive and not (ws.root / "worker.json").exists()
