"""Pseudo-label rounds on the real Landslide4Sense patches: selection, fine-tuning, registration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import api
from engine.training.config import TrainConfig
from engine.training.datasets import UnlabeledPool
from engine.training.method import IGNORE
from engine.training.pseudo_label import pseudo_labels
from engine.training.train import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def l4s_teacher(data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "l4s_teacher.safetensors"
    config = TrainConfig(
        model="kda_student", in_channels=14, epochs=1, batch_size=4, size=64, precision="fp32"
    )
    train(config, data_dir / "landslide4sense" / "train", out)
    return out


@pytest.mark.parametrize(
    ("mode", "expected"), [("top_percent", 0.3), ("threshold", None), ("mc_dropout", None)]
)
def test_each_mode_labels_the_pool(l4s_teacher, data_dir, mode, expected):
    pool = UnlabeledPool.from_folder(data_dir / "landslide4sense" / "unlabeled" / "img")
    labels, selected = pseudo_labels(l4s_teacher, pool, mode, threshold=0.7, percent=30.0)
    assert set(labels) == set(pool.keys) and len(labels) == 14
    for mask in labels.values():
        assert mask.shape == (128, 128) and set(np.unique(mask)) <= {0, 1, IGNORE}
    if expected is not None:
        assert selected == pytest.approx(expected, abs=1e-4)
    if mode == "mc_dropout":  # 90 % of background and 70 % of landslide pixels are kept
        assert 0.69 <= selected <= 0.91


def test_human_corrections_override_pseudo_labels(l4s_teacher, data_dir):
    pool = UnlabeledPool.from_folder(data_dir / "landslide4sense" / "unlabeled" / "img")
    key = pool.keys[0]
    human = np.full((128, 128), IGNORE, np.uint8)
    human[:40, :40] = 1  # the reviewer marked a landslide here
    human[100:, 100:] = 0  # and cleared this corner
    labels, _ = pseudo_labels(l4s_teacher, pool, "threshold", 0.99, 50.0, human={key: human})
    assert (labels[key][:40, :40] == 1).all() and (labels[key][100:, 100:] == 0).all()
    plain, _ = pseudo_labels(l4s_teacher, pool, "threshold", 0.99, 50.0)
    untouched = human == IGNORE
    np.testing.assert_array_equal(labels[key][untouched], plain[key][untouched])


def test_rounds_chain_and_register_in_the_workspace(l4s_teacher, data_dir, tmp_path):
    l4s = data_dir / "landslide4sense"
    ws = tmp_path / "ws"
    args = ["pseudo-label", "--model", str(l4s_teacher), "--labeled", str(l4s / "train"),
            "--unlabeled", str(l4s / "unlabeled" / "img"), "--mode", "threshold", "--rounds", "2",
            "--epochs", "1", "--batch", "4", "--size", "64", "--precision", "fp32",
            "--out", str(tmp_path / "rounds"), "--workspace", str(ws)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "round 1:" in result.stdout and "round 2:" in result.stdout
    with api.open_workspace(ws) as workspace:
        models = workspace.list_models()
    assert [m.name for m in models] == ["l4s_teacher", "l4s_teacher-pl1", "l4s_teacher-pl2"]
    assert models[1].parent_id == models[0].id and models[2].parent_id == models[1].id
    first, second = models[1].training_snapshot, models[2].training_snapshot
    assert (first["round"], second["round"]) == (1, 2) and first["mode"] == "threshold"
    assert second["threshold"] > first["threshold"] == 0.7  # rounds refine progressively
    assert "miou" in models[2].metrics
    assert (tmp_path / "rounds" / "round_2.safetensors").is_file()
