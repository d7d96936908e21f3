"""Landslide polygons from masks: regions, pixel counts, areas, probability and slope statistics, GeoJSON."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from engine.io.raster import describe
from engine.io.vector import landslide_polygons, to_geojson
from engine.io.writers import write_raster


def _blobs(height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[10:30, 20:50] = 1  # 600 px
    mask[60:70, 5:15] = 1  # 100 px, with a hole of 4
    mask[64:66, 9:11] = 0
    mask[90, 90] = 1  # a single pixel: below min_pixels
    mask[40, 60] = mask[41, 61] = 1  # corner-touching pair: two 1-pixel regions, both dropped
    return mask


def test_two_blobs_in_pixel_space(tmp_path: Path) -> None:
    path = tmp_path / "mask.png"
    Image.fromarray(_blobs(100, 120) * 255).save(path)
    slides = landslide_polygons(path)
    assert [s.pixels for s in slides] == [600, 96]
    assert [s.id for s in slides] == [1, 2]
    assert all(s.area_m2 is None and s.mean_probability is None for s in slides)
    assert slides[1].polygon.area == 96 and len(slides[1].polygon.interiors) == 1
    assert slides[0].polygon.bounds == (20, 10, 50, 30)  # x = column, y = row
    assert len(landslide_polygons(path, min_pixels=1)) == 5


def test_iburi_area_probability_and_slope(tmp_path: Path, iburi_post: Path, data_dir: Path) -> None:
    d = describe(iburi_post)
    mask = np.zeros((d.height, d.width), dtype=np.uint8)
    mask[100:160, 200:300] = 1  # 6000 px
    mask[500:540, 1000:1050] = 1  # 2000 px
    mask_path = write_raster(tmp_path / "mask.tif", mask, d)
    prob = np.full((d.height, d.width), 0.05, dtype=np.float32)
    prob[100:160, 200:300] = 0.6
    prob[120, 250] = 0.97
    prob[500:540, 1000:1050] = 0.8
    prob[510, 1010] = np.nan  # an invalid pixel is left out, not averaged in
    prob_path = write_raster(tmp_path / "prob.tif", prob, d)
    slope_path = data_dir / "iburi_s2" / "slope.tif"
    slides = landslide_polygons(mask_path, probability_path=prob_path, slope_path=slope_path)

    assert [s.pixels for s in slides] == [6000, 2000]
    pixel_area = d.pixel_size_m[0] * d.pixel_size_m[1]
    for s in slides:
        assert s.area_m2 == pytest.approx(s.pixels * pixel_area, rel=0.03)
    assert slides[0].mean_probability == pytest.approx((5999 * 0.6 + 0.97) / 6000, abs=1e-4)
    assert slides[0].max_probability == pytest.approx(0.97, abs=1e-6)
    assert slides[1].mean_probability == pytest.approx(0.8, abs=1e-6)
    assert slides[1].max_probability == pytest.approx(0.8, abs=1e-6)
    with rasterio.open(slope_path) as ds:
        values = ds.read(1)
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    for s in slides:
        assert s.mean_slope is not None and low <= s.mean_slope <= high

    collection = to_geojson(slides, d)
    assert collection["type"] == "FeatureCollection" and collection["scarp_crs"] == "EPSG:4326"
    west, south, east, north = d.lonlat_bounds
    for feature in collection["features"]:
        points = np.array([p for ring in feature["geometry"]["coordinates"] for p in ring])
        assert (points[:, 0] >= west).all() and (points[:, 0] <= east).all()
        assert (points[:, 1] >= south).all() and (points[:, 1] <= north).all()
    assert collection["features"][0]["properties"]["max_probability"] == 0.97


def test_decimated_vectorisation_keeps_counts_close(tmp_path: Path, iburi_post: Path) -> None:
    d = describe(iburi_post)
    mask = np.zeros((d.height, d.width), dtype=np.uint8)
    mask[100:160, 200:300] = 1
    mask_path = write_raster(tmp_path / "mask.tif", mask, d)
    slides = landslide_polygons(mask_path, max_pixels=d.pixels // 4)  # factor 2
    assert len(slides) == 1 and slides[0].pixels == pytest.approx(6000, rel=0.1)
    assert slides[0].area_m2 == pytest.approx(6000 * d.pixel_size_m[0] * d.pixel_size_m[1], rel=0.1)


def test_bijie_pixel_geojson(bijie_pair: tuple[Path, Path]) -> None:
    image, mask = bijie_pair
    d = describe(image)
    slides = landslide_polygons(mask)
    assert slides, "the Bijie sample has a landslide"
    collection = to_geojson(slides, d)
    assert collection["scarp_crs"] == "pixel"
    for feature in collection["features"]:
        points = np.array([p for ring in feature["geometry"]["coordinates"] for p in ring])
        assert (points[:, 0] >= 0).all() and (points[:, 0] <= d.width).all()
        assert (points[:, 1] <= 0).all() and (points[:, 1] >= -d.height).all()
