"""Tiled prediction end to end on real scenes with random-weight models."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from engine.errors import InputError
from engine.inference import Member, PredictOptions, predict_scene, prepare, resolve_models
from engine.io.masks import read_mask
from engine.io.raster import describe, open_scene


def _read(path) -> np.ndarray:
    with open_scene(path) as scene:
        return scene.read()[0]


def _members(name: str, channels: int = 3, seed: int = 0) -> list[Member]:
    torch.manual_seed(seed)
    return resolve_models(name, channels)


def test_predict_iburi_geotiff_keeps_georeferencing(tmp_path, iburi_post):
    d = describe(iburi_post)
    options = PredictOptions(tile=256, overlap=32, batch=4, precision="fp32")
    calls = []
    summary = predict_scene(
        _members("segformer_b0"),
        iburi_post,
        tmp_path / "mask.tif",
        tmp_path / "prob.tif",
        options,
        lambda done, total: calls.append((done, total)),
    )
    assert summary.tiles == 35 and calls[-1] == (35, 35)  # 5 rows × 7 columns of 256 px tiles
    for name, dtype in (("mask.tif", "uint8"), ("prob.tif", "float32")):
        with rasterio.open(tmp_path / name) as ds:
            assert (ds.width, ds.height, ds.dtypes[0]) == (d.width, d.height, dtype)
            assert ds.crs.to_string() == "EPSG:4326" and ds.transform == d.affine
    with rasterio.open(tmp_path / "prob.tif") as ds:
        prob = ds.read(1)
    mask = read_mask(tmp_path / "mask.tif", like=d)
    valid = np.isfinite(prob)
    assert valid.mean() > 0.95  # Iburi has a little nodata at its edge, no more
    np.testing.assert_array_equal(mask[valid], (prob[valid] >= 0.5).astype(np.uint8))
    assert (mask[~valid] == 0).all()


def test_predict_bijie_png(tmp_path, bijie_pair):
    d = describe(bijie_pair[0])
    summary = predict_scene(_members("unet_r34"), bijie_pair[0], tmp_path / "m.tif")
    assert summary.tiles == 1  # a small image runs as one tile
    assert read_mask(tmp_path / "m.tif", like=d).shape == (d.height, d.width)
    assert describe(tmp_path / "m.tif").crs is None


def test_tiled_equals_one_tile_where_tiles_do_not_overlap_edges(tmp_path, cas_tile):
    """Stitching must not distort: with full overlap blending, tiling a 512² scene gives a sane mask."""
    members = _members("segformer_b0")
    predict_scene(members, cas_tile, tmp_path / "one.tif", tmp_path / "p1.tif", PredictOptions(tile=512))
    predict_scene(
        members, cas_tile, tmp_path / "tiled.tif", tmp_path / "p2.tif", PredictOptions(tile=256, overlap=96)
    )
    one, tiled = _read(tmp_path / "p1.tif"), _read(tmp_path / "p2.tif")
    # the centre of the scene is seen with full context both ways; probabilities stay close
    assert np.abs(one - tiled).mean() < 0.1


def test_batched_bf16_agrees_with_fp32_batch_one(tmp_path, iburi_post):
    """Thresholded at the median fp32 probability, half the pixels sit on each side: a fair test."""
    members = _members("kda_student")
    reference = PredictOptions(precision="fp32", batch=1)
    predict_scene(members, iburi_post, tmp_path / "fp32.tif", tmp_path / "p.tif", reference)
    median = float(np.nanmedian(_read(tmp_path / "p.tif")))
    masks = {}
    for precision, batch in (("fp32", 1), ("bf16", 4)):
        options = PredictOptions(precision=precision, batch=batch, threshold=median)
        predict_scene(members, iburi_post, tmp_path / f"{precision}.tif", options=options)
        masks[precision] = read_mask(tmp_path / f"{precision}.tif")
    assert 0.4 < masks["fp32"].mean() < 0.6
    agreement = (masks["fp32"] == masks["bf16"]).mean()
    assert agreement >= 0.99, agreement


def test_stitched_result_does_not_depend_on_the_batch_size(tmp_path, iburi_post):
    members = _members("segformer_b0")
    probabilities = {}
    for batch in (1, 3, 8):  # 3 leaves a short last batch; 8 is more than a row of tiles
        options = PredictOptions(tile=256, overlap=48, batch=batch, precision="fp32", prefetch=1)
        predict_scene(members, iburi_post, tmp_path / f"m{batch}.tif", tmp_path / f"p{batch}.tif", options)
        probabilities[batch] = _read(tmp_path / f"p{batch}.tif")
    for batch in (3, 8):
        np.testing.assert_allclose(probabilities[batch], probabilities[1], atol=1e-5, equal_nan=True)
        decided = np.abs(probabilities[1] - 0.5) > 1e-4
        np.testing.assert_array_equal(
            read_mask(tmp_path / f"m{batch}.tif")[decided], read_mask(tmp_path / "m1.tif")[decided]
        )


def test_naive_baseline_computes_the_same_map(tmp_path, iburi_post):
    """The benchmark's naive way (whole scene in memory, one fp32 tile at a time) is the same map."""
    from engine.bench_infer_run import naive_predict

    (member,) = _members("segformer_b0")
    options = PredictOptions(precision="fp32", batch=4)
    predict_scene([member], iburi_post, tmp_path / "ours.tif", tmp_path / "ours_p.tif", options)
    with open_scene(iburi_post) as scene:
        prepare(member, scene)
    tiles = naive_predict(member, iburi_post, tmp_path / "naive.tif", tmp_path / "naive_p.tif")
    assert tiles == 12  # 3 rows × 4 columns of 512 px tiles with 64 px overlap
    np.testing.assert_allclose(_read(tmp_path / "naive_p.tif"), _read(tmp_path / "ours_p.tif"), atol=1e-4)


def test_a_read_error_in_the_reader_thread_reaches_the_caller(tmp_path, iburi_post, monkeypatch):
    from engine.io.scene import Scene

    def broken(self, window=None, bands=None):
        raise InputError(self.descriptor.path, "cannot read pixels (file damaged?)")

    monkeypatch.setattr(Scene, "read_float", broken)
    with pytest.raises(InputError, match="file damaged"):
        predict_scene(_members("segformer_b0"), iburi_post, tmp_path / "m.tif", tmp_path / "p.tif")
    assert not (tmp_path / "m.tif").exists() and not (tmp_path / "p.tif").exists()


def test_tta_and_ensemble(tmp_path, bijie_pair):
    image = bijie_pair[0]
    members = _members("segformer_b0") + _members("unet_r34", seed=1)
    summary = predict_scene(
        members, image, tmp_path / "e.tif", tmp_path / "e_p.tif", PredictOptions(tta=True)
    )
    assert len(summary.models) == 2
    singles = []
    for i, member in enumerate(members):
        predict_scene(
            [member], image, tmp_path / f"s{i}.tif", tmp_path / f"s{i}_p.tif", PredictOptions(tta=True)
        )
        singles.append(_read(tmp_path / f"s{i}_p.tif"))
    np.testing.assert_allclose(_read(tmp_path / "e_p.tif"), (singles[0] + singles[1]) / 2, atol=1e-5)


def test_multispectral_scene_and_band_mismatch(tmp_path, l4s_image, iburi_post):
    predict_scene(_members("segformer_b0", 14), l4s_image, tmp_path / "l4s.tif")
    # an RGB model sees a 14-band scene in true colour (B4, B3, B2)
    predict_scene(_members("segformer_b0", 3), l4s_image, tmp_path / "l4s_rgb.tif")
    with pytest.raises(InputError, match=r"has 3 bands but model .* expects 14"):
        predict_scene(_members("segformer_b0", 14), iburi_post, tmp_path / "x.tif")
    assert not (tmp_path / "x.tif").exists()


def test_unknown_model_spec():
    with pytest.raises(InputError, match="neither a checkpoint file"):
        resolve_models("best_model_ever", 3)


BUDGET_CHILD = """
import json, resource, sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.bench_infer_run import naive_predict
from engine.inference import Member, PredictOptions, predict_scene
from engine.models.checkpoint import ModelCard

scene, out, budget, mode = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) * 2**20, sys.argv[4]
card = ModelCard(architecture="tiny", in_channels=3, mean=(0.0,) * 3, std=(1000.0,) * 3)
member = Member("1x1 convolution", nn.Conv2d(3, 2, 1).eval(), card)
member.bands, member.mean, member.std = (0, 1, 2), np.zeros(3, np.float32), np.full(3, 1000, np.float32)
# The budget counts from here: Python, torch and GDAL themselves are not the scene's.
status = Path("/proc/self/status").read_text().split("VmData:")[1]
data = int(status.split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_DATA, (data + budget, data + budget))
try:
    if mode == "naive":
        naive_predict(member, scene, out / "mask.tif", out / "prob.tif")
    else:
        predict_scene([member], scene, out / "mask.tif", out / "prob.tif", PredictOptions(precision="fp32"))
except MemoryError:
    print(json.dumps({"memory_error": True}))
else:
    print(json.dumps({"memory_error": False}))
"""


def test_a_scene_larger_than_the_memory_budget_is_processed(tmp_path, iburi_post):
    """Under a hard 450 MB data limit, an 8192² scene (805 MB as float32) is mapped; the naive way fails."""
    import json
    import subprocess
    import sys

    from engine.bench_infer import build_mosaic

    scene = build_mosaic(iburi_post, tmp_path / "mosaic.tif", 8192)
    results = {}
    for mode in ("ours", "naive"):
        out = tmp_path / mode
        out.mkdir()
        done = subprocess.run(
            [sys.executable, "-c", BUDGET_CHILD, str(scene), str(out), "450", mode],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        results[mode] = json.loads(done.stdout.strip().splitlines()[-1])["memory_error"]
    assert results == {"ours": False, "naive": True}  # the budget binds, and ours stays inside it
    d = describe(scene)
    with rasterio.open(tmp_path / "ours" / "mask.tif") as ds:
        assert (ds.width, ds.height) == (d.width, d.height) == (8192, 8192)
        assert ds.read(1, window=((4000, 4100), (4000, 4100))).shape == (100, 100)


def test_flip_tta_averages_the_four_flips_back_in_place():
    from engine.inference import landslide_probability

    class LeftHalf(torch.nn.Module):  # landslide wherever the input's column is in the left half
        def forward(self, x):
            left = (torch.arange(x.shape[3]) < x.shape[3] // 2).float().expand(x.shape[0], *x.shape[2:])
            return torch.stack([10.0 * (1 - left), 10.0 * left], dim=1)

    x = torch.rand(1, 3, 8, 8)
    plain = landslide_probability(LeftHalf(), x, torch.device("cpu"), torch.float32, tta=False)
    assert plain[0, :, :4].min() > 0.99 and plain[0, :, 4:].max() < 0.01
    averaged = landslide_probability(LeftHalf(), x, torch.device("cpu"), torch.float32, tta=True)
    torch.testing.assert_close(averaged, torch.full_like(averaged, 0.5), atol=0.01, rtol=0)  # 2 of 4 flips
