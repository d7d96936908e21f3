"""Landslide masks on disk: one band, the image's size, values {0,1} or {0,255}; read as {0,1} uint8."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from engine.errors import InputError
from engine.io.backends import Box
from engine.io.raster import HDF5_SUFFIXES, check_file, hdf5_dataset, max_pixels_from_env, open_scene
from engine.io.scene import Scene, SceneDescriptor

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
        source = _open_hdf5_mask(path, like)
    else:
        scene = open_scene(path)
        if scene.descriptor.count != 1:
            scene.close()
            raise InputError(path, f"a mask has one band, this file has {scene.descriptor.count}")
        source = MaskSource(path, scene.descriptor.height, scene.descriptor.width, scene, None)
    try:
        _check_size(path, source.height, source.width, like)
    except InputError:
        source.close()
        raise
    return source


def _check_size(path: Path, height: int, width: int, like: SceneDescriptor | None) -> None:
    if like is not None and (height, width) != (like.height, like.width):
        raise InputError(
            path,
            f"mask is {width}×{height} px but its image {Path(like.path).name} is "
            f"{like.width}×{like.height} px",
        )


def read_mask(path: str | Path, like: SceneDescriptor | None = None) -> np.ndarray:
    """The whole mask as {0,1} uint8, checked; for masks that fit in memory."""
    with open_mask(path, like) as mask:
        return mask.read()


def validate_mask(path: str | Path, like: SceneDescriptor | None = None) -> None:
    """Check every value of a mask block by block, without holding it in memory."""
    with open_mask(path, like) as mask:
        for box in mask.blocks():
            mask.read(box)


def _open_hdf5_mask(path: Path, like: SceneDescriptor | None) -> MaskSource:
    """A Landslide4Sense `mask` dataset, checked from its header (shape, type, size) before it is read."""
    import h5py

    check_file(path)
    try:
        file = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(path, f"not a readable HDF5 file ({exc})") from exc
    with file:
        ds = hdf5_dataset(file, "mask", path)
        shape = tuple(int(v) for v in ds.shape)
        if len(shape) == 3 and shape[-1] == 1:
            shape = shape[:2]
        if len(shape) != 2:
            raise InputError(path, f"'mask' must have shape (height, width), found {ds.shape}")
        if ds.dtype.kind not in "uib":
            raise InputError(path, f"'mask' must hold integers, found {ds.dtype}")
        height, width = shape
        limit = max_pixels_from_env()
        if height * width > limit:
            raise InputError(
                path,
                f"'mask' declares {width}×{height} = {height * width:,} px, over the limit of {limit:,} px "
                "(raise SCARP_MAX_PIXELS to allow it)",
            )
        _check_size(path, height, width, like)
        try:
            array = np.asarray(ds[()]).reshape(shape)
        except (OSError, ValueError) as exc:
            raise InputError(path, f"cannot read 'mask' (file damaged or truncated?): {exc}") from exc
    return MaskSource(path, height, width, None, array)
