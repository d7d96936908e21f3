"""Map overlays: downsampled PNGs with transparency where there is nothing to show, and their bounds."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.display import legend_html, probability_overlay, scene_overlay, single_band_overlay
from engine.io.raster import describe
from engine.io.writers import write_raster


def _rgba(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.mode == "RGBA"
    return np.asarray(image)


def test_iburi_scene_overlay(iburi_post: Path) -> None:
    d = describe(iburi_post)
    overlay = scene_overlay(iburi_post, max_side=400)
    pixels = _rgba(overlay.png)
    assert max(pixels.shape[:2]) <= 400 and (overlay.height, overlay.width) == pixels.shape[:2]
    assert overlay.crs == "EPSG:4326" and overlay.data_url.startswith("data:image/png;base64,")
    (south, west), (north, east) = overlay.bounds
    lon0, lat0, lon1, lat1 = d.lonlat_bounds
    assert (west, south, east, north) == pytest.approx((lon0, lat0, lon1, lat1), abs=1e-6)
    assert (pixels[..., 3] == 255).mean() > 0.5  # mostly image
    assert pixels[..., :3].std() > 10  # stretched, not flat


def test_nodata_is_transparent(tmp_path: Path, iburi_post: Path) -> None:
    d = describe(iburi_post)
    data = np.full((3, d.height, d.width), 1000, dtype=np.uint16)
    data[:, :, : d.width // 2] = 0  # the left half is nodata (the scene's nodata is 0)
    data[0, : d.height // 2, d.width // 2 :] = 3000
    path = write_raster(tmp_path / "half.tif", data, d, nodata=0)
    pixels = _rgba(scene_overlay(path, max_side=256).png)
    _, w = pixels.shape[:2]
    assert (pixels[:, : w // 2 - 2, 3] == 0).all()
    assert (pixels[2:-2, w // 2 + 2 : -2, 3] == 255).all()


def test_probability_overlay_floor_and_legend(tmp_path: Path, iburi_post: Path) -> None:
    d = describe(iburi_post)
    prob = np.tile(np.linspace(0, 1, d.width, dtype=np.float32), (d.height, 1))
    prob[:10] = np.nan
    path = write_raster(tmp_path / "prob.tif", prob, d)
    pixels = _rgba(probability_overlay(path, floor=0.3, max_side=300).png)
    assert max(pixels.shape[:2]) <= 300
    h, w = pixels.shape[:2]
    middle = pixels[h // 2]
    assert (middle[: int(w * 0.25), 3] == 0).all()  # below the floor
    assert (middle[int(w * 0.35) : -3, 3] == 255).all()
    assert (pixels[0, :, 3] == 0).all()  # NaN rows at the top
    assert middle[-3, 0] < middle[int(w * 0.4), 0] or middle[-3, 1] < middle[int(w * 0.4), 1]  # darker red
    legend = legend_html(0.3)
    assert "scarp-legend" in legend and "linear-gradient" in legend and "0.3" in legend


def test_pixel_scene_and_terrain_overlays(bijie_pair: tuple[Path, Path], data_dir: Path) -> None:
    image, _ = bijie_pair
    d = describe(image)
    overlay = scene_overlay(image, max_side=64)
    assert overlay.crs == "pixel"
    assert overlay.bounds == ((-d.height, 0), (0, d.width))
    assert max(_rgba(overlay.png).shape[:2]) <= 64
    slope = single_band_overlay(data_dir / "iburi_s2" / "slope.tif", "slope", max_side=128)
    hill = single_band_overlay(data_dir / "iburi_s2" / "hillshade.tif", "gray", max_side=128)
    assert slope.crs == hill.crs == "EPSG:4326"
    assert max(_rgba(slope.png).shape[:2]) <= 128
    with pytest.raises(ValueError, match="colour map"):
        single_band_overlay(image, "viridis")
