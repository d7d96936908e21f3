"""Pixel access per file format, behind one small interface that `Scene` reads through."""

from __future__ import annotations

import numpy as np
from rasterio.windows import Window

Box = tuple[int, int, int, int]  # y, x, height, width in pixels


class Backend:
    def read(self, box: Box, bands: list[int]) -> np.ndarray:
        raise NotImplementedError

    @property
    def block_shape(self) -> tuple[int, int]:
        """(height, width) of the unit the file is stored and decoded in."""
        raise NotImplementedError

    def read_decimated(self, out_h: int, out_w: int, bands: list[int]) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class RasterioBackend(Backend):
    def __init__(self, dataset):
        self.ds = dataset

    def read(self, box: Box, bands: list[int]) -> np.ndarray:
        y, x, h, w = box
        return self.ds.read([b + 1 for b in bands], window=Window(x, y, w, h))

    def read_decimated(self, out_h: int, out_w: int, bands: list[int]) -> np.ndarray:
        return self.ds.read([b + 1 for b in bands], out_shape=(len(bands), out_h, out_w))

    @property
    def block_shape(self) -> tuple[int, int]:
        return tuple(self.ds.block_shapes[0])

    def close(self) -> None:
        self.ds.close()


class HDF5Backend(Backend):
    """Landslide4Sense patches: dataset `img` of shape (H, W, bands)."""

    def __init__(self, file, dataset):
        self.file = file
        self.ds = dataset

    def read(self, box: Box, bands: list[int]) -> np.ndarray:
        y, x, h, w = box
        block = self.ds[y : y + h, x : x + w, :]
        return np.ascontiguousarray(np.moveaxis(block[..., bands], -1, 0))

    def read_decimated(self, out_h: int, out_w: int, bands: list[int]) -> np.ndarray:
        height, width = self.ds.shape[:2]
        sy, sx = max(1, height // out_h), max(1, width // out_w)
        block = self.ds[::sy, ::sx, :]
        return np.ascontiguousarray(np.moveaxis(block[..., bands], -1, 0))

    @property
    def block_shape(self) -> tuple[int, int]:
        return tuple(self.ds.chunks[:2]) if self.ds.chunks else tuple(self.ds.shape[:2])

    def close(self) -> None:
        self.file.close()
