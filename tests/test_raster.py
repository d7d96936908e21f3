"""Raster I/O on the real files in ../shared/data: descriptors, windows, bands, display, writing."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import rasterio

from engine.io.bands import band_statistics, percentile_stretch, resolve_bands, thumbnail
from engine.io.masks import read_mask, validate_mask
from engine.io.raster import L4S_BAND_NAMES, describe, open_scene
from engine.io.scene import SceneDescriptor
from engine.io.writers import export_cog, raster_writer, write_raster


def test_iburi_geotiff_epsg4326(iburi_post):
    with open_scene(iburi_post) as scene:
        d = scene.descriptor
        assert (d.width, d.height, d.count, d.dtype) == (1533, 970, 3, "uint16")
        assert d.crs == "EPSG:4326" and d.format == "GTiff"
        assert d.nodata == 0
        assert d.band_names == ("B4 red", "B3 green", "B2 blue")
        # the data README gives the extent: 141.890–142.028 E, 42.682–42.770 N
        west, south, east, north = d.lonlat_bounds
        assert west == pytest.approx(141.89, abs=0.01) and east == pytest.approx(142.028, abs=0.01)
        assert south == pytest.approx(42.682, abs=0.01) and north == pytest.approx(42.770, abs=0.01)
        assert d.bounds == pytest.approx(d.lonlat_bounds)
        # ~10 m Sentinel-2 pixels; at 42.7° N a degree of longitude is shorter than one of latitude
        px, py = d.pixel_size_m
        assert 6 < px < 10 and 9 < py < 11
        window = scene.read((100, 200, 64, 32))
        assert window.shape == (3, 64, 32) and window.dtype == np.uint16
        with rasterio.open(iburi_post) as ds:
            expected = ds.read(window=rasterio.windows.Window(200, 100, 32, 64))
        np.testing.assert_array_equal(window, expected)


def test_landsat_utm(landsat_utm):
    d = describe(landsat_utm)
    assert d.crs == "EPSG:32618" and d.count == 3 and d.dtype == "uint8"
    assert d.pixel_size_m == pytest.approx((300.04, 300.04), abs=0.01)
    west, south, east, north = d.lonlat_bounds
    assert -80 < west < east < -76 and 22 < south < north < 26  # UTM 18N over the Bahamas
    with open_scene(landsat_utm) as scene:
        valid = scene.valid_mask()
        # the collar of this scene is nodata (0 in every band) and must not count as valid
        assert 0.3 < valid.mean() < 0.9
        assert not valid[0, 0]


def test_plain_tiff_without_crs(cas_tile):
    d = describe(cas_tile)
    assert d.crs is None and d.lonlat_bounds is None and d.pixel_size_m is None
    assert (d.width, d.height, d.count) == (512, 512, 3)
    assert d.bounds == (0.0, 0.0, 512.0, 512.0)
    assert d.band_names == ("red", "green", "blue")


def test_bijie_png_and_mask(bijie_pair):
    image, mask_path = bijie_pair
    with open_scene(image) as scene:
        d = scene.descriptor
        assert (d.format, d.count, d.dtype, d.crs) == ("PNG", 3, "uint8", None)
        mask = read_mask(mask_path, like=d)
    assert mask.shape == (d.height, d.width) and set(np.unique(mask)) == {0, 1}
    validate_mask(mask_path, like=d)


def test_landslide4sense_hdf5(l4s_image):
    with open_scene(l4s_image) as scene:
        d = scene.descriptor
        assert (d.format, d.width, d.height, d.count, d.dtype) == ("HDF5", 128, 128, 14, "float64")
        assert d.band_names == L4S_BAND_NAMES
        assert resolve_bands(d, "s2_true_colour") == (3, 2, 1)
        assert resolve_bands(d, "rgb") == (3, 2, 1)
        part = scene.read((10, 20, 30, 40), bands=[3, 2, 1])
        full = scene.read()
        np.testing.assert_array_equal(part, full[[3, 2, 1], 10:40, 20:60])
    mask = read_mask(l4s_image.parent.parent / "mask" / "mask_1.h5", like=d)
    assert mask.shape == (128, 128) and mask.max() <= 1


def test_png_reads_as_l_and_jpeg(tmp_path, bijie_pair):
    from PIL import Image

    rgb = np.asarray(Image.open(bijie_pair[0]))
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")
    Image.fromarray(rgb).save(tmp_path / "photo.jpg", quality=95)
    assert describe(tmp_path / "gray.png").band_names == ("gray",)
    with open_scene(tmp_path / "photo.jpg") as scene:
        assert scene.descriptor.format == "JPEG" and scene.read().shape == (3, *rgb.shape[:2])
        assert resolve_bands(scene.descriptor, "rgb") == (0, 1, 2)
    with open_scene(tmp_path / "gray.png") as scene:
        assert resolve_bands(scene.descriptor, "rgb") == (0, 0, 0)


def test_descriptor_json_round_trip(iburi_post):
    d = describe(iburi_post)
    again = SceneDescriptor.from_dict(json.loads(json.dumps(d.to_dict())))
    assert again == d


def test_float_nan_is_nodata(tmp_path, iburi_post):
    with open_scene(iburi_post) as scene:
        d = scene.descriptor
        data = scene.read((0, 0, 64, 64)).astype(np.float32)
    data[:, 5, 5] = np.nan
    data[1, 6, 6] = np.inf
    small = SceneDescriptor.from_dict({**d.to_dict(), "width": 64, "height": 64})
    write_raster(tmp_path / "f.tif", data, small)
    with open_scene(tmp_path / "f.tif") as scene:
        valid = scene.valid_mask()
        assert not valid[5, 5] and not valid[6, 6] and valid.sum() >= 64 * 64 - 2 - (data[0] == 0).sum()
        floats = scene.read_float()
        assert np.isnan(floats[:, 6, 6]).all() and np.isfinite(floats[:, 7, 7]).all()


def test_band_presets_and_errors(iburi_post, landsat_utm):
    d = describe(iburi_post)
    assert resolve_bands(d, "s2_true_colour") == (0, 1, 2)
    assert resolve_bands(d, [2, 1, 0]) == (2, 1, 0)
    with pytest.raises(Exception, match="B4, B3 and B2"):
        resolve_bands(describe(landsat_utm), "s2_true_colour")
    with pytest.raises(Exception, match="cannot select bands"):
        resolve_bands(d, [0, 5])
    with pytest.raises(ValueError, match="unknown band preset"):
        resolve_bands(d, "infrared")


def test_percentile_stretch():
    band = np.arange(100, dtype=np.float64).reshape(1, 10, 10)
    out = percentile_stretch(band, low=0, high=100)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    valid = np.ones((10, 10), bool)
    valid[0, 0] = False
    clipped = percentile_stretch(band, valid, low=10, high=90)
    assert clipped[0, 0, 0] == 0 and clipped[0, 9, 9] == 255  # invalid → 0, above the high percentile → 255
    assert 100 < clipped[0, 5, 0] < 160  # the middle of the range lands mid-grey


def test_thumbnail_is_small_and_stretched(iburi_post):
    with open_scene(iburi_post) as scene:
        thumb = thumbnail(scene, max_side=256)
    assert thumb.shape == (162, 256, 3) and thumb.dtype == np.uint8
    assert thumb.std() > 20  # a stretch of real uint16 reflectance fills the display range


def test_band_statistics_match_exact_on_small_scene(cas_tile, iburi_post):
    with open_scene(cas_tile) as scene:
        data = scene.read().astype(np.float64)
        mean, std = band_statistics(scene, size=512)
    np.testing.assert_allclose(mean, data.reshape(3, -1).mean(axis=1))
    np.testing.assert_allclose(std, data.reshape(3, -1).std(axis=1))
    with open_scene(iburi_post) as scene:
        full = scene.read().astype(np.float64)
        valid = scene.valid(full)
        mean, std = band_statistics(scene, windows=16, size=256)
    exact = full[:, valid].mean(axis=1)
    np.testing.assert_allclose(mean, exact, rtol=0.2)  # a sample, not the whole scene


def test_written_mask_keeps_crs_and_transform(tmp_path, iburi_post):
    d = describe(iburi_post)
    mask = np.zeros((d.height, d.width), np.uint8)
    mask[100:200, 300:500] = 1
    write_raster(tmp_path / "mask.tif", mask, d)
    with rasterio.open(tmp_path / "mask.tif") as ds:
        assert ds.crs.to_string() == "EPSG:4326" and ds.transform == d.affine
        assert ds.profile["tiled"] and ds.compression.value.lower() == "deflate"
        np.testing.assert_array_equal(ds.read(1), mask)
    np.testing.assert_array_equal(read_mask(tmp_path / "mask.tif", like=d), mask)
    export_cog(tmp_path / "mask.tif", tmp_path / "mask_cog.tif")
    with rasterio.open(tmp_path / "mask_cog.tif") as ds:
        assert ds.crs.to_string() == "EPSG:4326" and ds.transform == d.affine
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        np.testing.assert_array_equal(ds.read(1), mask)
    assert not list(tmp_path.glob(".*"))  # no temp files left behind


def test_block_writer_probabilities_and_no_crs(tmp_path, cas_tile):
    d = describe(cas_tile)
    with raster_writer(tmp_path / "p.tif", d, count=1, dtype="float32") as writer:
        for y in range(0, d.height, 100):
            writer.write(y, 0, np.full((1, min(100, d.height - y), d.width), y / 1000, np.float32))
    with open_scene(tmp_path / "p.tif") as scene:
        assert scene.descriptor.crs is None and scene.descriptor.dtype == "float32"
        assert scene.read((450, 0, 1, 1))[0, 0, 0] == pytest.approx(0.4)


def test_failed_write_leaves_nothing(tmp_path, cas_tile):
    d = describe(cas_tile)
    (tmp_path / "old.tif").write_bytes(b"previous")
    with pytest.raises(RuntimeError), raster_writer(tmp_path / "old.tif", d) as writer:
        writer.write(0, 0, np.zeros((1, 10, 10), np.uint8))
        raise RuntimeError("model crashed")
    assert (tmp_path / "old.tif").read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.tif"]


def test_a_png_is_read_and_written_without_a_georeferencing_warning(tmp_path, bijie_pair):
    """engine.io silences NotGeoreferencedWarning once for the process (per-call catch_warnings() is
    not thread-safe), so a run that turns the warning into an error still reads and writes a PNG
    scene, in the main thread and in the tile reader's thread."""
    script = f"""
import numpy as np
from engine.inference import PredictOptions, TileReader, scene_grid
from engine.io.raster import open_scene
from engine.io.writers import write_raster
scene = open_scene({str(bijie_pair[0])!r})
with TileReader(scene, scene_grid(scene.descriptor, PredictOptions()), 1) as reader:
    assert len(list(reader)) == 1
d = scene.descriptor
write_raster({str(tmp_path / "mask.tif")!r}, np.zeros((d.height, d.width), np.uint8), d)
"""
    run = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", script], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
