"""The `train` job: fine-tune from the default model on corrected Bijie scenes, scored before and after."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine import api
from engine.errors import InputError
from engine.io.masks import read_mask
from engine.io.raster import describe
from engine.io.writers import write_raster
from engine.jobs import HANDLERS
from engine.jobs_worker import execute_job
from engine.models.checkpoint import load_model
from engine.models.shipped import default_name, resolve_checkpoint

pytestmark = pytest.mark.skipif(default_name() is None, reason="no default model shipped")


@pytest.fixture
def corrected(tmp_path, tiny_bijie):
    """A workspace with two Bijie scenes whose masks a reviewer corrected (the true masks)."""
    splits = json.loads((tiny_bijie / "splits.json").read_text())
    with api.open_workspace(tmp_path / "ws") as ws:
        yield ws, *_corrected_scenes(ws, tiny_bijie, splits)


def _corrected_scenes(ws, tiny_bijie, splits):
    ids = []
    for stem in splits["train"][:2]:
        scene = api.import_scene(ws, tiny_bijie / "images" / f"{stem}.png").scene
        truth = read_mask(tiny_bijie / "masks" / f"{stem}.png")
        d = describe(scene.path)
        ws.save_mask_version(
            scene.id, lambda p, m=truth, d=d: write_raster(p, (m > 0).astype(np.uint8), d),
            parent_id=None, source="correction", author="ana",
        )  # fmt: skip
        ids.append(scene.id)
    unreviewed = api.import_scene(ws, tiny_bijie / "images" / f"{splits['train'][2]}.png").scene
    return ids, unreviewed.id


def _run(ws, job_id):
    execute_job(ws.root, job_id, HANDLERS)
    job = api.job_status(ws, job_id)
    report = api.job_report(job)
    assert job.status == "succeeded", report.error
    return report


def test_finetune_registers_a_version_with_its_data_and_both_scores(corrected, tiny_bijie):
    ws, ids, _ = corrected
    job = api.submit_training(
        ws, ids, epochs=2, size=64, batch=2, precision="fp32", val_folder=str(tiny_bijie), name="ana-ft"
    )
    report = _run(ws, job.id)
    result = report.result
    (model,) = ws.list_models()
    assert model.name == "ana-ft" and model.id == result["model_id"] and model.parent_id is None
    versions = {int(k): v for k, v in model.training_snapshot["mask_version_ids"].items()}
    assert versions == {i: ws.latest_mask_version(i).id for i in ids}
    assert set(model.metrics["before"]) >= {"miou", "iou"} and 0 <= model.metrics["after"]["miou"] <= 1
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    _, card = load_model(model.checkpoint_path)  # a normal checkpoint, inside the workspace
    assert card.architecture == "kda_student" and model.checkpoint_path.is_relative_to(ws.root)
    _, base = load_model(resolve_checkpoint("default"))
    assert card.mean == base.mean  # a fine-tune keeps its start's normalisation
    assert "→" in report.text


def test_pseudo_label_round_uses_the_unreviewed_scenes(corrected, tiny_bijie):
    ws, ids, _ = corrected
    job = api.submit_training(
        ws, ids, mode="pseudo_label", epochs=1, size=64, batch=2, precision="fp32", val_folder=str(tiny_bijie)
    )
    _run(ws, job.id)
    (model,) = ws.list_models()
    assert model.training_snapshot["mode"] == "pseudo_label" and 0 <= model.training_snapshot["selected"] <= 1


def test_bad_requests_fail_when_submitted(corrected, tiny_bijie):
    ws, ids, unreviewed = corrected
    with pytest.raises(InputError, match="correct it"):
        api.submit_training(ws, [unreviewed], val_folder=str(tiny_bijie))
    with pytest.raises(InputError, match="validation"):
        api.submit_training(ws, ids)
    with pytest.raises(InputError, match="epochs"):
        api.submit_training(ws, ids, epochs=0, val_folder=str(tiny_bijie))
    with pytest.raises(InputError, match="neither a model id"):
        api.submit_training(ws, ids, base="no_such_model", val_folder=str(tiny_bijie))
    assert api.list_jobs(ws) == []
