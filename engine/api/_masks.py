"""The Correct page's facade: load a mask version, save edits as new versions, history and revert.

Every save goes through `Workspace.save_mask_version`, so a save on top of a version that is no longer
the latest raises MaskConflictError and writes nothing. Versions are never changed or deleted here: a
revert is a new version that copies an old raster. Whole-scene passes (tile saves, history) stream the
masks block by block, so large scenes are never held whole.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from engine.api._review import _descriptor_of
from engine.editing import EditSession, area_m2, check_window, mask_diff
from engine.errors import InputError
from engine.io.backends import Box
from engine.io.masks import open_mask
from engine.io.scene import SceneDescriptor
from engine.io.writers import raster_writer, write_raster
from engine.store import MaskVersion, Prediction, Workspace

BLOCK = 1024
EDIT_SOURCE = "correction"


@dataclass(frozen=True)
class MaskChange:
    """A mask version with what it changed against its parent (against an empty mask for the first)."""

    version: MaskVersion
    added_px: int
    removed_px: int
    added_m2: float | None
    removed_m2: float | None


def scene_grid(ws: Workspace, scene_id: int) -> SceneDescriptor:
    """The scene's grid (size, CRS, transform) that polygons are rasterized on and masks written to."""
    return _descriptor_of(ws.get_scene(scene_id))


def latest_mask_version(ws: Workspace, scene_id: int) -> MaskVersion | None:
    return ws.latest_mask_version(scene_id)


def list_predictions(ws: Workspace, scene_id: int) -> list[Prediction]:
    """Oldest first."""
    return ws.list_predictions(scene_id)


def load_mask(ws: Workspace, mask_version_id: int, window: Box | None = None) -> np.ndarray:
    """A mask version as (h, w) uint8 0/1: the whole scene, or the tile at `window` (y, x, h, w)."""
    version = ws.get_mask_version(mask_version_id)
    grid = scene_grid(ws, version.scene_id)
    with open_mask(version.raster_path, like=grid) as mask:
        return mask.read(check_window(window, grid))


def open_edit_session(ws: Workspace, scene_id: int, window: Box | None = None) -> EditSession:
    """An EditSession on the scene's latest mask (an empty one if it has none), whole or one tile."""
    grid = scene_grid(ws, scene_id)
    _, _, h, w = check_window(window, grid)
    latest = ws.latest_mask_version(scene_id)
    if latest is None:
        return EditSession(np.zeros((h, w), np.uint8), None, window)
    return EditSession(load_mask(ws, latest.id, window), latest.id, window)


def save_edited_mask(
    ws: Workspace, scene_id: int, mask: np.ndarray, parent_id: int | None, author: str, note: str = ""
) -> MaskVersion:
    """Save a whole-scene mask as a new version on top of `parent_id` (MaskConflictError if stale)."""
    author = _author(author)
    grid = scene_grid(ws, scene_id)
    mask = _binary(mask, (grid.height, grid.width))
    return ws.save_mask_version(
        scene_id,
        lambda target: write_raster(target, mask, grid),
        parent_id=parent_id,
        source=EDIT_SOURCE,
        author=author,
        note=note,
    )


def save_tile_edit(
    ws: Workspace,
    scene_id: int,
    window: Box,
    tile_mask: np.ndarray,
    parent_id: int | None,
    author: str,
    note: str = "",
) -> MaskVersion:
    """Save the parent mask with the tile at `window` (y, x, h, w) replaced, streamed block by block."""
    author = _author(author)
    grid = scene_grid(ws, scene_id)
    ty, tx, th, tw = check_window(window, grid)
    tile = _binary(tile_mask, (th, tw))
    parent = _version_of(ws, scene_id, parent_id)

    def write(target) -> None:
        with raster_writer(target, grid) as out, _open_or_empty(parent, grid) as base:
            for y, x, h, w in _blocks(grid):
                block = base(y, x, h, w)
                y0, y1, x0, x1 = max(y, ty), min(y + h, ty + th), max(x, tx), min(x + w, tx + tw)
                if y0 < y1 and x0 < x1:
                    block[y0 - y : y1 - y, x0 - x : x1 - x] = tile[y0 - ty : y1 - ty, x0 - tx : x1 - tx]
                out.write(y, x, block)

    return ws.save_mask_version(
        scene_id, write, parent_id=parent_id, source=EDIT_SOURCE, author=author, note=note
    )


def mask_history(ws: Workspace, scene_id: int) -> list[MaskChange]:
    """The scene's versions, oldest first, each with pixels and m² added and removed against its parent."""
    grid = scene_grid(ws, scene_id)
    versions = ws.list_mask_versions(scene_id)
    by_id = {v.id: v for v in versions}
    changes = []
    for version in versions:
        added = removed = 0
        with (
            _open_or_empty(version, grid) as after,
            _open_or_empty(by_id.get(version.parent_id), grid) as before,
        ):
            for box in _blocks(grid):
                a, r = mask_diff(before(*box), after(*box))
                added, removed = added + a, removed + r
        changes.append(MaskChange(version, added, removed, area_m2(added, grid), area_m2(removed, grid)))
    return changes


def revert_mask(
    ws: Workspace, scene_id: int, version_id: int, parent_id: int | None, author: str, note: str = ""
) -> MaskVersion:
    """Make `version_id` current again as a NEW version (a copy of its raster) on top of `parent_id`."""
    author = _author(author)
    old = _version_of(ws, scene_id, version_id)
    return ws.save_mask_version(
        scene_id,
        lambda target: shutil.copyfile(old.raster_path, target),
        parent_id=parent_id,
        source=EDIT_SOURCE,
        author=author,
        note=note or f"reverted to version {version_id}",
        suffix=old.raster_path.suffix,
    )


def _author(author: str) -> str:
    author = (author or "").strip()
    if not author:
        raise InputError("author", "is required to save a mask; enter your name in the sidebar")
    return author


def _binary(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A 0/1 uint8 copy of `mask`, refusing another shape or values other than 0 and 1."""
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise InputError("mask", f"has shape {mask.shape}, the scene or tile is {shape}")
    if mask.size and (mask.dtype.kind not in "biu" or mask.min() < 0 or mask.max() > 1):
        raise InputError("mask", "must hold only 0 (background) and 1 (landslide)")
    return mask.astype(np.uint8)


def _version_of(ws: Workspace, scene_id: int, version_id: int | None) -> MaskVersion | None:
    if version_id is None:
        return None
    version = ws.get_mask_version(version_id)
    if version.scene_id != scene_id:
        raise InputError(f"mask version {version_id}", f"belongs to scene {version.scene_id}, not {scene_id}")
    return version


def _blocks(grid: SceneDescriptor) -> Iterator[Box]:
    for y in range(0, grid.height, BLOCK):
        for x in range(0, grid.width, BLOCK):
            yield y, x, min(BLOCK, grid.height - y), min(BLOCK, grid.width - x)


@contextmanager
def _open_or_empty(version: MaskVersion | None, grid: SceneDescriptor) -> Iterator:
    """A block reader (y, x, h, w) → uint8 0/1 for a version's mask, or all zeros for no version."""
    if version is None:
        yield lambda y, x, h, w: np.zeros((h, w), np.uint8)
        return
    with open_mask(version.raster_path, like=grid) as source:
        yield lambda y, x, h, w: source.read((y, x, h, w))


@dataclass(frozen=True)
class TileView:
    """What the tile editor shows: the tile's true colour and the latest prediction's probability."""

    window: Box
    rgb: np.ndarray  # (h, w, 3) uint8, stretched on the tile
    probability: np.ndarray | None  # (h, w) float32, NaN where invalid


def tile_grid(ws: Workspace, scene_id: int, tile: int) -> list[Box]:
    """The scene cut into tile × tile windows (the last row and column smaller), row by row."""
    grid = scene_grid(ws, scene_id)
    return [
        (y, x, min(tile, grid.height - y), min(tile, grid.width - x))
        for y in range(0, grid.height, tile)
        for x in range(0, grid.width, tile)
    ]


def tile_view(ws: Workspace, scene_id: int, window: Box) -> TileView:
    from engine.io.bands import percentile_stretch, resolve_bands
    from engine.io.raster import open_scene

    scene = ws.get_scene(scene_id)
    grid = scene_grid(ws, scene_id)
    window = check_window(window, grid)
    with open_scene(scene.path) as opened:
        data = opened.read_float(window)
        valid = opened.valid(data)
    rgb = np.moveaxis(percentile_stretch(data[list(resolve_bands(grid, "rgb"))], valid), 0, -1)
    predictions = ws.list_predictions(scene_id)
    probability = None
    if predictions:
        with open_scene(predictions[-1].raster_path) as opened:
            probability = opened.read_float(window)[0]
    return TileView(window, np.ascontiguousarray(rgb), probability)


def mask_outlines(ws: Workspace, scene_id: int, mask: np.ndarray) -> dict:
    """GeoJSON outlines (as the review map draws them) of an unsaved mask of the whole scene."""
    import tempfile

    from engine.io.vector import landslide_polygons, to_geojson

    grid = scene_grid(ws, scene_id)
    binary = _binary(mask, (grid.height, grid.width))
    scratch = ws.root / "tmp"
    scratch.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as folder:
        path = write_raster(f"{folder}/working.tif", binary, grid)
        return to_geojson(landslide_polygons(path), grid)
