"""The review queue and the models registry, as the Review and Models pages call them.

Queue items are scenes or tiles ranked by model uncertainty or by the disagreement of two predictions
(engine/review_queue.py explains the scores); reviewers walk them with next/previous and mark each one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling

from engine import review_queue
from engine.api._review import ReviewLayers
from engine.errors import InputError
from engine.store import Activity, ModelVersion, ReviewItem, Workspace


def build_review_queue(
    workspace: Workspace,
    scene_ids: int | Sequence[int],
    method: str = "entropy",
    tile: int | None = 512,
    predictions: Sequence[int] | None = None,
) -> list[ReviewItem]:
    """Rank the scenes (tile=None) or their tiles; statuses already given to the same windows are kept."""
    return review_queue.build_queue(workspace, scene_ids, method, tile, predictions)


def review_items(
    workspace: Workspace, scene_ids: Sequence[int] | None = None, status: str | None = None
) -> list[ReviewItem]:
    """Highest score first; only items in `status` when given."""
    return workspace.review_items(scene_ids, status=status)


def set_review_status(workspace: Workspace, item_id: int, status: str, reviewer: str = "") -> ReviewItem:
    return workspace.set_review_status(item_id, status, reviewer)


def next_review_item(
    workspace: Workspace,
    item_id: int | None,
    scene_ids: Sequence[int] | None = None,
    status: str | None = None,
) -> ReviewItem | None:
    """The item ranked after `item_id` (the first when None) that is in `status`; None at the end."""
    return workspace.adjacent_review_item(item_id, 1, scene_ids=scene_ids, status=status)


def previous_review_item(
    workspace: Workspace,
    item_id: int | None,
    scene_ids: Sequence[int] | None = None,
    status: str | None = None,
) -> ReviewItem | None:
    """The item ranked before `item_id` (the last when None) that is in `status`; None at the start."""
    return workspace.adjacent_review_item(item_id, -1, scene_ids=scene_ids, status=status)


def review_progress(workspace: Workspace, scene_ids: Sequence[int] | None = None) -> dict[str, int]:
    """Items per status (todo, accepted, corrected, rejected) and `total`."""
    return workspace.review_progress(scene_ids)


def list_models(workspace: Workspace) -> list[ModelVersion]:
    """The workspace's model versions, oldest first."""
    return workspace.list_models()


def rename_model(workspace: Workspace, model_id: int, name: str, *, author: str = "") -> ModelVersion:
    return workspace.rename_model(model_id, name, author=author)


def delete_model(workspace: Workspace, model_id: int, *, author: str = "") -> None:
    """Refused (InputError) for the workspace default and for a model others were trained from."""
    workspace.delete_model(model_id, author=author)


def set_default_model(workspace: Workspace, model_id: int | None, *, author: str = "") -> ModelVersion | None:
    return workspace.set_default_model(model_id, author=author)


def activity(workspace: Workspace, limit: int = 100) -> list[Activity]:
    """Who deleted scenes, renamed or deleted models or chose the default, and when; latest first."""
    return workspace.activity(limit)


def default_model(workspace: Workspace) -> ModelVersion | None:
    return workspace.default_model()


@dataclass(frozen=True)
class PredictionComparison:
    """Where two predictions of a scene disagree.

    `path` is a uint8 GeoTIFF in the workspace's tmp/ on the scene's grid (codes AGREE=0, ONLY_A=1,
    ONLY_B=2, NO_DATA=255); `preview` the same codes downsampled (longest side ≤ max_side) for the
    map; `disagreement` the fraction of pixels valid in both whose landslide call differs at 0.5.
    """

    prediction_a: int
    prediction_b: int
    path: Path
    disagreement: float | None
    preview: np.ndarray


def compare_predictions(
    workspace: Workspace, prediction_a: int, prediction_b: int, *, max_side: int = 1024
) -> PredictionComparison:
    a, b = workspace.get_prediction(prediction_a), workspace.get_prediction(prediction_b)
    if a.scene_id != b.scene_id:
        raise InputError(
            f"predictions {a.id} and {b.id}", f"are of scenes {a.scene_id} and {b.scene_id}, not one scene"
        )
    out = workspace.root / "tmp" / f"disagreement_{a.id}_{b.id}.tif"
    whole = review_queue.write_disagreement(a.raster_path, b.raster_path, out)
    with rasterio.open(out) as ds:
        scale = min(1.0, max_side / max(ds.width, ds.height))
        shape = (max(1, round(ds.height * scale)), max(1, round(ds.width * scale)))
        preview = ds.read(1, out_shape=shape, resampling=Resampling.nearest)
    return PredictionComparison(a.id, b.id, out, None if whole is None else whole.score, preview)


DISAGREEMENT_COLOURS = {1: (255, 140, 0), 2: (156, 39, 176)}  # landslide in A only: orange; in B only: purple


def disagreement_layers(
    workspace: Workspace, comparison: PredictionComparison, *, max_side: int = 1024
) -> ReviewLayers:
    """The review map's layers for a comparison: the scene, and where the two predictions disagree."""
    from engine import display
    from engine.api._review import review_layers

    base = review_layers(
        workspace, workspace.get_prediction(comparison.prediction_a).scene_id, max_side=max_side
    )
    overlay = display.category_overlay(comparison.path, DISAGREEMENT_COLOURS, max_side=max_side)
    a, b = (
        workspace.get_prediction(i).model_version for i in (comparison.prediction_a, comparison.prediction_b)
    )
    swatch = (
        '<span style="display:inline-block;width:12px;height:12px;background:rgb{};margin-right:4px"></span>'
    )
    legend = (
        '<div class="scarp-legend" style="background:rgba(255,255,255,0.9);padding:6px 8px;border-radius:4px;'
        'font:12px sans-serif">'
        "<div><b>Disagreement</b></div>"
        f"<div>{swatch.format(DISAGREEMENT_COLOURS[1])}landslide only in {a}</div>"
        f"<div>{swatch.format(DISAGREEMENT_COLOURS[2])}landslide only in {b}</div></div>"
    )
    return replace(
        base, layers={"disagreement": overlay}, probability=None, polygons=None, legend=legend,
        caption=f"{base.scene_name}: {a} vs {b}",
    )  # fmt: skip
