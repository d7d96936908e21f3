"""The training loop on real Bijie tiles, small: it runs, learns, stops early and resumes after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine.models.checkpoint import load_model
from engine.training.config import TrainConfig
from engine.training.train import train

ROOT = Path(__file__).resolve().parents[1]


def small_config(**changes) -> TrainConfig:
    base = {"model": "kda_student", "epochs": 2, "batch_size": 4, "size": 64, "precision": "fp32", "seed": 3}
    return TrainConfig(**{**base, **changes})


def test_supervised_training_writes_best_checkpoint(tiny_bijie, tmp_path):
    events = []
    result = train(small_config(), tiny_bijie, tmp_path / "kda.safetensors", progress=events.append)
    assert result.epochs_run == 2 and 1 <= result.best_epoch <= 2
    _, card = load_model(result.checkpoint)
    assert card.architecture == "kda_student" and len(card.mean) == 3
    assert card.provenance["config"]["model"] == "kda_student" and card.provenance["split"] == "val"
    assert card.metrics["miou"] == pytest.approx(result.best_miou)
    # per-step progress with an ETA, and one event per epoch carrying validation metrics
    assert any(e.metrics is None and e.eta_s >= 0 for e in events)
    assert [e.epoch for e in events if e.metrics is not None] == [1, 2]


def test_loss_falls_when_overfitting_a_handful(tiny_bijie, tmp_path):
    config = small_config(
        model="unet_r34", epochs=12, lr=1e-3, lr_end=1e-3, scale=(1.0, 1.0), colour_jitter=False
    )
    result = train(config, tiny_bijie, tmp_path / "u.safetensors")
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < 0.7 * losses[0], losses


def test_early_stopping_on_validation_miou(tiny_bijie, tmp_path, monkeypatch):
    """Validation mIoU rises for two epochs, then never again: patience 2 stops after epoch 4."""
    from engine.metrics import ConfusionMatrix
    from engine.training import loop

    scores = iter([(5, 5), (6, 4), (6, 4), (5, 5), (6, 4), (6, 4)])

    def fake_evaluate(*args):
        tp, fn = next(scores)
        return ConfusionMatrix.from_counts(tp=tp, fp=0, fn=fn, tn=90)

    monkeypatch.setattr(loop, "evaluate", fake_evaluate)
    config = small_config(model="segformer_b0", epochs=6, patience=2)
    result = train(config, tiny_bijie, tmp_path / "s.safetensors")
    assert result.epochs_run == 4 and result.best_epoch == 2


def test_mrife_trains_through_the_same_loop(tiny_bijie, tmp_path):
    config = small_config(model="mrife", options={"backbone": "resnet34"}, epochs=1, batch_size=2)
    result = train(config, tiny_bijie, tmp_path / "m.safetensors")
    assert {"loss", "rec", "cons", "ce"} <= set(result.history[0])


def _cli_train(out: Path, data: Path, *extra: str) -> subprocess.Popen:
    args = ["train", "--model", "segformer_b0", "--data", str(data), "--out", str(out), "--epochs", "3",
            "--batch", "2", "--size", "64", "--precision", "fp32", "--seed", "5", *extra]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "engine", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def test_resume_after_sigkill_matches_an_uninterrupted_run(tiny_bijie, tmp_path):
    reference = _cli_train(tmp_path / "ref.safetensors", tiny_bijie)
    assert reference.wait(timeout=600) == 0, reference.stderr.read()

    out = tmp_path / "run.safetensors"
    run = _cli_train(out, tiny_bijie)
    state = out.with_suffix(".resume.pt")
    deadline = time.monotonic() + 300
    while not state.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run.poll() is None, "training finished before it could be killed"
    os.kill(run.pid, signal.SIGKILL)  # during epoch 2
    run.wait()
    assert torch.load(state, weights_only=True)["state"]["epochs_done"] == 1

    resumed = _cli_train(out, tiny_bijie, "--resume")
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert "resumed after epoch 1" in err
    assert "train epoch 1/3" not in err  # epoch 1 is not repeated
    a, _ = load_model(tmp_path / "ref.safetensors")
    b, _ = load_model(out)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.allclose(x.float(), y.float(), atol=1e-6), name


def test_kd_and_kda_distillation_precede_the_supervised_phase(tiny_bijie, tmp_path):
    teacher = train(small_config(epochs=1), tiny_bijie, tmp_path / "teacher.safetensors").checkpoint
    for mode in ("kd", "kda"):
        config = small_config(epochs=1, distill=mode, distill_epochs=1, teacher=str(teacher))
        result = train(config, tiny_bijie, tmp_path / f"{mode}.safetensors")
        assert [r["phase"] for r in result.history] == ["distill", "train"]
        assert "kl" in result.history[0] and ("adv" in result.history[0]) == (mode == "kda")


def test_evaluate_a_checkpoint_from_the_cli(tiny_bijie, tmp_path):
    result = train(small_config(epochs=1), tiny_bijie, tmp_path / "e.safetensors")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for extra in (
        ["--data", str(tiny_bijie)],
        ["--images", str(tiny_bijie / "images"), "--masks", str(tiny_bijie / "masks")],
    ):
        command = [
            sys.executable,
            "-m",
            "engine",
            "evaluate",
            "--model",
            str(result.checkpoint),
            "--precision",
            "fp32",
        ]
        command += extra
        out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        metrics = json.loads(out.stdout)
        if "--data" in extra:  # the validation split, scored exactly as training scored it
            assert metrics["images"] == 4 and metrics["miou"] == pytest.approx(result.best_miou, abs=1e-6)
        else:
            assert metrics["images"] == 14
    out = subprocess.run([*command, "--tta"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout)
    assert metrics["tta"] is True and metrics["images"] == 14 and 0.0 <= metrics["miou"] <= 1.0


def test_a_non_finite_loss_skips_the_update():
    from engine.models import build_model
    from engine.training.supervised import SupervisedMethod, with_paper_defaults

    model = build_model("segformer_b0")
    config = with_paper_defaults(small_config(model="segformer_b0"))
    method = SupervisedMethod(model, config, torch.device("cpu"), torch.float32, 4)
    before = [p.detach().clone() for p in model.parameters()]
    loss = sum(p.sum() for p in model.parameters()) * float("nan")
    assert method.step(loss, "model", model.parameters()) is False
    assert method.skipped_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
