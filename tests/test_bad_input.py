"""Bad input, built from the real files: each case raises InputError naming the file and the problem."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import Affine

from engine.errors import InputError
from engine.io.masks import read_mask, validate_mask
from engine.io.raster import Scene, describe, open_scene
from engine.io.writers import export_cog


def _copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


def _write_tif(path: Path, data: np.ndarray, **profile) -> Path:
    count, height, width = data.shape
    base = {"driver": "GTiff", "width": width, "height": height, "count": count, "dtype": data.dtype.name}
    base.update(profile)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **base) as ds:
            ds.write(data)
    return path


def _expect(path: Path, match: str, **kwargs) -> InputError:
    with pytest.raises(InputError, match=match) as info, open_scene(path, **kwargs) as scene:
        scene.check_has_data()
    assert Path(info.value.source).name == path.name
    assert path.name in str(info.value)
    return info.value


def test_missing_file(tmp_path):
    _expect(tmp_path / "nowhere.tif", "file not found")


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.tif").write_bytes(b"")
    _expect(tmp_path / "empty.tif", "empty")


def test_truncated_geotiff_header(tmp_path, iburi_post):
    data = iburi_post.read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    _expect(tmp_path / "cut.tif", "not a readable image")


def test_truncated_cog_data(tmp_path, iburi_post):
    """A COG keeps its header first, so a cut file opens; the probe read of the last block must fail."""
    export_cog(iburi_post, tmp_path / "cog.tif")
    data = (tmp_path / "cog.tif").read_bytes()
    (tmp_path / "cut_cog.tif").write_bytes(data[: int(len(data) * 0.6)])
    _expect(tmp_path / "cut_cog.tif", "cannot read pixels|not a readable image")


def test_text_file_named_tif(tmp_path):
    (tmp_path / "notes.tif").write_text("field notes: slope failure near the road\n")
    _expect(tmp_path / "notes.tif", "not a readable image")


def test_wrong_extension(tmp_path, bijie_pair):
    _expect(_copy(bijie_pair[0], tmp_path / "image.bmp"), "unsupported file type")


def test_folder_is_not_an_image(tmp_path):
    (tmp_path / "scene.tif").mkdir()
    _expect(tmp_path / "scene.tif", "is a folder")


def test_hdf5_without_img(tmp_path, l4s_image):
    with h5py.File(tmp_path / "nokey.h5", "w") as f:
        f["data"] = np.zeros((128, 128, 14))
    _expect(tmp_path / "nokey.h5", "no 'img' dataset.*data")
    # the real Landslide4Sense mask file has only `mask`
    _expect(_copy(l4s_image.parent.parent / "mask" / "mask_1.h5", tmp_path / "mask_1.h5"), "no 'img'")


def test_hdf5_img_wrong_rank(tmp_path):
    with h5py.File(tmp_path / "flat.h5", "w") as f:
        f["img"] = np.zeros((128, 128))
    _expect(tmp_path / "flat.h5", "shape")


def test_text_file_named_h5(tmp_path):
    (tmp_path / "fake.h5").write_text("not hdf5")
    _expect(tmp_path / "fake.h5", "not a readable HDF5")


def test_one_by_one_image(tmp_path, bijie_pair):
    from PIL import Image

    Image.open(bijie_pair[0]).crop((0, 0, 1, 1)).save(tmp_path / "dot.png")
    _expect(tmp_path / "dot.png", "only 1×1 px")


def test_declared_size_over_limit(tmp_path, iburi_post, monkeypatch):
    _expect(iburi_post, "over the limit of 1,000,000 px", max_pixels=1_000_000)
    monkeypatch.setenv("SCARP_MAX_PIXELS", "500000")
    _expect(iburi_post, "SCARP_MAX_PIXELS")


def test_complex_dtype(tmp_path, cas_tile):
    with open_scene(cas_tile) as scene:
        data = scene.read((0, 0, 32, 32)).astype(np.complex64)
    _expect(_write_tif(tmp_path / "complex.tif", data), "data type complex64")


def test_int64_dtype(tmp_path, cas_tile):
    with open_scene(cas_tile) as scene:
        data = scene.read((0, 0, 32, 32)).astype(np.int64)
    _expect(_write_tif(tmp_path / "wide.tif", data), "data type int64")


def test_nan_inf_are_nodata_not_a_crash(tmp_path, cas_tile):
    with open_scene(cas_tile) as scene:
        data = scene.read((0, 0, 32, 32)).astype(np.float32)
    data[:, :4] = np.nan
    data[:, 4:8] = np.inf
    path = _write_tif(tmp_path / "holes.tif", data)
    with open_scene(path) as scene:
        scene.check_has_data()
        assert scene.valid_mask()[:8].sum() == 0 and scene.valid_mask()[8:].all()


def test_all_nan_scene(tmp_path):
    _expect(_write_tif(tmp_path / "nan.tif", np.full((1, 32, 32), np.nan, np.float32)), "no valid pixels")


def test_all_nodata_scene(tmp_path, iburi_post):
    with open_scene(iburi_post) as scene:
        profile = {"crs": scene.descriptor.crs, "transform": scene.descriptor.affine, "nodata": 0}
    _expect(
        _write_tif(tmp_path / "blank.tif", np.zeros((3, 300, 400), np.uint16), **profile), "no valid pixels"
    )


def test_nodata_except_one_pixel_is_accepted(tmp_path, monkeypatch):
    """When the sampled look misses a lone valid pixel, the full scan must still find it."""
    data = np.zeros((1, 2000, 1500), np.uint8)
    data[0, 1001, 777] = 9
    path = _write_tif(tmp_path / "lone.tif", data, nodata=0, tiled=True, blockxsize=256, blockysize=256)
    monkeypatch.setattr(Scene, "read_decimated", lambda self, h, w, bands=None: np.zeros((1, h, w), np.uint8))
    with open_scene(path) as scene:
        scene.check_has_data()
    data[0, 1001, 777] = 0
    _expect(_write_tif(tmp_path / "none.tif", data, nodata=0), "no valid pixels")


def test_rotated_geotransform(tmp_path, cas_tile):
    with open_scene(cas_tile) as scene:
        data = scene.read((0, 0, 32, 32))
    rotated = Affine(10.0, 2.0, 500000.0, 2.0, -10.0, 4700000.0)
    _expect(_write_tif(tmp_path / "rot.tif", data, crs="EPSG:32654", transform=rotated), "rotated or sheared")


def test_mask_size_differs_from_image(tmp_path, bijie_pair, data_dir):
    image = describe(bijie_pair[0])
    other_mask = data_dir / "bijie" / "masks" / "ls_0001.png"
    assert describe(other_mask).width != image.width
    with pytest.raises(
        InputError, match=r"ls_0001.png.*mask is \d+×\d+ px but its image ls_0000.png is 121×94"
    ):
        read_mask(other_mask, like=image)


def test_mask_values_outside_binary(tmp_path, bijie_pair):
    from PIL import Image

    mask = np.asarray(Image.open(bijie_pair[1])).copy()
    mask[0, :10] = 128
    Image.fromarray(mask).save(tmp_path / "grey.png")
    with pytest.raises(
        InputError, match=r"grey.png: mask values must be \{0,1\} or \{0,255\}, found \[0, 128, 255\]"
    ):
        read_mask(tmp_path / "grey.png")


def test_mask_mixing_one_and_255_across_blocks(tmp_path):
    data = np.zeros((1, 2048, 64), np.uint8)
    data[0, 10, 10] = 1
    data[0, 2000, 10] = 255
    path = _write_tif(tmp_path / "mixed.tif", data)
    with pytest.raises(InputError, match="mixes landslide values 1 and 255"):
        validate_mask(path)


def test_mask_with_three_bands(tmp_path, bijie_pair):
    with pytest.raises(InputError, match="a mask has one band"):
        read_mask(bijie_pair[0])
