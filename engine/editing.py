"""Mask editing for the Correct page: drawn polygons, brush strokes, smart fills, undo and redo.

Masks are (h, w) arrays of 0/1 on the scene's own grid (or a tile of it). Every tool returns a boolean
*region*, and `apply` or `EditSession.edit` adds it to or erases it from the mask, so the tools stay
independent of the history. Polygons arrive from the Leaflet map in the display's convention (lon/lat,
or CRS.Simple pixel space [x, -y] for images without a CRS; see `engine.io.vector.to_geojson`) and are
rasterized in the scene CRS with the pixel-centre rule, exactly as the mask grid sees them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import cv2
import numpy as np
import rasterio.features
from rasterio.transform import Affine
from rasterio.warp import transform_geom
from shapely import affinity
from shapely.geometry import shape

from engine.errors import InputError
from engine.io.backends import Box
from engine.io.scene import SceneDescriptor

MODES = ("add", "erase")
POLYGON_TYPES = ("Polygon", "MultiPolygon")


def rasterize_geometry(
    geometry: dict[str, Any], descriptor: SceneDescriptor, window: Box | None = None
) -> np.ndarray:
    """Pixels of the scene (or of `window`, y, x, h, w) whose centre lies inside a drawn polygon.

    `geometry` is a GeoJSON Polygon/MultiPolygon, or a Feature holding one: lon/lat (EPSG:4326) for a
    georeferenced scene, CRS.Simple pixel space [x, -y] otherwise. Raises InputError when it is not a
    polygon, its coordinates are not of the scene's kind, or it covers no pixel centre of the window.
    """
    if isinstance(geometry, dict) and geometry.get("type") == "Feature":
        geometry = geometry.get("geometry") or {}
    kind = geometry.get("type") if isinstance(geometry, dict) else type(geometry).__name__
    if kind not in POLYGON_TYPES:
        raise InputError("drawn shape", f"is a {kind}; only polygons (and rectangles) can edit a mask")
    try:
        polygon = shape(geometry)
    except (ValueError, TypeError, AttributeError, IndexError) as exc:
        raise InputError("drawn shape", f"is not valid GeoJSON ({exc})") from exc
    if polygon.is_empty or not np.isfinite(polygon.bounds).all():
        raise InputError("drawn shape", "has no finite coordinates")
    if descriptor.georeferenced:
        west, south, east, north = polygon.bounds
        if west < -180 or east > 180 or south < -90 or north > 90:
            raise InputError("drawn shape", "coordinates are not longitude/latitude (EPSG:4326)")
        scene_geometry = transform_geom("EPSG:4326", descriptor.crs, geometry)
    else:
        scene_geometry = affinity.scale(polygon, xfact=1.0, yfact=-1.0, origin=(0, 0))  # [x, -y] → (x, y)
    y, x, h, w = check_window(window, descriptor)
    region = rasterio.features.rasterize(
        [(scene_geometry, 1)],
        out_shape=(h, w),
        transform=descriptor.affine @ Affine.translation(x, y),
        fill=0,
        all_touched=False,
        dtype="uint8",
    ).astype(bool)
    if not region.any():
        where = "the scene" if window is None else f"the tile at row {y}, column {x}"
        raise InputError("drawn shape", f"covers no pixel centre of {where}; draw it over the image")
    return region


def apply(mask: np.ndarray, region: np.ndarray, mode: str) -> np.ndarray:
    """A new 0/1 uint8 mask with `region` added ("add") or cleared ("erase")."""
    _check_region(mask, region)
    if mode not in MODES:
        raise InputError("edit mode", f"is {mode!r}; use one of {', '.join(MODES)}")
    out = (np.asarray(mask) != 0).astype(np.uint8)
    out[np.asarray(region, dtype=bool)] = 1 if mode == "add" else 0
    return out


def brush(shape_hw: tuple[int, int], points: Sequence[Sequence[float]], radius: float) -> np.ndarray:
    """Pixels within `radius` px of a stroke through (row, col) points: disks swept along each segment.

    Pixel (r, c) has its centre at (r, c); fractional points are fine. A stroke may leave the tile, but
    must touch it. `radius` ≥ 0.5 keeps a thin stroke connected.
    """
    h, w = shape_hw
    pts = np.asarray(points, dtype=float)
    if pts.size == 0:
        raise InputError("brush stroke", "has no points")
    if pts.ndim != 2 or pts.shape[1] != 2 or not np.isfinite(pts).all():
        raise InputError("brush stroke", "must be a list of finite (row, col) points")
    if not radius >= 0.5:
        raise InputError("brush size", f"is {radius} px; use a radius of at least 0.5 px")
    region = np.zeros((h, w), dtype=bool)
    for a, b in pairwise(pts if len(pts) > 1 else pts[[0, 0]]):
        r0, c0 = (max(0, math.floor(min(a[i], b[i]) - radius)) for i in (0, 1))
        r1 = min(h, math.ceil(max(a[0], b[0]) + radius) + 1)
        c1 = min(w, math.ceil(max(a[1], b[1]) + radius) + 1)
        if r0 >= r1 or c0 >= c1:
            continue
        rows, cols = np.mgrid[r0:r1, c0:c1]
        ab = b - a
        length2 = float(ab @ ab)
        t = 0.0 if length2 == 0 else np.clip(((rows - a[0]) * ab[0] + (cols - a[1]) * ab[1]) / length2, 0, 1)
        dist2 = (rows - a[0] - t * ab[0]) ** 2 + (cols - a[1] - t * ab[1]) ** 2
        region[r0:r1, c0:c1] |= dist2 <= radius * radius
    if not region.any():
        raise InputError("brush stroke", f"lies outside the {w}×{h} px tile")
    return region


def grow_from_probability(
    probability: np.ndarray, seed_rc: tuple[int, int], threshold: float = 0.5
) -> np.ndarray:
    """The 4-connected region around the seed where the model's probability is ≥ `threshold`.

    One fixed rule (not a tolerance around the seed value), so the same click at the same threshold
    always gives the same region and the threshold reads as on the probability legend. NaN never grows.
    """
    probability = np.asarray(probability, dtype=np.float32)
    if probability.ndim != 2:
        raise InputError("probability", f"must be a (height, width) map, found shape {probability.shape}")
    row, col = (int(v) for v in seed_rc)
    h, w = probability.shape
    if not (0 <= row < h and 0 <= col < w):
        raise InputError("seed", f"({row}, {col}) lies outside the {w}×{h} px tile")
    value = probability[row, col]
    if not value >= threshold:  # also refuses NaN
        raise InputError(
            "seed", f"probability there is {value:.2f}, below the threshold {threshold:.2f}; click inside"
        )
    inside = (probability >= threshold).astype(np.uint8)
    _, labels = cv2.connectedComponents(inside, connectivity=4)
    return labels == labels[row, col]


def seeds(marks: np.ndarray) -> list[tuple[int, int]]:
    """One (row, col) per connected blob of `marks` (e.g. clicks on a canvas): the blob's centre pixel."""
    count, labels, _, centroids = cv2.connectedComponentsWithStats(
        np.asarray(marks, np.uint8), connectivity=8
    )
    h, w = labels.shape
    return [
        (min(h - 1, round(cy)), min(w - 1, round(cx))) for cx, cy in centroids[1:count]
    ]  # fmt: skip


def grabcut(rgb: np.ndarray, rough_region: np.ndarray, iterations: int = 5) -> np.ndarray:
    """OpenCV GrabCut inside a rough outline: outside is sure background, inside probable landslide.

    `rgb` is an (h, w, 3) uint8 tile (already stretched for display). The result never leaves the
    outline. OpenCV's random state is seeded, so the same input gives the same region.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InputError("GrabCut image", f"must be (height, width, 3) uint8, found {rgb.shape} {rgb.dtype}")
    _check_region(rgb[..., 0], rough_region)
    rough_region = np.asarray(rough_region, dtype=bool)
    if not rough_region.any():
        raise InputError("GrabCut outline", "is empty; draw it around the landslide")
    if rough_region.all():
        raise InputError("GrabCut outline", "covers the whole tile; leave some background outside it")
    labels = np.where(rough_region, cv2.GC_PR_FGD, cv2.GC_BGD).astype(np.uint8)
    cv2.setRNGSeed(0)
    cv2.grabCut(
        np.ascontiguousarray(rgb),
        labels,
        None,
        np.zeros((1, 65), np.float64),
        np.zeros((1, 65), np.float64),
        int(iterations),
        cv2.GC_INIT_WITH_MASK,
    )
    return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)


def mask_diff(before: np.ndarray, after: np.ndarray) -> tuple[int, int]:
    """(added, removed) landslide pixels going from `before` to `after`."""
    _check_region(before, after)
    old, new = np.asarray(before) != 0, np.asarray(after) != 0
    return int(np.count_nonzero(new & ~old)), int(np.count_nonzero(old & ~new))


def area_m2(pixels: int, descriptor: SceneDescriptor) -> float | None:
    """Ground area of `pixels` mask pixels; None for images without a CRS.

    Geographic scenes use the pixel size at the scene's centre latitude (engine.io.raster), which is
    exact enough over one scene.
    """
    if descriptor.pixel_size_m is None:
        return None
    sx, sy = descriptor.pixel_size_m
    return float(pixels * sx * sy)


@dataclass(frozen=True)
class _Step:
    """One edit: the bounding box of the pixels it changed and which of them flipped (undo = redo = xor)."""

    y: int
    x: int
    flipped: np.ndarray


class EditSession:
    """A working mask (of a scene, or of the tile at `window`) with undo and redo.

    History keeps only the changed bounding box of each edit, as a boolean flip map, so a brush dab on
    a large scene costs bytes, not a copy of the mask. An edit that changes nothing is not recorded.
    """

    def __init__(self, mask: np.ndarray, parent_id: int | None = None, window: Box | None = None):
        mask = np.asarray(mask)
        if mask.ndim != 2:
            raise InputError("mask", f"must be (height, width), found shape {mask.shape}")
        self.parent_id = parent_id
        self.window = window
        self.start = (mask != 0).astype(np.uint8)
        self.start.flags.writeable = False
        self.mask = self.start.copy()
        self._undo: list[_Step] = []
        self._redo: list[_Step] = []
        self.added_px = 0
        self.removed_px = 0

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def dirty(self) -> bool:
        """The mask differs from the one the session started from."""
        return self.added_px + self.removed_px > 0

    @property
    def history_nbytes(self) -> int:
        return sum(step.flipped.nbytes for step in (*self._undo, *self._redo))

    def edit(self, region: np.ndarray, mode: str) -> int:
        """Add or erase `region`; returns how many pixels changed. A real change clears the redo stack."""
        _check_region(self.mask, region)
        if mode not in MODES:
            raise InputError("edit mode", f"is {mode!r}; use one of {', '.join(MODES)}")
        rows, cols = np.nonzero(np.asarray(region, dtype=bool) & (self.mask == (0 if mode == "add" else 1)))
        if rows.size == 0:
            return 0
        y, x = int(rows.min()), int(cols.min())
        flipped = np.zeros((int(rows.max()) - y + 1, int(cols.max()) - x + 1), dtype=bool)
        flipped[rows - y, cols - x] = True
        step = _Step(y, x, flipped)
        self._toggle(step)
        self._undo.append(step)
        self._redo.clear()
        return int(rows.size)

    def undo(self) -> bool:
        """Take back the last edit; False when there is none."""
        return self._move(self._undo, self._redo)

    def redo(self) -> bool:
        """Re-apply the last undone edit; False when there is none."""
        return self._move(self._redo, self._undo)

    def _move(self, source: list[_Step], target: list[_Step]) -> bool:
        if not source:
            return False
        step = source.pop()
        self._toggle(step)
        target.append(step)
        return True

    def _toggle(self, step: _Step) -> None:
        h, w = step.flipped.shape
        box = np.s_[step.y : step.y + h, step.x : step.x + w]
        added, removed = mask_diff(self.start[box], self.mask[box])
        self.mask[box] ^= step.flipped
        new_added, new_removed = mask_diff(self.start[box], self.mask[box])
        self.added_px += new_added - added
        self.removed_px += new_removed - removed


def _check_region(mask: np.ndarray, region: np.ndarray) -> None:
    mask_shape, region_shape = np.shape(mask), np.shape(region)
    if len(mask_shape) != 2 or mask_shape != region_shape:
        raise InputError("edit", f"region of shape {region_shape} does not match the mask's {mask_shape}")


def check_window(window: Box | None, descriptor: SceneDescriptor) -> Box:
    """The window (y, x, h, w) as ints, the whole scene when None; InputError if it leaves the scene."""
    if window is None:
        return 0, 0, descriptor.height, descriptor.width
    y, x, h, w = (int(v) for v in window)
    if h < 1 or w < 1 or y < 0 or x < 0 or y + h > descriptor.height or x + w > descriptor.width:
        raise InputError(
            "tile", f"window {tuple(window)} lies outside the {descriptor.width}×{descriptor.height} px scene"
        )
    return y, x, h, w
