"""Export on real scenes: COG mask, GeoPackage / GeoJSON / CSV inventories, the PNG map, facade and CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import rasterio
import shapely
from PIL import Image

from engine.api._core import import_scene
from engine.api._export import export_scene, export_scene_bytes
from engine.errors import InputError
from engine.export import FIELDS, ExportSource, build_inventory, export
from engine.io.raster import describe
from engine.io.writers import write_raster

ROOT = Path(__file__).resolve().parents[1]
# Blobs on the Landsat UTM scene (791 × 718 px): (rows, columns) → pixels, in raster-scan order.
BLOBS = [((slice(100, 140), slice(200, 260)), 2400), ((slice(300, 320), slice(300, 310)), 200)]
HOLED = (slice(500, 530), slice(400, 430))  # 900 px less a 10 × 10 hole: 800 px


def _blob_mask(height: int, width: int, holed: bool = True) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    for window, _ in BLOBS:
        mask[window] = 1
    if holed:
        mask[HOLED] = 1
        mask[510:520, 410:420] = 0
    return mask


def read_layer(path: Path) -> tuple[dict, list, dict[str, np.ndarray]]:
    meta, _, wkb, columns = pyogrio.raw.read(path)
    return meta, [shapely.from_wkb(g) for g in wkb], dict(zip(meta["fields"], columns, strict=True))


@pytest.fixture
def utm_scene(ws, landsat_utm: Path):
    """The Landsat scene with a predicted mask (three blobs) and a correction that drops the holed one."""
    d = describe(landsat_utm)
    scene = import_scene(ws, landsat_utm, copy=False).scene
    prob = np.full((d.height, d.width), 0.1, dtype=np.float32)
    prob[BLOBS[0][0]] = 0.7
    prob[120, 230] = 0.95
    prob[BLOBS[1][0]] = 0.6
    prediction = ws.add_prediction(scene.id, "kda_student@test", {}, lambda t: write_raster(t, prob, d))
    predicted = ws.save_mask_version(
        scene.id, lambda t: write_raster(t, _blob_mask(d.height, d.width), d),
        parent_id=None, source="prediction", prediction_id=prediction.id, author="job 1",
    )  # fmt: skip
    corrected = ws.save_mask_version(
        scene.id, lambda t: write_raster(t, _blob_mask(d.height, d.width, holed=False), d),
        parent_id=predicted.id, source="correction", author="ana",
    )  # fmt: skip
    return scene, predicted, corrected, d


def test_gpkg_round_trip_in_utm_with_areas_perimeters_and_provenance(ws, utm_scene, tmp_path: Path) -> None:
    scene, predicted, corrected, d = utm_scene
    path = export_scene(ws, scene.id, "gpkg", tmp_path / "inventory.gpkg")
    info = pyogrio.read_info(path)
    assert info["crs"] == "EPSG:32618" and info["layer_name"] == "landslides"
    assert info["geometry_type"] == "Polygon" and list(info["fields"]) == list(FIELDS)

    _, polygons, attrs = read_layer(path)
    pixel_area = abs(d.affine.a * d.affine.e)
    assert list(attrs["id"]) == [1, 2]
    assert list(attrs["pixels"]) == [n for _, n in BLOBS]
    for polygon, area, (_, pixels) in zip(polygons, attrs["area_m2"], BLOBS, strict=True):
        assert polygon.area == pytest.approx(pixels * pixel_area, rel=0.01)
        assert area == pytest.approx(pixels * pixel_area, rel=0.01)
    expected_perimeter = 2 * (40 * abs(d.affine.e) + 60 * d.affine.a)
    assert attrs["perimeter_m"][0] == pytest.approx(expected_perimeter, rel=0.01)
    assert attrs["mean_probability"][0] == pytest.approx((2399 * 0.7 + 0.95) / 2400, abs=1e-3)
    assert list(attrs["max_probability"]) == pytest.approx([0.95, 0.6])
    assert np.isnan(attrs["mean_slope"]).all()  # no slope layer linked
    assert set(attrs["status"]) == {"corrected"} and set(attrs["reviewer"]) == {"ana"}
    assert set(attrs["model_version"]) == {"kda_student@test"}  # reached through the parent version
    assert set(attrs["mask_version"]) == {corrected.id}
    assert set(attrs["created"]) == {corrected.created.isoformat(timespec="seconds")}
    assert all(value.endswith("+00:00") for value in attrs["exported_at"])

    older = export_scene(ws, scene.id, "gpkg", tmp_path, mask_version_id=predicted.id)
    assert older.name == f"RGB.byte_mask{predicted.id}_landslides.gpkg"
    _, polygons, attrs = read_layer(older)
    assert list(attrs["pixels"]) == [2400, 200, 800]
    assert len(polygons[2].interiors) == 1 and polygons[2].area == pytest.approx(800 * pixel_area)
    assert set(attrs["status"]) == {"predicted"} and set(attrs["reviewer"]) == {None}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_geojson_is_rfc7946_lonlat_and_csv_agrees(ws, utm_scene, tmp_path: Path) -> None:
    scene, _, _, d = utm_scene
    geojson = export_scene(ws, scene.id, ".geojson", tmp_path / "inventory.geojson")
    assert pyogrio.read_info(geojson)["crs"] == "EPSG:4326"
    collection = json.loads(geojson.read_text())
    assert "crs" not in collection  # RFC 7946: WGS 84 lon/lat, no crs member
    west, south, east, north = d.lonlat_bounds
    for feature in collection["features"]:
        points = np.array(feature["geometry"]["coordinates"][0])
        assert (points[:, 0] >= west).all() and (points[:, 0] <= east).all()
        assert (points[:, 1] >= south).all() and (points[:, 1] <= north).all()

    table = export_scene(ws, scene.id, "csv", tmp_path / "inventory.csv")
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    props = [f["properties"] for f in collection["features"]]
    assert [int(r["id"]) for r in rows] == [p["id"] for p in props] == [1, 2]
    assert [float(r["area_m2"]) for r in rows] == [p["area_m2"] for p in props]
    assert rows[0]["mean_slope"] == "" and rows[0]["status"] == "corrected"


def test_iburi_lonlat_scene_keeps_epsg4326_with_slope_and_metric_perimeter(
    ws, iburi_post: Path, data_dir: Path, tmp_path: Path
) -> None:
    d = describe(iburi_post)
    mask = np.zeros((d.height, d.width), dtype=np.uint8)
    mask[100:160, 200:300] = 1
    mask_file = write_raster(tmp_path / "mask.tif", mask, d)
    scene = import_scene(ws, iburi_post, mask=mask_file, copy=False).scene
    slope = import_scene(ws, data_dir / "iburi_s2" / "slope.tif", copy=False).scene
    ws.link_scene(scene.id, "slope", slope.id)

    path = export_scene(ws, scene.id, "gpkg", tmp_path / "iburi.gpkg")
    assert pyogrio.read_info(path)["crs"] == "EPSG:4326"  # the GeoPackage keeps the scene's CRS
    _, _, attrs = read_layer(path)
    px, py = d.pixel_size_m
    assert attrs["area_m2"][0] == pytest.approx(6000 * px * py, rel=0.01)
    assert attrs["perimeter_m"][0] == pytest.approx(2 * (100 * px + 60 * py), rel=0.01)
    with rasterio.open(slope.path) as ds:
        values = ds.read(1)
    assert np.nanmin(values) <= attrs["mean_slope"][0] <= np.nanmax(values)
    assert attrs["status"][0] == "imported" and attrs["model_version"][0] is None


def test_pixel_scene_exports_pixel_geometry_without_crs(bijie_pair, tmp_path: Path) -> None:
    image, mask = bijie_pair
    source = ExportSource(mask, image_path=image, title="ls_0000")
    pixels = int((np.asarray(Image.open(mask)) > 0).sum())
    gpkg, inventory = export(source, tmp_path / "ls.gpkg")
    info = pyogrio.read_info(gpkg)
    assert info["crs"] is None and info["layer_metadata"]["coordinates"] == "pixel"
    assert "pixel coordinates" in info["layer_metadata"]["DESCRIPTION"]
    _, polygons, attrs = read_layer(gpkg)
    assert sum(p.area for p in polygons) == pytest.approx(sum(attrs["pixels"]))
    assert sum(attrs["pixels"]) == pytest.approx(pixels, rel=0.01)  # regions under 4 px are dropped
    assert np.isnan(attrs["area_m2"]).all() and np.isnan(attrs["perimeter_m"]).all()
    assert inventory.totals()["area_m2"] is None
    geojson, _ = export(source, tmp_path / "ls.geojson")
    assert "pixel coordinates" in json.loads(geojson.read_text())["description"]


def test_png_map_is_an_image_with_outlines(ws, utm_scene, bijie_pair, tmp_path: Path) -> None:
    scene, *_ = utm_scene
    for path in (
        export_scene(ws, scene.id, "png", tmp_path / "map.png"),
        export(ExportSource(bijie_pair[1], image_path=bijie_pair[0], title="ls"), tmp_path / "px.png")[0],
    ):
        with Image.open(path) as im:
            assert im.format == "PNG" and 600 <= im.width <= 2400 and 400 <= im.height <= 2400
            rgb = np.asarray(im.convert("RGB")).astype(int)
        below_legend = rgb[round(0.12 * len(rgb)) :]  # the legend's swatch has the outline colour too
        outline = (abs(below_legend[..., 0] - 255) < 30) & (abs(below_legend[..., 1] - 212) < 30)
        assert (outline & (below_legend[..., 2] < 60)).sum() > 100  # the landslide outlines are drawn
        assert rgb.std() > 20  # the scene is drawn under them


def test_cog_keeps_crs_transform_and_pixels(ws, utm_scene, tmp_path: Path) -> None:
    scene, _, corrected, d = utm_scene
    path = export_scene(ws, scene.id, "tif", tmp_path / "mask.tif")
    with rasterio.open(path) as ds, rasterio.open(corrected.raster_path) as original:
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert ds.crs.to_epsg() == 32618 and ds.transform.almost_equals(d.affine)
        assert np.array_equal(ds.read(1), original.read(1))


def test_download_bytes_and_bad_requests(ws, utm_scene, bijie_pair, tmp_path: Path) -> None:
    scene, predicted, _, _ = utm_scene
    download = export_scene_bytes(ws, scene.id, "gpkg", mask_version_id=predicted.id)
    assert download.filename == f"RGB.byte_mask{predicted.id}_landslides.gpkg"
    assert download.data.startswith(b"SQLite format 3") and download.mime == "application/geopackage+sqlite3"
    with pytest.raises(InputError, match="not one of"):
        export_scene(ws, scene.id, "shp", tmp_path)
    with pytest.raises(InputError, match=r"does not end in \.gpkg"):
        export_scene(ws, scene.id, "gpkg", tmp_path / "inventory.csv")
    other = import_scene(ws, bijie_pair[0], copy=False).scene
    with pytest.raises(InputError, match="has no mask yet"):
        export_scene(ws, other.id, "gpkg", tmp_path)
    with pytest.raises(InputError, match="belongs to scene"):
        export_scene(ws, other.id, "gpkg", tmp_path, mask_version_id=predicted.id)


def test_empty_mask_gives_an_empty_layer_with_crs(landsat_utm: Path, tmp_path: Path) -> None:
    d = describe(landsat_utm)
    mask = write_raster(tmp_path / "empty.tif", np.zeros((d.height, d.width), dtype=np.uint8), d)
    inventory = build_inventory(ExportSource(mask))
    assert inventory.totals() == {"landslides": 0, "pixels": 0, "area_m2": 0.0, "coordinates": "EPSG:32618"}
    gpkg, _ = export(ExportSource(mask), tmp_path / "empty.gpkg")
    info = pyogrio.read_info(gpkg)
    assert info["features"] == 0 and info["crs"] == "EPSG:32618"


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "engine", "export", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_cli_exports_a_workspace_scene(ws, utm_scene, tmp_path: Path) -> None:
    scene, *_ = utm_scene
    out = tmp_path / "summary.csv"
    result = cli("--scene", str(scene.id), "--workspace", str(ws.root), "--out", str(out))
    assert result.returncode == 0, result.stderr
    with open(out, newline="") as f:
        assert [row["status"] for row in csv.DictReader(f)] == ["corrected", "corrected"]


def test_cli_exports_files_and_refuses_bad_input(landsat_utm: Path, tmp_path: Path) -> None:
    d = describe(landsat_utm)
    mask = write_raster(tmp_path / "mask.tif", _blob_mask(d.height, d.width), d)
    out = tmp_path / "out" / "inventory.gpkg"
    result = cli("--mask", str(mask), "--image", str(landsat_utm), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines() == [
        f"wrote {out}: 3 landslides, {3400 * abs(d.affine.a * d.affine.e):,.0f} m² (EPSG:32618)"
    ]
    assert pyogrio.read_info(out)["features"] == 3

    for bad in (
        ("--mask", str(tmp_path / "missing.tif"), "--out", str(tmp_path / "x.gpkg")),
        ("--mask", str(mask), "--out", str(tmp_path / "x.shp")),
        ("--mask", str(mask), "--mask-version", "3", "--out", str(tmp_path / "x.gpkg")),
    ):
        result = cli(*bad)
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
        assert not (tmp_path / "x.gpkg").exists() and not (tmp_path / "x.shp").exists()
