"""A scene once open: what Scarp knows about it without reading pixels (`SceneDescriptor`, stored in
the workspace) and the windowed reads of its pixels (`Scene`). `engine.io.raster.open_scene` makes one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from rasterio.errors import RasterioError
from rasterio.transform import Affine

from engine.errors import InputError
from engine.io.backends import Backend, Box


@dataclass(frozen=True)
class SceneDescriptor:
    """What Scarp knows about a scene without reading its pixels; JSON-friendly for the workspace store."""

    path: str
    format: str
    width: int
    height: int
    count: int
    band_names: tuple[str, ...]
    dtype: str
    crs: str | None
    transform: tuple[float, float, float, float, float, float]
    bounds: tuple[float, float, float, float]
    lonlat_bounds: tuple[float, float, float, float] | None
    nodata: float | None
    pixel_size_m: tuple[float, float] | None

    @property
    def georeferenced(self) -> bool:
        return self.crs is not None

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform)

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SceneDescriptor:
        tuples = {"band_names", "transform", "bounds", "lonlat_bounds", "pixel_size_m"}
        return cls(**{k: tuple(v) if k in tuples and v is not None else v for k, v in data.items()})


class Scene:
    """An open scene. Reads are (bands, height, width) arrays of the window asked for, bands 0-based."""

    def __init__(self, backend: Backend, descriptor: SceneDescriptor):
        self._backend = backend
        self.descriptor = descriptor

    def __enter__(self) -> Scene:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._backend.close()

    def read(self, window: Box | None = None, bands: Sequence[int] | None = None) -> np.ndarray:
        """Native-dtype pixels of `window` (the whole scene when None: only for small scenes)."""
        y, x, h, w = self._check_window(window)
        bands = self._check_bands(bands)
        try:
            return self._backend.read((y, x, h, w), bands)
        except (RasterioError, OSError, KeyError, ValueError) as exc:
            raise self._damaged(exc) from exc

    def read_decimated(
        self, out_height: int, out_width: int, bands: Sequence[int] | None = None
    ) -> np.ndarray:
        """The whole scene sampled down to about out_height × out_width, for thumbnails and statistics."""
        bands = self._check_bands(bands)
        try:
            return self._backend.read_decimated(max(1, out_height), max(1, out_width), bands)
        except (RasterioError, OSError, KeyError, ValueError) as exc:
            raise self._damaged(exc) from exc

    def _damaged(self, exc: BaseException) -> InputError | MemoryError:
        path = self.descriptor.path
        reason = gdal_reason(exc, path)
        if "cannot allocate" in reason.lower():  # GDAL out of memory: not the file's fault
            return MemoryError(f"out of memory while reading {path}: {reason}")
        return InputError(path, f"cannot read pixels (file damaged or truncated?): {reason}")

    @property
    def block_shape(self) -> tuple[int, int]:
        """(height, width) of the blocks the file is stored in: a read decodes whole blocks."""
        return self._backend.block_shape

    def read_float(self, window: Box | None = None, bands: Sequence[int] | None = None) -> np.ndarray:
        """float32 pixels with NaN wherever the pixel is not valid (nodata, NaN or inf)."""
        data = self.read(window)
        out = data[self._check_bands(bands)].astype(np.float32)
        out[:, ~self.valid(data)] = np.nan
        return out

    def valid_mask(self, window: Box | None = None) -> np.ndarray:
        return self.valid(self.read(window))

    def valid(self, data: np.ndarray) -> np.ndarray:
        """Valid pixels of an all-band array: every band finite, and not every band equal to nodata."""
        ok = np.ones(data.shape[1:], dtype=bool)
        if data.dtype.kind == "f":
            ok &= np.isfinite(data).all(axis=0)
        nodata = self.descriptor.nodata
        if nodata is not None and not math.isnan(nodata):
            ok &= ~(data == nodata).all(axis=0)
        return ok

    def blocks(self, size: int = 1024) -> Iterator[Box]:
        """Windows of at most size × size covering the scene, row-major, for streaming whole-scene passes."""
        d = self.descriptor
        for y in range(0, d.height, size):
            for x in range(0, d.width, size):
                yield y, x, min(size, d.height - y), min(size, d.width - x)

    def check_has_data(self) -> None:
        """Refuse a scene with no valid pixel: a sampled look, then a full scan only if it finds none."""
        d = self.descriptor
        side = 512
        if self.valid(self.read_decimated(min(side, d.height), min(side, d.width))).any():
            return
        for box in self.blocks():
            if self.valid(self.read(box)).any():
                return
        raise InputError(d.path, "has no valid pixels: every pixel is nodata, NaN or inf")

    def _check_window(self, window: Box | None) -> Box:
        d = self.descriptor
        if window is None:
            return 0, 0, d.height, d.width
        y, x, h, w = (int(v) for v in window)
        if h < 1 or w < 1 or y < 0 or x < 0 or y + h > d.height or x + w > d.width:
            raise ValueError(f"window {window} lies outside the {d.width}×{d.height} px scene")
        return y, x, h, w

    def _check_bands(self, bands: Sequence[int] | None) -> list[int]:
        count = self.descriptor.count
        if bands is None:
            return list(range(count))
        bands = [int(b) for b in bands]
        bad = [b for b in bands if not 0 <= b < count]
        if bad or not bands:
            raise InputError(self.descriptor.path, f"has {count} bands; cannot select bands {bad or bands}")
        return bands


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def gdal_reason(exc: BaseException, path: str | Path) -> str:
    """The most telling line of a GDAL or HDF5 error: the root cause rather than "Read failed. See
    previous exception", without GDAL's advice on its own settings or the path the message already names.
    """
    causes = []
    seen: BaseException | None = exc
    while seen is not None and len(causes) < 8:
        causes.append(seen)
        seen = seen.__cause__ or seen.__context__
    texts = [first_line(c) for c in causes]
    useful = [t for t in texts if "see previous exception" not in t.lower()] or texts
    text = re.sub(r"\s*\(this error can be turned as a warning[^)]*\)", "", useful[-1])
    for name in (str(path), Path(path).name):
        text = text.replace(f"'{name}'", "the file").replace(f"{name}: ", "").replace(f"{name}, ", "")
    return text.strip() or type(exc).__name__
