"""Landslide masks on disk: one band, the image's size, values {0,1} or {0,255}; read as {0,1} uint8."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from engine.errors import InputError
from engine.io.raster import HDF5_SUFFIXES, Box, Scene, SceneDescriptor, open_scene

_ALLOWED = ({0, 1}, {0, 255})


class MaskSource:
    """An open mask. Reads are (h, w) uint8 arrays of 0 (background) and 1 (landslide)."""

    def __init__(self, path: Path, height: int, width: int, scene: Scene | None, array: np.ndarray | None):
        self.path = path
        self.height = height
        self.width = width
        self._scene = scene
        self._array = array
        self._positive: int | None = None  # 1 or 255, fixed by the first non-zero value seen

    def __enter__(self) -> MaskSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._scene is not None:
            self._scene.close()

    def read(self, window: Box | None = None) -> np.ndarray:
        y, x, h, w = window if window is not None else (0, 0, self.height, self.width)
        if self._scene is not None:
            return self._normalise(self._scene.read((y, x, h, w))[0])
        return self._normalise(self._array[y : y + h, x : x + w])

    def blocks(self, size: int = 1024) -> Iterator[Box]:
        for y in range(0, self.height, size):
            for x in range(0, self.width, size):
                yield y, x, min(size, self.height - y), min(size, self.width - x)

    def _normalise(self, raw: np.ndarray) -> np.ndarray:
        values = set(np.unique(raw).tolist())
        positive = values - {0}
        if len(positive) > 1 or not any(values <= allowed for allowed in _ALLOWED):
            shown = sorted(values)[:8]
            raise InputError(self.path, f"mask values must be {{0,1}} or {{0,255}}, found {shown}")
        if positive:
            value = int(next(iter(positive)))
            if self._positive is not None and value != self._positive:
                raise InputError(self.path, f"mask mixes landslide values {self._positive} and {value}")
            self._positive = value
        return (raw != 0).astype(np.uint8)


def open_mask(path: str | Path, like: SceneDescriptor | None = None) -> MaskSource:
    """Open a mask file (GeoTIFF/PNG, or HDF5 with a `mask` dataset) and check it fits `like`'s image."""
    path = Path(path)
    if path.suffix.lower() in HDF5_SUFFIXES:
        source = _open_hdf5_mask(path)
    else:
        scene = open_scene(path)
        if scene.descriptor.count != 1:
            scene.close()
            raise InputError(path, f"a mask has one band, this file has {scene.descriptor.count}")
        source = MaskSource(path, scene.descriptor.height, scene.descriptor.width, scene, None)
    if like is not None and (source.height, source.width) != (like.height, like.width):
        source.close()
        raise InputError(
            path,
            f"mask is {source.width}×{source.height} px but its image {Path(like.path).name} is "
            f"{like.width}×{like.height} px",
        )
    return source


def read_mask(path: str | Path, like: SceneDescriptor | None = None) -> np.ndarray:
    """The whole mask as {0,1} uint8, checked; for masks that fit in memory."""
    with open_mask(path, like) as mask:
        return mask.read()


def validate_mask(path: str | Path, like: SceneDescriptor | None = None) -> None:
    """Check every value of a mask block by block, without holding it in memory."""
    with open_mask(path, like) as mask:
        for box in mask.blocks():
            mask.read(box)


def _open_hdf5_mask(path: Path) -> MaskSource:
    import h5py

    if not path.exists():
        raise InputError(path, "file not found")
    try:
        with h5py.File(path, "r") as file:
            if "mask" not in file:
                keys = ", ".join(sorted(file.keys())) or "none"
                raise InputError(path, f"HDF5 file has no 'mask' dataset; its keys: {keys}")
            array = np.asarray(file["mask"][()])
    except OSError as exc:
        raise InputError(path, f"not a readable HDF5 file ({exc})") from exc
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise InputError(path, f"'mask' must have shape (height, width), found {array.shape}")
    if array.dtype.kind not in "uib":
        raise InputError(path, f"'mask' must hold integers, found {array.dtype}")
    return MaskSource(path, array.shape[0], array.shape[1], None, array)
