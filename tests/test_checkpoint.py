"""Checkpoints: safetensors + card rebuild the model exactly; pickles are refused without being opened."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from engine.errors import InputError
from engine.models import build_model
from engine.models.checkpoint import ModelCard, load_model, save_model


def test_round_trip_rebuilds_the_model_exactly(tmp_path):
    torch.manual_seed(1)
    model = build_model("segformer_b0", in_channels=14).eval()
    path = save_model(
        model,
        tmp_path / "l4s.safetensors",
        mean=tuple(float(i) for i in range(14)),
        std=(1.0,) * 14,
        provenance={"data": "landslide4sense/train", "command": "test"},
    )
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["architecture"] == "segformer_b0" and card["in_channels"] == 14
    assert card["class_names"] == ["background", "landslide"]
    again, loaded_card = load_model(path)
    assert loaded_card.mean == tuple(float(i) for i in range(14))
    x = torch.randn(1, 14, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    # the card may be given instead of the weights
    assert load_model(path.with_suffix(".json"))[1] == loaded_card
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_options_survive_the_round_trip(tmp_path):
    model = build_model("kda_student", backbone="pvt_v2_b1")
    again, card = load_model(save_model(model, tmp_path / "b1.safetensors"))
    assert card.options == {"backbone": "pvt_v2_b1"}
    assert sum(p.numel() for p in again.parameters()) == sum(p.numel() for p in model.parameters())


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt", ".bin"])
def test_pickle_checkpoint_is_refused_and_never_opened(tmp_path, suffix):
    marker = tmp_path / "pwned"
    path = tmp_path / f"model{suffix}"
    path.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}))
    with pytest.raises(InputError, match=r"pickle-based checkpoint.*safetensors"):
        load_model(path)
    assert not marker.exists()


def test_broken_and_mismatched_checkpoints(tmp_path):
    model = build_model("segformer_b0")
    path = save_model(model, tmp_path / "m.safetensors")
    card = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**card, "in_channels": 4}))
    with pytest.raises(InputError, match="do not fit a segformer_b0"):
        load_model(path)
    path.with_suffix(".json").write_text(json.dumps({**card, "surprise": 1}))
    with pytest.raises(InputError, match="unknown fields"):
        load_model(path)
    path.with_suffix(".json").write_text(json.dumps([card]))
    with pytest.raises(InputError, match="not a JSON object"):
        load_model(path)
    path.with_suffix(".json").write_text(json.dumps(card))
    path.write_bytes(b"garbage")
    with pytest.raises(InputError, match="not readable"):
        load_model(path)
    with pytest.raises(InputError, match="checkpoint not found"):
        load_model(tmp_path / "none.safetensors")
    (tmp_path / "alone.safetensors").write_bytes(b"")
    with pytest.raises(InputError, match="no model card"):
        load_model(tmp_path / "alone.safetensors")


# --- pickles never run, whatever entry point they are handed to ------------------------------------
# Every file below would create `marker` when unpickled: a class whose __reduce__ returns
# (pathlib.Path.touch, (marker,)), inside a plain pickle or a torch.save zip. The control test proves
# the payload is live; the others hand it to each way a checkpoint gets into Scarp.


CARD = ModelCard("segformer_b0", 3, mean=(0.0,) * 3, std=(1.0,) * 3).to_json()


class _Touch:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _evil(folder: Path, name: str, marker: Path, *, card: bool = True) -> Path:
    """A pickle-based checkpoint with a payload, and (by default) a valid model card beside it."""
    path = folder / name
    if path.suffix in (".pt", ".pth") and "zip" in name:
        torch.save({"weight": torch.zeros(1), "payload": _Touch(marker)}, path)
    else:
        path.write_bytes(pickle.dumps({"state_dict": _Touch(marker)}))
    if card:
        path.with_suffix(".json").write_text(CARD)
    return path


def test_the_payload_is_live_when_unpickled(tmp_path):
    """Control: the same files do run their code when loaded the unsafe way."""
    marker = tmp_path / "ran"
    pickle.loads(_evil(tmp_path, "plain.pt", marker, card=False).read_bytes())
    assert marker.exists()
    marker.unlink()
    torch.load(_evil(tmp_path, "zip.pt", marker, card=False), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    "name", ["m.pt", "m.pth", "m.ckpt", "m.bin", "m.pkl", "m.pickle", "M.PTH", "zip.pt", "zip.pth"]
)
def test_load_model_refuses_pickles_without_running_them(tmp_path, name):
    marker = tmp_path / "pwned"
    path = _evil(tmp_path, name, marker)
    with pytest.raises(InputError, match=r"pickle-based checkpoint.*refuses.*safetensors"):
        load_model(path)
    assert not marker.exists()


def test_a_pickle_renamed_to_safetensors_is_not_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    disguised = _evil(tmp_path, "m.pt", marker).rename(tmp_path / "m.safetensors")
    with pytest.raises(InputError, match="weights are not readable"):
        load_model(disguised)
    zipped = _evil(tmp_path, "zip.pt", marker).rename(tmp_path / "z.safetensors")
    (tmp_path / "z.json").write_text(CARD)
    with pytest.raises(InputError, match="weights are not readable"):
        load_model(zipped)
    assert not marker.exists()


def _cli(capsys, *argv: str) -> tuple[int, str]:
    from engine.cli import main

    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_every_cli_entry_point_refuses_pickles(tmp_path, capsys, tiny_bijie, bijie_pair, monkeypatch):
    marker = tmp_path / "pwned"
    evil = _evil(tmp_path, "evil.pt", marker)
    zipped = _evil(tmp_path, "zip.pth", marker)
    train = ["train", "--model", "segformer_b0", "--data", tiny_bijie, "--epochs", "1", "--batch", "2",
             "--size", "32", "--precision", "fp32"]  # fmt: skip
    unlabeled = tmp_path / "pool"
    unlabeled.mkdir()
    (unlabeled / "a.png").symlink_to(bijie_pair[0])
    monkeypatch.setenv("SCARP_WORKSPACE", str(tmp_path / "ws"))
    calls = {
        "predict --model": ["predict", "--model", evil, "--in", bijie_pair[0], "--out", tmp_path / "p.tif"],
        "predict ensemble": ["predict", "--model", f"segformer_b0,{evil}", "--in", bijie_pair[0],
                             "--out", tmp_path / "p.tif"],
        "evaluate --model": ["evaluate", "--model", evil, "--data", tiny_bijie],
        "train --init": [*train, "--out", tmp_path / "a.safetensors", "--init", evil],
        "train --teacher": [*train, "--out", tmp_path / "b.safetensors", "--distill", "kd",
                            "--teacher", evil],
        "pseudo-label --model": ["pseudo-label", "--model", evil, "--labeled", tiny_bijie, "--unlabeled",
                                 unlabeled, "--out", tmp_path / "rounds", "--epochs", "1", "--size", "32"],
    }  # fmt: skip
    for what, argv in calls.items():
        code, err = _cli(capsys, *argv)
        assert code == 2 and "pickle-based checkpoint" in err and "Traceback" not in err, (what, err)
        assert not marker.exists(), what
    # DINOv2 teacher weights may be an official .pth: read with weights_only, so objects are refused
    teacher = [*train, "--out", tmp_path / "c.safetensors", "--distill", "kd", "--teacher", "dinov2_vits14"]
    for weights in (evil, zipped):
        code, err = _cli(capsys, *teacher, "--teacher-weights", weights)
        assert code == 2 and "refused" in err and "only weights are read" in err, err
        assert not marker.exists()
    # a resume state is read with weights_only too
    out = tmp_path / "r.safetensors"
    torch.save({"model": {}, "payload": _Touch(marker)}, out.with_suffix(".resume.pt"))
    code, err = _cli(capsys, *train, "--out", out, "--resume")
    assert code == 2 and "resume state is not readable" in err, err
    assert not marker.exists()
    assert not list(tmp_path.glob("*.tif")) and not list(tmp_path.glob("?.safetensors"))


def test_jobs_and_the_registry_refuse_pickles(tmp_path, bijie_pair):
    """A pickle given to a prediction job, or registered in the model registry and used as a training
    base, fails the job with the refusal; nothing is unpickled and nothing is registered."""
    from engine import api
    from engine.io.masks import read_mask
    from engine.io.raster import describe
    from engine.io.writers import write_raster
    from engine.jobs import HANDLERS
    from engine.jobs_worker import execute_job

    marker = tmp_path / "pwned"
    with api.open_workspace(tmp_path / "ws") as ws:
        evil = _evil(ws.root / "models", "evil.pt", marker)
        scene = api.import_scene(ws, bijie_pair[0]).scene
        truth = read_mask(bijie_pair[1])
        ws.save_mask_version(
            scene.id, lambda p: write_raster(p, (truth > 0).astype("uint8"), describe(scene.path)),
            parent_id=None, source="correction", author="ana",
        )  # fmt: skip
        registered = ws.add_model("evil", "segformer_b0", {}, evil)
        jobs = [
            api.submit_prediction(ws, scene.id, str(evil)),
            api.submit_prediction(ws, scene.id, f"segformer_b0,{evil}"),
            api.submit_training(ws, [scene.id], base=str(registered.id), val_scene_ids=[scene.id]),
            api.submit_training(ws, [scene.id], base=str(evil), val_scene_ids=[scene.id]),
        ]
        for job in jobs:
            execute_job(ws.root, job.id, HANDLERS)
            done = ws.get_job(job.id)
            assert done.status == "failed" and "pickle-based checkpoint" in done.error, done.error
            assert not marker.exists()
        assert ws.list_predictions(scene.id) == [] and [m.name for m in ws.list_models()] == ["evil"]
