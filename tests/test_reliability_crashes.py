"""A job worker SIGKILLed at the worst moments: while it saves a prediction, mid-epoch in training,
again and again, or shut down. Every record points at a whole file, earlier work survives, and the
next worker either fails the interrupted job with a clear message or resumes it. The app's own saves
and full disks are in test_reliability_saves.py; the kill points come from tests/crash_points.py.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from engine import api
from engine.io.masks import read_mask
from engine.io.raster import describe
from engine.io.writers import write_raster
from engine.jobs import HANDLERS
from engine.jobs_core import JobKind, JobPaths
from engine.jobs_worker import MAX_RESUMES, execute_job, recover
from engine.store import DiskFullError, Workspace
from tests.crash_points import assert_only_whole_files_are_recorded, die, run_child
from tests.test_jobs import finished, start_worker, stop_pid

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
                    die()

            return write

        jobs_predict._linked = linked
    elif point == "prediction registered":  # inside the commit: the prediction row, not yet the mask
        Workspace.save_mask_version = lambda self, *args, **kwargs: die()
    elif point == "results registered":  # prediction and mask rows added, the job not yet succeeded
        finish = Workspace.finish_job

        def finish_job(self, job_id, status, **kwargs):
            if status == "succeeded":
                die()
            return finish(self, job_id, status, **kwargs)

        Workspace.finish_job = finish_job
    elif point == "training epoch 2":  # after epoch 1's checkpoint, at the first step of epoch 2
        report = jobs_train._TrainingProgress.__call__

        def call(self, p):
            if p.epoch == 2 and p.metrics is None:
                die()
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


@pytest.mark.parametrize("point", ["raster half copied in", "prediction registered", "results registered"])
def test_worker_sigkilled_while_a_prediction_is_saved_registers_nothing(imported, point):
    ws, scene_id, before, before_bytes = imported
    job = api.submit_prediction(ws, scene_id, "kda_student", tile=128, overlap=0)  # random weights
    run_child(_worker_dying_at, str(ws.root), point)
    assert ws.get_job(job.id).status == "running"  # as the dead worker left it
    assert ws.list_predictions(scene_id) == []  # the commit is one transaction: nothing half-registered
    job = _restart_worker_until_done(ws, job.id)
    assert job.status == "failed"
    assert "worker stopped while this job was running" in job.error and "nothing was saved" in job.error
    assert ws.list_predictions(scene_id) == [] and ws.list_mask_versions(scene_id) == [before]
    assert before.raster_path.read_bytes() == before_bytes
    leftovers = assert_only_whole_files_are_recorded(ws)
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
    run_child(_worker_dying_at, str(ws.root), "training epoch 2")
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
