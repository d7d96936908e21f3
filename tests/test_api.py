"""engine.api on real files: import checks everything before recording anything."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from engine import api
from engine.errors import InputError
from engine.io.masks import read_mask


def test_hdf5_with_embedded_mask_brings_it_along(tmp_path, l4s_image):
    with h5py.File(l4s_image) as f:
        image = f["img"][()]
    with h5py.File(l4s_image.parent.parent / "mask" / "mask_1.h5") as f:
        mask = f["mask"][()]
    combined = tmp_path / "patch.h5"
    with h5py.File(combined, "w") as f:
        f["img"] = image
        f["mask"] = mask
    with api.open_workspace(tmp_path / "ws") as ws:
        result = api.import_scene(ws, combined)
        assert result.mask_version is not None and result.mask_version.source == "import"
        np.testing.assert_array_equal(read_mask(result.mask_version.raster_path), mask)


def test_imported_mask_keeps_the_scene_grid(tmp_path, iburi_post):
    from engine.io.raster import describe
    from engine.io.writers import write_raster

    d = describe(iburi_post)
    mask = np.zeros((d.height, d.width), np.uint8)
    mask[10:50, 20:80] = 255
    write_raster(tmp_path / "truth.tif", mask, d)
    with api.open_workspace(tmp_path / "ws") as ws:
        version = api.import_scene(ws, iburi_post, mask=tmp_path / "truth.tif").mask_version
        stored = describe(version.raster_path)
        assert stored.crs == d.crs and stored.transform == d.transform
        assert read_mask(version.raster_path).sum() == 40 * 60


def test_all_nodata_scene_is_not_recorded(tmp_path, iburi_post):
    from engine.io.raster import describe
    from engine.io.writers import write_raster

    d = describe(iburi_post)
    write_raster(tmp_path / "blank.tif", np.zeros((3, d.height, d.width), np.uint16), d, nodata=0)
    with api.open_workspace(tmp_path / "ws") as ws:
        with pytest.raises(InputError, match="no valid pixels"):
            api.import_scene(ws, tmp_path / "blank.tif")
        assert ws.list_scenes() == []
        assert ws.integrity_check() == "ok"


def test_default_workspace_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SCARP_WORKSPACE", str(tmp_path / "elsewhere"))
    with api.open_workspace() as ws:
        assert ws.root == (tmp_path / "elsewhere").resolve()
    monkeypatch.delenv("SCARP_WORKSPACE")
    assert api.default_workspace_path().name == "workspace"
