"""Crashes and full disks: a worker or a saving process SIGKILLed at the worst moments, and writes that
run out of space. Whatever happens, every record points at a whole file, earlier work survives, and
the next worker either fails the interrupted job with a clear message or resumes it.

Processes that must die at an exact point are started with multiprocessing (spawn) and SIGKILL
themselves from a patched function: a real SIGKILL, at a moment a timer could only hit by luck.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from engine import api
from engine.io.masks import read_mask
from engine.io.raster import describe, open_scene
from engine.io.writers import write_raster
from engine.jobs import HANDLERS
from engine.jobs_core import JobKind, JobPaths
from engine.jobs_worker import MAX_RESUMES, execute_job, recover
from engine.store import DiskFullError, MaskConflictError, Workspace, is_temp_file
from tests.test_jobs import finished, start_worker, stop_pid

SPAWN = multiprocessing.get_context("spawn")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _run_child(target, *args, timeout: float = 120.0) -> None:
    """Run `target(*args)` in a fresh interpreter and check that it ended by SIGKILL."""
    child = SPAWN.Process(target=target, args=args)
    child.start()
    child.join(timeout)
    if child.exitcode is None:
        child.kill()
        child.join()
        raise AssertionError(f"{target.__name__}{args} did not die within {timeout} s")
    assert child.exitcode == -signal.SIGKILL, f"{target.__name__}{args} exited with {child.exitcode}"


# --- the worker, killed while a job saves its results -----------------------------------------------


def _worker_dying_at(root: str, point: str) -> None:
    """A job worker (what `python -m engine worker` runs) that SIGKILLs itself at `point`."""
    from engine import jobs, jobs_predict, jobs_train

    if point == "raster half copied in":  # copying a result raster in, as across file systems

        def linked(source: Path):
            def write(target: Path) -> None:
                data = Path(source).read_bytes()
                with open(target, "wb") as out:
                    out.write(data[: len(data) // 2])
                    out.flush()
                    _die()

            return write

        jobs_predict._linked = linked
    elif point == "prediction registered":  # inside the commit: the prediction row, not yet the mask
        Workspace.save_mask_version = lambda self, *args, **kwargs: _die()
    elif point == "results registered":  # prediction and mask rows added, the job not yet succeeded
        finish = Workspace.finish_job

        def finish_job(self, job_id, status, **kwargs):
            if status == "succeeded":
                _die()
            return finish(self, job_id, status, **kwargs)

        Workspace.finish_job = finish_job
    elif point == "training epoch 2":  # after epoch 1's checkpoint, at the first step of epoch 2
        report = jobs_train._TrainingProgress.__call__

        def call(self, p):
            if p.epoch == 2 and p.metrics is None:
                _die()
            return report(self, p)

        jobs_train._TrainingProgress.__call__ = call
    else:
        raise ValueError(point)
    jobs.run_worker(root)


def _restart_worker_until_done(ws: Workspace, job_id: int, timeout: float = 60.0):
    """The next worker start: recover, then run whatever is queued; stopped once the job has ended."""
    worker = start_worker(ws.root)
    try:
        return finished(ws, job_id, timeout)
    finally:
        stop_pid(worker.pid)
        worker.wait(timeout=15)


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def _assert_only_whole_files_are_recorded(ws: Workspace) -> set[Path]:
    """Every prediction and mask record opens and reads whole; returns the unreferenced files left.

    Those are hidden temporaries (never under a final name) or complete files whose row never
    committed; `remove_orphan_files` clears exactly them.
    """
    assert ws.integrity_check() == "ok"
    referenced = set()
    for scene in ws.list_scenes():
        records = [*ws.list_predictions(scene.id), *ws.list_mask_versions(scene.id)]
        for record in records:
            with open_scene(record.raster_path) as raster:
                raster.read_float()  # every block decodes
            referenced.add(record.raster_path.resolve())
    files = {
        p.resolve()
        for folder in ("predictions", "masks")
        for p in (ws.root / folder).rglob("*")
        if p.is_file()
    }
    leftovers = files - referenced
    for path in leftovers:
        if not is_temp_file(path):
            with open_scene(path) as raster:  # under a final name means complete
                raster.read_float()
    assert not [p for p in (ws.root / "tmp").rglob("*") if p.is_file()], "scratch files left behind"
    return leftovers


@pytest.fixture
def imported(tmp_path, bijie_pair) -> Iterator[tuple[Workspace, int, object, bytes]]:
    """A workspace with a Bijie scene and its imported mask (version 1, the work to protect)."""
    with api.open_workspace(tmp_path / "ws") as ws:
        result = api.import_scene(ws, bijie_pair[0], mask=bijie_pair[1])
        yield ws, result.scene.id, result.mask_version, result.mask_version.raster_path.read_bytes()


@pytest.mark.parametrize("point", ["raster half copied in", "prediction registered", "results registered"])
def test_worker_sigkilled_while_a_prediction_is_saved_registers_nothing(imported, point):
    ws, scene_id, before, before_bytes = imported
    job = api.submit_prediction(ws, scene_id, "kda_student", tile=128, overlap=0)  # random weights
    _run_child(_worker_dying_at, str(ws.root), point)
    assert ws.get_job(job.id).status == "running"  # as the dead worker left it
    assert ws.list_predictions(scene_id) == []  # the commit is one transaction: nothing half-registered
    job = _restart_worker_until_done(ws, job.id)
    assert job.status == "failed"
    assert "worker stopped while this job was running" in job.error and "nothing was saved" in job.error
    assert ws.list_predictions(scene_id) == [] and ws.list_mask_versions(scene_id) == [before]
    assert before.raster_path.read_bytes() == before_bytes
    leftovers = _assert_only_whole_files_are_recorded(ws)
    assert set(ws.remove_orphan_files()) == leftovers
    assert api.retry_job(ws, job.id).status == "queued"


# --- training: killed mid-epoch, resumed from the last epoch's checkpoint ----------------------------


@pytest.fixture
def corrected(tmp_path, tiny_bijie) -> Iterator[tuple[Workspace, list[int], Path]]:
    """Two Bijie scenes with corrected masks, and a small random-weight base model to fine-tune (the
    smallest KDA student builds and steps fastest on a CPU)."""
    from engine.models import build_model
    from engine.models.checkpoint import save_model

    base = save_model(build_model("kda_student", 3, backbone="pvt_v2_b0"), tmp_path / "base.safetensors")
    splits = json.loads((tiny_bijie / "splits.json").read_text())
    with api.open_workspace(tmp_path / "ws") as ws:
        ids = []
        for stem in splits["train"][:2]:
            scene = api.import_scene(ws, tiny_bijie / "images" / f"{stem}.png").scene
            truth = (read_mask(tiny_bijie / "masks" / f"{stem}.png") > 0).astype(np.uint8)
            d = describe(scene.path)
            ws.save_mask_version(
                scene.id, lambda p, m=truth, d=d: write_raster(p, m, d), parent_id=None, source="correction"
            )
            ids.append(scene.id)
        yield ws, ids, base


def test_training_job_sigkilled_mid_epoch_resumes_from_its_last_checkpoint(corrected, tiny_bijie, tmp_path):
    import torch

    ws, ids, base = corrected
    val = tmp_path / "val"  # one validation pair: each epoch ends with a validation pass
    stem = json.loads((tiny_bijie / "splits.json").read_text())["val"][0]
    for sub in ("images", "masks"):
        (val / sub).mkdir(parents=True)
        (val / sub / f"{stem}.png").symlink_to((tiny_bijie / sub / f"{stem}.png").resolve())
    (val / "splits.json").write_text(json.dumps({"val": [stem]}))
    job = api.submit_training(
        ws, ids, base=str(base), epochs=2, size=64, batch=2, precision="fp32", val_folder=str(val),
        name="tuned",
    )  # fmt: skip
    scratch = JobPaths(ws.root).scratch(job.id)
    _run_child(_worker_dying_at, str(ws.root), "training epoch 2")
    assert ws.get_job(job.id).status == "running"
    state = torch.load(scratch / "model.resume.pt", map_location="cpu", weights_only=True)["state"]
    assert state["epochs_done"] == 1  # killed during epoch 2
    job = _restart_worker_until_done(ws, job.id, timeout=180)
    report = api.job_report(job)
    assert job.status == "succeeded", job.error
    assert report.result["resumed_from"] == 1  # epoch 1 was not trained again
    assert [h["epoch"] for h in report.result["history"]] == [1, 2]  # the chart keeps epoch 1
    assert "left running by a dead worker; queued again" in (ws.root / "test-worker.log").read_text()
    (model,) = ws.list_models()
    assert model.name == "tuned" and model.id == report.result["model_id"]
    from engine.models.checkpoint import load_model

    _, card = load_model(model.checkpoint_path)
    assert card.provenance["job"] == job.id and card.metrics
    assert sorted(p.name for p in (ws.root / "models").iterdir()) == sorted(
        [model.checkpoint_path.name, model.checkpoint_path.with_suffix(".json").name]
    )
    assert not scratch.exists()


def test_a_training_job_resumes_only_on_the_data_it_was_trained_on(tmp_path):
    """A correction saved while the job was down changes the training data: the checkpoint is dropped
    and training starts over (saying so) instead of mixing two data sets; a damaged one is dropped too."""
    from types import SimpleNamespace

    from engine.jobs_train import _previous_attempt

    said: list[str] = []
    context = SimpleNamespace(scratch=tmp_path, report=lambda stage, text, *a, **k: said.append(text))
    first = {"mask_version_ids": {"1": 4, "2": 7}, "base": "m"}
    attempt, state = tmp_path / "attempt.json", tmp_path / "model.resume.pt"
    attempt.write_text(json.dumps({"snapshot": first, "before": {"miou": 0.5}}))
    state.write_bytes(b"not a checkpoint")  # damaged: dropped, the base score is kept
    assert _previous_attempt(context, first) == (None, {"miou": 0.5})
    assert not state.exists() and attempt.exists() and "unreadable" in said[-1]
    state.write_bytes(b"state")
    newer = {**first, "mask_version_ids": {"1": 4, "2": 9}}  # scene 2 was corrected again
    assert _previous_attempt(context, newer) == (None, None)
    assert not state.exists() and not attempt.exists() and "changed" in said[-1]


def test_a_job_that_keeps_killing_its_worker_is_failed_after_a_few_restarts(tmp_path):
    """Resuming is bounded, a cancel wins over a pending resume, and kinds that cannot resume fail."""
    with Workspace(tmp_path / "ws") as ws:
        paths = JobPaths(ws.root)
        requeued: list[int] = []

        def crash(job_id: int) -> Path:
            """Leave the job as a worker killed after an epoch leaves it: running, with a checkpoint."""
            ws.start_job(job_id)
            scratch = paths.scratch(job_id)
            scratch.mkdir(parents=True, exist_ok=True)
            (scratch / "model.resume.pt").write_bytes(b"state")
            (scratch / "attempt.json").write_text("{}")
            recover(ws, paths, requeued.append, set, HANDLERS)
            return scratch

        job = ws.create_job("train", {})
        for restart in range(1, MAX_RESUMES + 1):
            scratch = crash(job.id)
            queued = ws.get_job(job.id)
            assert queued.status == "queued" and scratch.is_dir() and requeued[-1] == job.id
            assert f"restart {restart} of at most {MAX_RESUMES}" in api.job_report(queued).text
        scratch = crash(job.id)
        failed = ws.get_job(job.id)
        assert failed.status == "failed" and f"interrupted {MAX_RESUMES + 1} times" in failed.error
        assert not scratch.exists()

        cancelled = ws.create_job("train", {})
        scratch = crash(cancelled.id)
        api.cancel_job(ws, cancelled.id)
        recover(ws, paths, requeued.append, set, HANDLERS)
        assert ws.get_job(cancelled.id).status == "cancelled" and not scratch.exists()

        predict = ws.create_job("predict", {})
        ws.start_job(predict.id)
        paths.scratch(predict.id).mkdir(parents=True)
        (paths.scratch(predict.id) / "model.resume.pt").write_bytes(b"not a train job")
        recover(ws, paths, requeued.append, set, HANDLERS)
        assert ws.get_job(predict.id).status == "failed" and not paths.scratch(predict.id).exists()


def _fake_kind(run, resumable=None) -> JobKind:
    return JobKind("fake", lambda ws, params: params, run, lambda result: "done", resumable)


def test_a_shut_down_worker_queues_a_resumable_job_again_instead_of_failing_it(tmp_path):
    """SIGTERM (an app restart) stops a training job at its next report: with a checkpoint it goes
    back to the queue, keeping its scratch folder, and the next run picks the checkpoint up."""
    runs: list[bool] = []

    def run(context):
        state = context.scratch / "state"
        runs.append(state.exists())
        if not state.exists():
            state.write_text("epoch 1")
            context.stop.set()  # what the worker's SIGTERM handler does
            context.report("training", "epoch 2")
        return lambda: {"resumed": state.read_text()}

    kinds = {"fake": _fake_kind(run, lambda scratch: (scratch / "state").is_file())}
    with Workspace(tmp_path / "ws") as ws:
        job = ws.create_job("fake", {})
        execute_job(ws.root, job.id, kinds)
        queued = ws.get_job(job.id)
        assert queued.status == "queued" and "shut down" in api.job_report(queued).text
        assert (JobPaths(ws.root).scratch(job.id) / "state").is_file()
        execute_job(ws.root, job.id, kinds)
        assert runs == [False, True]
        done = api.job_report(ws.get_job(job.id))
        assert done.status == "succeeded" and done.result == {"resumed": "epoch 1"}
        assert not JobPaths(ws.root).scratch(job.id).exists()

        job = ws.create_job("fake", {})  # a kind that cannot resume fails, as before
        execute_job(ws.root, job.id, {"fake": _fake_kind(run)})
        assert "shut down before this job finished" in ws.get_job(job.id).error


def test_a_commit_that_fails_half_way_registers_nothing(imported, monkeypatch):
    """A prediction's commit is one transaction with the job's success: if saving the mask fails (here
    the disk fills up), the prediction row is rolled back and its raster removed."""
    ws, scene_id, before, _ = imported
    monkeypatch.setattr(
        Workspace, "save_mask_version", lambda *a, **k: (_ for _ in ()).throw(DiskFullError("m"))
    )

    def run(context):
        raster = context.scratch / "p.tif"
        shutil.copyfile(before.raster_path, raster)

        def commit():
            store = context.workspace  # the worker's connection, which holds the commit transaction
            prediction = store.add_prediction(
                scene_id, "m", {}, lambda target: shutil.copyfile(raster, target)
            )
            store.save_mask_version(scene_id, lambda target: None, parent_id=before.id, source="prediction")
            return {"prediction_id": prediction.id}

        return commit

    job = ws.create_job("fake", {})
    execute_job(ws.root, job.id, {"fake": _fake_kind(run)})
    failed = ws.get_job(job.id)
    assert failed.status == "failed" and "disk is full" in failed.error
    assert ws.list_predictions(scene_id) == [] and not _files(ws.root / "predictions")
    assert ws.list_mask_versions(scene_id) == [before] and ws.integrity_check() == "ok"


# --- the app, killed while it saves a corrected mask -------------------------------------------------


def _save_dying_at(root: str, scene_id: int, parent_id: int, point: str) -> None:
    """A Correct-page save (whole-scene mask) that SIGKILLs its process at `point`."""
    from engine.io import writers
    from engine.store import files

    if point == "raster half written":
        writers.BlockWriter.write = lambda self, y, x, block: _die()
    elif point == "raster written, not yet renamed":
        files.fsync_file = lambda path: _die()
    elif point == "renamed, row not committed":
        check = Workspace._check_mask_parent
        calls = []

        def check_parent(self, conn, scene, parent):
            calls.append(1)
            if len(calls) == 2:  # the re-check inside the write transaction
                _die()
            return check(self, conn, scene, parent)

        Workspace._check_mask_parent = check_parent
    with api.open_workspace(root) as ws:
        grid = api.scene_grid(ws, scene_id)
        mask = np.ones((grid.height, grid.width), np.uint8)
        api.save_edited_mask(ws, scene_id, mask, parent_id, author="ana")
    raise AssertionError("the save finished")


@pytest.mark.parametrize(
    "point", ["raster half written", "raster written, not yet renamed", "renamed, row not committed"]
)
def test_app_sigkilled_during_a_mask_save_keeps_the_previous_version(imported, point):
    ws, scene_id, before, before_bytes = imported
    truth = api.load_mask(ws, before.id)
    _run_child(_save_dying_at, str(ws.root), scene_id, before.id, point)
    with Workspace(ws.root) as after:
        assert after.list_mask_versions(scene_id) == [before]
        assert before.raster_path.read_bytes() == before_bytes
        np.testing.assert_array_equal(api.load_mask(after, before.id), truth)
        leftovers = _assert_only_whole_files_are_recorded(after)
        assert len(leftovers) == 1  # the killed save's file: hidden, or complete but unrecorded
        assert is_temp_file(next(iter(leftovers))) == (point != "renamed, row not committed")
        # the next session saves on top of the intact version, no conflict, no repair needed
        fresh = api.save_edited_mask(after, scene_id, 1 - truth, before.id, author="ben")
        np.testing.assert_array_equal(api.load_mask(after, fresh.id), 1 - truth)
        assert set(after.remove_orphan_files()) == leftovers
        _assert_only_whole_files_are_recorded(after)


# --- a full disk ------------------------------------------------------------------------------------


def _no_space(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _assert_nothing_lost(ws: Workspace, scene_id: int, versions: list, masks: list[np.ndarray]) -> None:
    assert ws.list_mask_versions(scene_id) == versions
    for version, mask in zip(versions, masks, strict=True):
        np.testing.assert_array_equal(api.load_mask(ws, version.id), mask)
    with open_scene(ws.get_scene(scene_id).path) as scene:
        scene.read_float()
    assert _assert_only_whole_files_are_recorded(ws) == set()  # no temporary, no unrecorded file


@pytest.mark.parametrize("where", ["raster write", "flush to disk", "database"])
def test_disk_full_during_a_mask_save_is_a_clear_error_and_loses_nothing(imported, monkeypatch, where):
    from engine.io import writers
    from engine.store import files

    ws, scene_id, before, _ = imported
    first = api.load_mask(ws, before.id)
    second = api.save_edited_mask(ws, scene_id, 1 - first, before.id, author="ana")
    note = ""
    if where == "raster write":
        monkeypatch.setattr(writers.BlockWriter, "write", _no_space)
    elif where == "flush to disk":
        monkeypatch.setattr(files, "fsync_file", _no_space)
    else:  # SQLite's own "database or disk is full": the database may not grow by another page
        pages = ws._db.execute("PRAGMA page_count").fetchone()[0]
        ws._db.execute(f"PRAGMA max_page_count = {pages}")
        note = "x" * 20_000  # a row that needs new pages
    with pytest.raises(DiskFullError) as full:
        api.save_edited_mask(ws, scene_id, first, second.id, author="ana", note=note)
    message = str(full.value)
    assert "disk is full" in message and "no space left" in message and "unchanged" in message
    named = ws.db_path if where == "database" else ws.root / "masks" / str(scene_id)
    assert str(named) in message
    _assert_nothing_lost(ws, scene_id, [before, second], [first, 1 - first])
    monkeypatch.undo()
    if where == "database":
        ws._db.execute("PRAGMA max_page_count = 1073741823")
    third = api.save_edited_mask(ws, scene_id, first, second.id, author="ana", note=note)
    assert third.parent_id == second.id  # space back: the same save goes through


def test_disk_full_during_a_scene_import_keeps_the_workspace(imported, monkeypatch, landsat_utm):
    from engine.store import files

    ws, scene_id, before, _ = imported
    real_open = open

    def open_without_space(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        if "w" in mode:
            handle.write = _no_space
        return handle

    monkeypatch.setattr(files, "open", open_without_space, raising=False)
    with pytest.raises(DiskFullError, match=r"scenes/.*RGB\.byte\.tif: the disk is full"):
        api.import_scene(ws, landsat_utm)
    monkeypatch.undo()
    assert [s.id for s in ws.list_scenes()] == [scene_id]
    assert [p for p in (ws.root / "scenes").rglob("*") if p.is_file()] == [ws.get_scene(scene_id).path]
    _assert_nothing_lost(ws, scene_id, [before], [api.load_mask(ws, before.id)])


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 2 MiB tmpfs, where this test runs as root and may mount one (else the injected tests stand)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_really_full_disk_refuses_the_save_and_keeps_every_version(small_disk, bijie_pair):
    """On a full disk GDAL does not raise: libtiff prints "No space left on device" and GDAL returns with
    an empty GeoTIFF. SQLite can still commit, because it reuses its WAL file after a checkpoint. Before
    the store checked for this, the empty raster was recorded as the scene's latest mask version."""
    import sqlite3

    with api.open_workspace(small_disk / "ws") as ws:
        imported = api.import_scene(ws, bijie_pair[0], mask=bijie_pair[1])
        scene_id, latest = imported.scene.id, imported.mask_version
        versions, masks = [latest], [api.load_mask(ws, latest.id)]
        noise = np.random.default_rng(0).integers(0, 2, masks[0].shape, dtype=np.uint8)  # incompressible
        for i in range(8):  # a workspace in use: its WAL has grown
            masks.append(noise if i % 2 else 1 - noise)
            latest = api.save_edited_mask(ws, scene_id, masks[-1], latest.id, author="ana", note="n" * 4000)
            versions.append(latest)
        with sqlite3.connect(ws.db_path) as other:  # what SQLite does by itself now and then
            other.execute("PRAGMA wal_checkpoint(RESTART)")
        filler = small_disk / "filler"
        with open(filler, "wb", buffering=0) as out:  # fill the disk to the last block
            with pytest.raises(OSError) as full:
                while True:
                    out.write(b"\0" * 4096)
            assert full.value.errno == errno.ENOSPC
        with pytest.raises(DiskFullError, match=r"masks/.*\.tif: the disk is full"):
            api.save_edited_mask(ws, scene_id, masks[-2], latest.id, author="ana")
        filler.unlink()
        _assert_nothing_lost(ws, scene_id, versions, masks)
        again = api.save_edited_mask(ws, scene_id, masks[-2], latest.id, author="ana")
        np.testing.assert_array_equal(api.load_mask(ws, again.id), masks[-2])


def test_a_conflicting_save_on_a_full_disk_reports_the_conflict_first(imported, monkeypatch):
    """The cheap parent check runs before any byte is written: a stale save says so, not "disk full"."""
    from engine.store import files

    ws, scene_id, before, _ = imported
    mask = api.load_mask(ws, before.id)
    api.save_edited_mask(ws, scene_id, 1 - mask, before.id, author="ana")
    monkeypatch.setattr(files, "fsync_file", _no_space)
    with pytest.raises(MaskConflictError):
        api.save_edited_mask(ws, scene_id, mask, before.id, author="ben")
