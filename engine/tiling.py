"""Cut a scene into overlapping tiles and stitch per-tile predictions back with bounded memory.

Scenes can be far larger than memory allows as one prediction array, so the stitcher keeps only one
row band (one tile high, the scene's full width) and hands finished rows to a sink as soon as no later
tile can touch them. Overlapping tiles are blended with a smooth weight so tile seams do not show.
Arrays are channel-first: (C, H, W). Only numpy and the standard library are imported here.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
from numpy.typing import DTypeLike

Ramp = Literal["cosine", "linear"]
Sink = Callable[[int, np.ndarray], None]
T = TypeVar("T")

_RAMPS = ("cosine", "linear")


@dataclass(frozen=True)
class Tile:
    """One tile of a grid; y and x are in padded coordinates, so a tile is always size × size."""

    index: int
    row: int
    col: int
    y: int
    x: int
    size: int


def _axis_offsets(padded: int, tile: int, stride: int) -> tuple[int, ...]:
    """Regular offsets, with the last tile pulled back to end at the edge rather than hang past it."""
    offsets = list(range(0, padded - tile + 1, stride))
    if offsets[-1] + tile < padded:
        offsets.append(padded - tile)
    return tuple(offsets)


@dataclass(frozen=True)
class TileGrid:
    """The tiles covering a height × width scene; scenes smaller than a tile are padded bottom/right."""

    height: int
    width: int
    tile: int = 512
    overlap: int = 64

    def __post_init__(self) -> None:
        for name in ("height", "width", "tile", "overlap"):
            value = getattr(self, name)
            if isinstance(value, bool):
                raise ValueError(f"TileGrid {name} must be an integer, got {value!r}")
            try:
                object.__setattr__(self, name, operator.index(value))
            except TypeError:
                raise ValueError(f"TileGrid {name} must be an integer, got {value!r}") from None
        if self.height < 1 or self.width < 1:
            raise ValueError(f"scene size must be at least 1 × 1 pixels, got {self.height} × {self.width}")
        if self.tile < 1:
            raise ValueError(f"tile size must be at least 1 pixel, got {self.tile}")
        if not 0 <= self.overlap < self.tile:
            raise ValueError(f"overlap must be in [0, tile) = [0, {self.tile}), got {self.overlap}")

    @property
    def stride(self) -> int:
        return self.tile - self.overlap

    @property
    def padded_height(self) -> int:
        return max(self.height, self.tile)

    @property
    def padded_width(self) -> int:
        return max(self.width, self.tile)

    @property
    def row_offsets(self) -> tuple[int, ...]:
        return _axis_offsets(self.padded_height, self.tile, self.stride)

    @property
    def col_offsets(self) -> tuple[int, ...]:
        return _axis_offsets(self.padded_width, self.tile, self.stride)

    def __len__(self) -> int:
        return len(self.row_offsets) * len(self.col_offsets)

    def tiles(self) -> Iterator[Tile]:
        """Row-major, the order the stitcher needs to release rows early."""
        cols = self.col_offsets
        for row, y in enumerate(self.row_offsets):
            for col, x in enumerate(cols):
                yield Tile(index=row * len(cols) + col, row=row, col=col, y=y, x=x, size=self.tile)

    def source_window(self, tile: Tile) -> tuple[int, int, int, int]:
        """The (y, x, h, w) part of a tile inside the real scene: what to read from the raster."""
        return tile.y, tile.x, min(tile.size, self.height - tile.y), min(tile.size, self.width - tile.x)


def _reflect_indices(length: int, size: int) -> np.ndarray:
    """Indices that mirror an axis of `length` out to `size` without repeating the edge pixel.

    Unlike np.pad(mode="reflect") this never raises: it folds as many times as needed, and a length-1
    axis simply repeats its one pixel.
    """
    if length == 1:
        return np.zeros(size, dtype=np.intp)
    period = 2 * (length - 1)
    k = np.arange(size) % period
    return np.where(k < length, k, period - k)


def pad_tile(array: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad the last two axes on the bottom/right to size × size, so models see no hard edge."""
    array = np.asarray(array)
    if array.ndim not in (2, 3):
        raise ValueError(f"expected a (C, h, w) or (h, w) array, got shape {array.shape}")
    h, w = array.shape[-2:]
    if h < 1 or w < 1 or h > size or w > size:
        raise ValueError(f"cannot pad a {h} × {w} array to {size} × {size}")
    if h == size and w == size:
        return array
    out = np.take(array, _reflect_indices(h, size), axis=-2)
    return np.take(out, _reflect_indices(w, size), axis=-1)


def _ramp_1d(size: int, overlap: int, ramp: str) -> np.ndarray:
    if overlap == 0:
        return np.ones(size, dtype=np.float64)
    # Sample the ramp at (i + 1) / (overlap + 1) so it never reaches 0: edge pixels keep some weight.
    t = np.minimum(np.arange(size), np.arange(size)[::-1]) + 1.0
    t = np.minimum(t / (overlap + 1), 1.0)
    if ramp == "cosine":
        return 0.5 - 0.5 * np.cos(math.pi * t)
    return t


def blend_weights(size: int, overlap: int, ramp: Ramp = "cosine") -> np.ndarray:
    """A (size, size) float64 weight that fades towards tile borders, hiding seams between tiles.

    It is strictly positive, so a scene border seen by a single tile still normalises to its value.
    """
    if ramp not in _RAMPS:
        raise ValueError(f"unknown ramp {ramp!r}; expected one of {', '.join(_RAMPS)}")
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    if not 0 <= overlap < size:
        raise ValueError(f"overlap must be in [0, size) = [0, {size}), got {overlap}")
    line = _ramp_1d(size, overlap, ramp)
    return np.outer(line, line)


def _axis_weight(length: int, offsets: tuple[int, ...], line: np.ndarray) -> np.ndarray:
    """The sum of the 1-D ramps of every tile along one axis."""
    total = np.zeros(length, dtype=np.float64)
    for offset in offsets:
        total[offset : offset + len(line)] += line
    return total


def iter_batches(tiles: Iterable[T], batch_size: int) -> Iterator[list[T]]:
    """Group tiles for batched inference, keeping their order; the last batch may be shorter."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    batch: list[T] = []
    for tile in tiles:
        batch.append(tile)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


class Stitcher:
    """Blend row-major tile predictions into the scene, emitting finished rows to `sink(y0, block)`.

    Only one band of tile-height rows across the padded width is held, so memory does not depend on
    the scene height. Each block is (channels, rows, width) in `dtype`, cropped to the real scene;
    successive blocks cover the scene's rows once each, top to bottom. A block is a view of that band,
    valid during the call only: a sink that keeps it must copy it.

    The blend weight is an outer product of two ramps and the grid is rows × columns, so the total
    weight at a pixel is a row factor times a column factor: two 1-D arrays, not a second band.
    """

    def __init__(
        self,
        grid: TileGrid,
        channels: int,
        sink: Sink,
        ramp: Ramp = "cosine",
        dtype: DTypeLike = np.float32,
    ) -> None:
        if channels < 1:
            raise ValueError(f"channels must be at least 1, got {channels}")
        self.grid = grid
        self.channels = channels
        self.sink = sink
        self.dtype = np.dtype(dtype)
        self._weights = blend_weights(grid.tile, grid.overlap, ramp)
        self._rows = grid.row_offsets
        self._cols = grid.col_offsets
        # Accumulate in the output precision, at least float32: a pixel sums at most four weighted
        # tiles while the overlap stays under half a tile, well within float32's precision, and the
        # band across a 16384 px wide scene then takes 100 MB, not 200.
        accumulate = np.result_type(self.dtype, np.float32)
        self._weights = self._weights.astype(accumulate)
        line = _ramp_1d(grid.tile, grid.overlap, ramp)
        self._row_weight = _axis_weight(grid.padded_height, self._rows, line).astype(accumulate)
        self._col_weight = _axis_weight(grid.padded_width, self._cols, line).astype(accumulate)
        self._sum = np.zeros((channels, grid.tile, grid.padded_width), dtype=accumulate)
        self._base = 0  # padded-scene row of the band's first row
        self._next = 0  # index of the tile expected next
        self._closed = False

    @property
    def buffer_nbytes(self) -> int:
        return self._sum.nbytes

    @property
    def done(self) -> bool:
        return self._next == len(self._rows) * len(self._cols)

    def add(self, tile: Tile, prediction: np.ndarray) -> None:
        """Accumulate one tile's (channels, size, size) prediction; tiles must come in row-major order."""
        if self._closed:
            raise ValueError("the stitcher is closed; no more tiles can be added")
        if self.done:
            raise ValueError(f"all {self._next} tiles were already added; got {tile}")
        expected = self._expected(self._next)
        if tile != expected:
            raise ValueError(f"tiles must be added in row-major order: expected {expected}, got {tile}")
        prediction = np.asarray(prediction)
        size = self.grid.tile
        if prediction.shape != (self.channels, size, size):
            raise ValueError(
                f"prediction for tile {tile.index} has shape {prediction.shape}, "
                f"expected {(self.channels, size, size)}"
            )
        cols = slice(tile.x, tile.x + size)
        self._sum[:, :, cols] += prediction * self._weights
        self._next += 1
        if tile.col == len(self._cols) - 1 and tile.row < len(self._rows) - 1:
            self._release(self._rows[tile.row + 1] - tile.y)

    def close(self) -> None:
        """Emit the rows still held; raises if tiles are missing, since their rows would be wrong."""
        if self._closed:
            return
        if not self.done:
            total = len(self._rows) * len(self._cols)
            raise ValueError(f"only {self._next} of {total} tiles were added before close()")
        self._release(self.grid.tile)
        self._closed = True

    def _expected(self, index: int) -> Tile:
        row, col = divmod(index, len(self._cols))
        return Tile(index=index, row=row, col=col, y=self._rows[row], x=self._cols[col], size=self.grid.tile)

    def _release(self, count: int) -> None:
        """Emit the band's first `count` rows, which no later tile reaches, and slide the band down."""
        real = min(count, self.grid.height - self._base)
        if real > 0:  # normalised in place: these rows leave the band anyway
            block = self._sum[:, :real, : self.grid.width]
            block /= self._row_weight[self._base : self._base + real, None]
            block /= self._col_weight[: self.grid.width]
            self.sink(self._base, block.astype(self.dtype, copy=False))
        keep = self.grid.tile - count
        if keep > 0:
            self._sum[:, :keep] = self._sum[:, count:]
        self._sum[:, keep:] = 0.0
        self._base += count
