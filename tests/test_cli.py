"""The CLI end to end in a subprocess, as a user runs it: output, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, workspace: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if workspace is not None:
        env["SCARP_WORKSPACE"] = str(workspace)
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


def test_info_prints_descriptor_json(iburi_post):
    result = cli("info", str(iburi_post))
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["crs"] == "EPSG:4326" and (info["width"], info["height"], info["count"]) == (1533, 970, 3)


def test_expected_errors_exit_2_with_one_line(tmp_path):
    (tmp_path / "notes.tif").write_text("not an image")
    for args in (["info", str(tmp_path / "missing.tif")], ["info", str(tmp_path / "notes.tif")]):
        result = cli(*args)
        assert result.returncode == 2
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr


def test_import_and_list_scenes(tmp_path, iburi_post, bijie_pair, l4s_image):
    ws = tmp_path / "ws"
    first = cli("import", str(iburi_post), "--workspace", str(ws))
    assert first.returncode == 0, first.stderr
    assert "imported: scene 1" in first.stdout
    again = cli("import", str(iburi_post), "--workspace", str(ws))
    assert "already in the workspace: scene 1" in again.stdout
    with_mask = cli("import", str(bijie_pair[0]), "--mask", str(bijie_pair[1]), workspace=ws)
    assert with_mask.returncode == 0 and "mask version" in with_mask.stdout, with_mask.stderr
    l4s_mask = l4s_image.parent.parent / "mask" / "mask_1.h5"
    l4s = cli("import", str(l4s_image), "--mask", str(l4s_mask), workspace=ws)
    assert "mask version" in l4s.stdout, l4s.stderr
    listing = cli("scenes", "--json", workspace=ws)
    rows = json.loads(listing.stdout)
    assert [r["name"] for r in rows] == [iburi_post.name, bijie_pair[0].name, l4s_image.name]
    assert all(Path(r["path"]).is_relative_to(ws) for r in rows)  # imported copies, not the originals
    table = cli("scenes", workspace=ws)
    assert "1533×970 px, 3 bands, uint16, EPSG:4326" in table.stdout


def test_import_folder_reports_bad_files_and_keeps_going(tmp_path, data_dir):
    folder = tmp_path / "drop"
    folder.mkdir()
    for name in ("ls_0000.png", "ls_0001.png"):
        (folder / name).write_bytes((data_dir / "bijie" / "images" / name).read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    result = cli("import", str(folder), workspace=tmp_path / "ws")
    assert result.returncode == 2
    assert result.stdout.count("imported: scene") == 2
    assert "skipped:" in result.stderr and "broken.png" in result.stderr and "Traceback" not in result.stderr
    assert len(json.loads(cli("scenes", "--json", workspace=tmp_path / "ws").stdout)) == 2


def test_import_mask_mismatch_leaves_no_scene(tmp_path, bijie_pair, data_dir):
    ws = tmp_path / "ws"
    other = data_dir / "bijie" / "masks" / "ls_0001.png"
    result = cli("import", str(bijie_pair[0]), "--mask", str(other), workspace=ws)
    assert result.returncode == 2 and "mask is" in result.stderr
    assert json.loads(cli("scenes", "--json", workspace=ws).stdout) == []


def test_evaluate_files_and_folders(tmp_path, data_dir):
    truth = tmp_path / "truth"
    pred = tmp_path / "pred"
    truth.mkdir()
    pred.mkdir()
    expected_tp = expected_fp = expected_fn = 0
    for name in ("ls_0000", "ls_0001", "nls_0000"):
        mask = np.asarray(Image.open(data_dir / "bijie" / "masks" / f"{name}.png")) // 255
        Image.fromarray((mask * 255).astype(np.uint8)).save(truth / f"{name}.png")
        guess = np.roll(mask, 5, axis=1)  # a shifted prediction: some hits, some misses
        Image.fromarray(guess.astype(np.uint8)).save(pred / f"{name}.tif")
        expected_tp += int(((guess == 1) & (mask == 1)).sum())
        expected_fp += int(((guess == 1) & (mask == 0)).sum())
        expected_fn += int(((guess == 0) & (mask == 1)).sum())
    result = cli("evaluate", "--pred", str(pred), "--truth", str(truth))
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["images"] == 3
    assert (metrics["tp"], metrics["fp"], metrics["fn"]) == (expected_tp, expected_fp, expected_fn)
    assert metrics["iou"] == pytest.approx(expected_tp / (expected_tp + expected_fp + expected_fn))
    single = cli("evaluate", "--pred", str(truth / "ls_0000.png"), "--truth", str(truth / "ls_0000.png"))
    assert json.loads(single.stdout)["miou"] == 1.0
    (pred / "ls_0001.tif").unlink()
    missing = cli("evaluate", "--pred", str(pred), "--truth", str(truth))
    assert missing.returncode == 2 and "no prediction for 1 of 3 true masks: ls_0001" in missing.stderr


def test_predict_end_to_end_with_random_weights(tmp_path, iburi_post, bijie_pair):
    result = cli(
        "predict", "--model", "kda_student", "--in", str(iburi_post), "--out", str(tmp_path / "m.tif"),
        "--probabilities", str(tmp_path / "p.tif"), "--tile", "384", "--overlap", "32",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "kda_student (random weights)" in result.stdout and "predict: 15/15" in result.stderr
    info = json.loads(cli("info", str(tmp_path / "m.tif")).stdout)
    assert (info["width"], info["height"], info["crs"], info["count"]) == (1533, 970, "EPSG:4326", 1)
    png = cli(
        "predict",
        "--model",
        "unet_r34,segformer_b0",
        "--in",
        str(bijie_pair[0]),
        "--out",
        str(tmp_path / "b.tif"),
    )
    assert png.returncode == 0, png.stderr
    assert json.loads(cli("info", str(tmp_path / "b.tif")).stdout)["width"] == 121


def test_predict_refuses_pickles_and_bad_options(tmp_path, bijie_pair):
    (tmp_path / "model.pth").write_bytes(b"\x80\x04K\x01.")
    bad = cli(
        "predict",
        "--model",
        str(tmp_path / "model.pth"),
        "--in",
        str(bijie_pair[0]),
        "--out",
        str(tmp_path / "x.tif"),
    )
    assert bad.returncode == 2 and "pickle-based checkpoint" in bad.stderr and "Traceback" not in bad.stderr
    overlap = cli(
        "predict", "--model", "unet_r34", "--in", str(bijie_pair[0]), "--out", "x.tif", "--overlap", "600"
    )
    assert overlap.returncode == 2 and "--overlap" in overlap.stderr
    assert not (tmp_path / "x.tif").exists()


def test_models_lists_the_registry(tmp_path):
    result = cli("models", workspace=tmp_path / "ws")
    assert result.returncode == 0, result.stderr
    for name in ("kda_student", "emr_hrnet", "mrife", "unet_r34", "deeplabv3plus_r101", "segformer_b0"):
        assert name in result.stdout
