"""GeoTIFF output that keeps the source scene's CRS and transform: tiled, compressed, written block by block.

Every writer goes through `atomic_write`, so a reader never sees a half-written raster: the file
appears under its name only once it is complete and on disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from engine.io.scene import SceneDescriptor
from engine.store.files import atomic_write

BLOCK = 256


class BlockWriter:
    """Writes (bands, h, w) blocks at pixel offsets into an open GeoTIFF."""

    def __init__(self, dataset):
        self._ds = dataset

    def write(self, y: int, x: int, block: np.ndarray) -> None:
        if block.ndim == 2:
            block = block[None]
        _, h, w = block.shape
        self._ds.write(block.astype(self._ds.dtypes[0], copy=False), window=Window(x, y, w, h))


def _profile(like: SceneDescriptor, count: int, dtype: str, nodata: float | None) -> dict:
    profile = {
        "driver": "GTiff",
        "width": like.width,
        "height": like.height,
        "count": count,
        "dtype": dtype,
        "compress": "deflate",
        "predictor": 3 if np.dtype(dtype).kind == "f" else 2,
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "BIGTIFF": "IF_SAFER",
    }
    if nodata is not None:
        profile["nodata"] = nodata
    if like.georeferenced:
        profile["crs"] = like.crs
        profile["transform"] = like.affine
    return profile


@contextmanager
def raster_writer(
    path: str | Path, like: SceneDescriptor, count: int = 1, dtype: str = "uint8", nodata: float | None = None
) -> Iterator[BlockWriter]:
    """A GeoTIFF on the grid of `like`, filled block by block; it appears at `path` only when complete."""
    with (
        atomic_write(Path(path)) as tmp,
        rasterio.open(tmp, "w", **_profile(like, count, dtype, nodata)) as dst,
    ):
        yield BlockWriter(dst)


def write_raster(
    path: str | Path, array: np.ndarray, like: SceneDescriptor, nodata: float | None = None
) -> Path:
    """Write a whole (bands, h, w) or (h, w) array that fits in memory, e.g. an edited mask."""
    if array.ndim == 2:
        array = array[None]
    if array.shape[1:] != (like.height, like.width):
        raise ValueError(
            f"array is {array.shape[2]}×{array.shape[1]} px, the scene {like.width}×{like.height} px"
        )
    with raster_writer(path, like, array.shape[0], array.dtype.name, nodata) as writer:
        for y in range(0, like.height, 4 * BLOCK):
            writer.write(y, 0, array[:, y : y + 4 * BLOCK])
    return Path(path)


def export_cog(src: str | Path, dst: str | Path) -> Path:
    """Copy a GeoTIFF to a Cloud-Optimized GeoTIFF, keeping CRS and transform, for hand-off to GIS tools."""
    with rasterio.open(src) as ds:
        resampling = "AVERAGE" if np.dtype(ds.dtypes[0]).kind == "f" else "NEAREST"
    with atomic_write(Path(dst)) as tmp:
        rasterio.shutil.copy(src, tmp, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=512, RESAMPLING=resampling)
    return Path(dst)
