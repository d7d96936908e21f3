"""Where a reviewer should look first: scenes and tiles ranked from prediction probability rasters.

Numpy and rasterio only. Rasters are read one tile window at a time (`Scene.blocks`), so a scene of any
size costs one tile of memory per raster.

- Uncertainty ("entropy"): the mean binary entropy, in bits (0 to 1), of the landslide probability over
  the tile's valid pixels; a tile at p ≈ 0.5 scores 1, a confident one near 0.
- Disagreement ("disagreement"): the fraction of pixels valid in both rasters where the two masks at
  0.5 differ, i.e. the share of the tile whose landslide/background call changes between the two
  predictions. (A mean |p1 − p2| would also rank tiles where both agree on the call with different
  confidence, which is nothing to correct.)

Tiles without a valid pixel are left out: there is nothing to review in them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import InputError
from engine.io.raster import open_scene
from engine.io.scene import Scene
from engine.io.writers import raster_writer
from engine.store import ReviewItem, Workspace

THRESHOLD = 0.5
SCENE_TILE = 1024  # the streaming window of whole-scene passes
TILE_RANGE = (16, 8192)
# Codes of the disagreement raster.
AGREE, ONLY_A, ONLY_B, NO_DATA = 0, 1, 2, 255

Measure = Callable[..., np.ndarray]  # per-pixel score of the valid pixels of each raster


@dataclass(frozen=True)
class TileScore:
    """A window (pixels) of a scene, its score and how many valid pixels the score is the mean of."""

    row: int
    col: int
    height: int
    width: int
    score: float
    valid: int


def _entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-12, 1 - 1e-12)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def _disagreement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a >= THRESHOLD) != (b >= THRESHOLD)


def rank_tiles_by_entropy(probability_path: str | Path, tile: int) -> list[TileScore]:
    """Tiles of `tile` px (smaller at the right and bottom edges), most uncertain first."""
    return _rank(_scan([probability_path], _tile_size(tile), _entropy)[0])


def rank_tiles_by_disagreement(prob_a: str | Path, prob_b: str | Path, tile: int) -> list[TileScore]:
    """Tiles where two predictions of the same scene disagree most first."""
    return _rank(_scan([prob_a, prob_b], _tile_size(tile), _disagreement)[0])


def scene_entropy(probability_path: str | Path) -> TileScore | None:
    """The whole scene as one window; None when it has no valid pixel."""
    return _whole_scene([probability_path], _entropy)


def scene_disagreement(prob_a: str | Path, prob_b: str | Path) -> TileScore | None:
    return _whole_scene([prob_a, prob_b], _disagreement)


def write_disagreement(prob_a: str | Path, prob_b: str | Path, out: str | Path) -> TileScore | None:
    """A uint8 raster on the scene's grid: AGREE, ONLY_A / ONLY_B (landslide in that one only), NO_DATA.

    Returns the whole-scene disagreement computed on the way (None when no pixel is valid in both).
    """
    total = differ = 0
    with ExitStack() as stack:
        a, b = _open_all(stack, [prob_a, prob_b])
        writer = stack.enter_context(raster_writer(out, a.descriptor, 1, "uint8", nodata=NO_DATA))
        for box in a.blocks(SCENE_TILE):
            pa, pb = _probability(a, box), _probability(b, box)
            valid = np.isfinite(pa) & np.isfinite(pb)
            above_a, above_b = pa >= THRESHOLD, pb >= THRESHOLD
            codes = np.where(above_a == above_b, AGREE, np.where(above_a, ONLY_A, ONLY_B)).astype(np.uint8)
            codes[~valid] = NO_DATA
            writer.write(box[0], box[1], codes)
            total += int(valid.sum())
            differ += int((valid & (above_a != above_b)).sum())
        d = a.descriptor
    return TileScore(0, 0, d.height, d.width, differ / total, total) if total else None


def build_queue(
    workspace: Workspace,
    scene_ids: int | Sequence[int],
    method: str = "entropy",
    tile: int | None = 512,
    predictions: Sequence[int] | None = None,
) -> list[ReviewItem]:
    """Score scenes (tile=None: one item per scene) or their tiles and store them as their review queues.

    `predictions` are the ids to score from, each of one of the scenes: one per scene for entropy, two
    for disagreement; a scene none of them belongs to uses its latest one (two). Rebuilding keeps the
    status of every window that is queued again. Returns the stored items, highest score first.
    """
    if method not in ("entropy", "disagreement"):
        raise InputError(f"review method {method!r}", "is not one of entropy, disagreement")
    measure = _entropy if method == "entropy" else _disagreement
    size = SCENE_TILE if tile is None else _tile_size(tile)
    ids = [scene_ids] if isinstance(scene_ids, int) else list(dict.fromkeys(scene_ids))
    chosen = _chosen_predictions(workspace, ids, 2 if method == "disagreement" else 1, predictions)
    items: list[ReviewItem] = []
    for scene_id in ids:
        tiles, height, width = _scan([p.raster_path for p in chosen[scene_id]], size, measure)
        if tile is None:
            whole = _combine(tiles, height, width)
            windows = [] if whole is None else [whole]
        else:
            windows = tiles
        items += workspace.replace_review_items(
            scene_id,
            method,
            [p.id for p in chosen[scene_id]],
            [(t.row, t.col, t.height, t.width, t.score) for t in windows],
        )
    return sorted(items, key=lambda item: (-item.score, item.id))


def _chosen_predictions(workspace: Workspace, scene_ids: list[int], needed: int, given: Sequence[int] | None):
    picked = [workspace.get_prediction(i) for i in dict.fromkeys(given or [])]
    for prediction in picked:
        if prediction.scene_id not in scene_ids:
            raise InputError(
                f"prediction {prediction.id}", f"is of scene {prediction.scene_id}, which is not being queued"
            )
    chosen = {}
    for scene_id in scene_ids:
        mine = [p for p in picked if p.scene_id == scene_id] or workspace.list_predictions(scene_id)[-needed:]
        if len(mine) != needed:
            raise InputError(
                f"scene {scene_id}",
                f"needs {needed} different prediction(s) for this ranking, has {len(mine)}",
            )
        chosen[scene_id] = mine
    return chosen


def _tile_size(tile: int) -> int:
    low, high = TILE_RANGE
    if isinstance(tile, bool) or not isinstance(tile, int) or not low <= tile <= high:
        raise InputError("tile size", f"must be a whole number of pixels from {low} to {high}, got {tile!r}")
    return tile


def _open_all(stack: ExitStack, paths: Sequence[str | Path]) -> list[Scene]:
    """Open probability rasters of one grid: float, and all of the first one's size."""
    scenes = [stack.enter_context(open_scene(path)) for path in paths]
    first = scenes[0].descriptor
    for path, scene in zip(paths, scenes, strict=True):
        d = scene.descriptor
        if np.dtype(d.dtype).kind != "f":
            raise InputError(path, f"is not a probability raster (its pixels are {d.dtype}, not float)")
        if (d.width, d.height) != (first.width, first.height):
            raise InputError(
                path,
                f"is {d.width}×{d.height} px, {paths[0]} is {first.width}×{first.height} px; "
                "compare predictions of the same scene",
            )
    return scenes


def _probability(scene: Scene, box: tuple[int, int, int, int]) -> np.ndarray:
    return scene.read_float(box, bands=[0])[0]


def _scan(paths: Sequence[str | Path], tile: int, measure: Measure) -> tuple[list[TileScore], int, int]:
    """Score every tile with a valid pixel, in row-major order; also the rasters' height and width."""
    scores: list[TileScore] = []
    with ExitStack() as stack:
        scenes = _open_all(stack, paths)
        for box in scenes[0].blocks(tile):
            probabilities = [_probability(scene, box) for scene in scenes]
            valid = np.logical_and.reduce([np.isfinite(p) for p in probabilities])
            count = int(valid.sum())
            if count:
                score = float(np.mean(measure(*(p[valid] for p in probabilities))))
                scores.append(TileScore(*box, score=score, valid=count))
        d = scenes[0].descriptor
    return scores, d.height, d.width


def _rank(tiles: list[TileScore]) -> list[TileScore]:
    return sorted(tiles, key=lambda t: (-t.score, t.row, t.col))


def _combine(tiles: list[TileScore], height: int, width: int) -> TileScore | None:
    """Tile means weighted by their valid pixels: the mean over the whole scene."""
    total = sum(t.valid for t in tiles)
    if not total:
        return None
    return TileScore(0, 0, height, width, sum(t.score * t.valid for t in tiles) / total, total)


def _whole_scene(paths: Sequence[str | Path], measure: Measure) -> TileScore | None:
    return _combine(*_scan(paths, SCENE_TILE, measure))
