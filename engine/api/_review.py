"""The Review map: scene links (auxiliary layers) and the overlays, polygons and caption of one scene.
Everything here is a pure function of workspace ids, so the page can cache it by those ids."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import InputError, ScarpError
from engine.io.raster import describe
from engine.store import MaskVersion, Prediction, Scene, Workspace


def link_scene(workspace: Workspace, scene_id: int, role: str, other_id: int) -> Scene:
    """Make `other_id` the scene's `role` layer (pre_event, dem, slope, hillshade), replacing any before."""
    return workspace.link_scene(scene_id, role, other_id)


def unlink_scene(workspace: Workspace, scene_id: int, role: str) -> bool:
    return workspace.unlink_scene(scene_id, role)


def scene_links(workspace: Workspace, scene_id: int) -> dict[str, Scene]:
    return workspace.scene_links(scene_id)


# Linked roles drawn on the review map, with how each is coloured; the DEM is reached through its slope.
_LINKED_LAYERS = {"pre_event": "scene", "hillshade": "gray", "slope": "slope"}


@dataclass(frozen=True)
class ReviewChoices:
    """What the review page offers to pick from; the lists are newest first."""

    scenes: list[Scene]
    predictions: list[Prediction]
    mask_versions: list[MaskVersion]


def review_choices(workspace: Workspace, scene_id: int | None = None) -> ReviewChoices:
    scenes = workspace.list_scenes()
    if scene_id is None:
        return ReviewChoices(scenes, [], [])
    predictions = workspace.list_predictions(scene_id)[::-1]
    return ReviewChoices(scenes, predictions, workspace.list_mask_versions(scene_id)[::-1])


def latest_predicted_scene(workspace: Workspace) -> int | None:
    """The scene of the newest prediction: where a reviewer most likely wants to look next."""
    latest = [(p.id, s.id) for s in workspace.list_scenes() for p in workspace.list_predictions(s.id)[-1:]]
    return max(latest)[1] if latest else None


@dataclass(frozen=True)
class ReviewLayers:
    """Everything the review map draws for one scene; picklable, so a page can cache it by ids.

    `crs` is "EPSG:4326" (bounds and GeoJSON in lon/lat) or "pixel" (Leaflet CRS.Simple, see
    engine.display). `layers` holds the linked layers by role, in drawing order.
    """

    scene_id: int
    scene_name: str
    crs: str
    bounds: tuple[tuple[float, float], tuple[float, float]]
    scene: Any  # engine.display.Overlay
    layers: dict[str, Any]
    probability: Any | None
    legend: str | None
    prediction_id: int | None
    model: str | None
    mask_version_id: int | None
    polygons: dict | None
    landslides: int
    total_area_m2: float | None
    caption: str
    headline: str  # the one-line summary a presentation shows: scene · model · landslides · area
    notes: tuple[str, ...] = ()


def review_layers(
    workspace: Workspace,
    scene_id: int,
    *,
    prediction_id: int | None = None,
    mask_version_id: int | None = None,
    max_side: int = 1024,
) -> ReviewLayers:
    """Overlays, polygons and a caption for a scene; the latest prediction and mask version unless given.

    Without a given prediction, the one the mask version came from wins, then the newest one. A linked
    layer in a different kind of space (pixel vs. lon/lat) than the scene is skipped with a note.
    """
    from engine import display
    from engine.io.vector import landslide_polygons, to_geojson

    scene = workspace.get_scene(scene_id)
    mask = _review_mask(workspace, scene_id, mask_version_id)
    prediction = _review_prediction(workspace, scene_id, prediction_id, mask)
    base = display.scene_overlay(scene.path, max_side=max_side)
    links = workspace.scene_links(scene_id)
    layers: dict[str, Any] = {}
    notes: list[str] = []
    for role, style in _LINKED_LAYERS.items():
        if role not in links:
            continue
        path = links[role].path
        try:
            if style == "scene":
                overlay = display.scene_overlay(path, max_side=max_side)
            else:
                overlay = display.single_band_overlay(path, style, max_side=max_side)
        except ScarpError as exc:
            notes.append(f"{role} layer not shown: {exc}")
            continue
        if overlay.crs != base.crs:
            notes.append(f"{role} layer not shown: it is in {overlay.crs} space, the scene in {base.crs}")
            continue
        layers[role] = overlay
    probability = (
        display.probability_overlay(prediction.raster_path, max_side=max_side) if prediction else None
    )
    polygons, count, area = None, 0, None
    if mask is not None:
        slope = links["slope"].path if "slope" in layers else None
        slides = landslide_polygons(
            mask.raster_path,
            probability_path=prediction.raster_path if prediction else None,
            slope_path=slope,
        )
        descriptor = _descriptor_of(scene)
        polygons, count = to_geojson(slides, descriptor), len(slides)
        areas = [s.area_m2 for s in slides if s.area_m2 is not None]
        area = sum(areas) if descriptor.georeferenced else None
    return ReviewLayers(
        scene_id=scene.id,
        scene_name=scene.name,
        crs=base.crs,
        bounds=base.bounds,
        scene=base,
        layers=layers,
        probability=probability,
        legend=display.legend_html() if probability is not None else None,
        prediction_id=prediction.id if prediction else None,
        model=prediction.model_version if prediction else None,
        mask_version_id=mask.id if mask else None,
        polygons=polygons,
        landslides=count,
        total_area_m2=area,
        caption=_review_caption(scene.name, prediction, mask, count, area),
        headline=_headline(scene.name, prediction, mask, count, area),
        notes=tuple(notes),
    )


def _review_mask(workspace: Workspace, scene_id: int, mask_version_id: int | None) -> MaskVersion | None:
    if mask_version_id is None:
        return workspace.latest_mask_version(scene_id)
    mask = workspace.get_mask_version(mask_version_id)
    if mask.scene_id != scene_id:
        raise InputError(
            f"mask version {mask_version_id}", f"belongs to scene {mask.scene_id}, not {scene_id}"
        )
    return mask


def _review_prediction(
    workspace: Workspace, scene_id: int, prediction_id: int | None, mask: MaskVersion | None
) -> Prediction | None:
    if prediction_id is None and mask is not None and mask.prediction_id is not None:
        prediction_id = mask.prediction_id
    if prediction_id is None:
        predictions = workspace.list_predictions(scene_id)
        return predictions[-1] if predictions else None
    prediction = workspace.get_prediction(prediction_id)
    if prediction.scene_id != scene_id:
        raise InputError(
            f"prediction {prediction_id}", f"belongs to scene {prediction.scene_id}, not {scene_id}"
        )
    return prediction


def _descriptor_of(scene: Scene):
    """The stored descriptor when complete, else a fresh look at the file (older or hand-made rows)."""
    from engine.io.scene import SceneDescriptor

    try:
        return SceneDescriptor.from_dict(scene.descriptor)
    except TypeError:
        return describe(scene.path)


def _review_caption(
    name: str, prediction: Prediction | None, mask: MaskVersion | None, count: int, area: float | None
) -> str:
    parts = [name]
    parts.append(f"model {prediction.model_version}" if prediction else "no prediction yet")
    if mask is None:
        parts.append("no mask yet")
    else:
        parts.append(f"mask v{mask.id} ({mask.source})")
        parts += _landslide_summary(count, area)
    return " · ".join(parts)


def _headline(
    name: str, prediction: Prediction | None, mask: MaskVersion | None, count: int, area: float | None
) -> str:
    parts = [Path(name).stem, prediction.model_version if prediction else "no prediction yet"]
    return " · ".join(parts + (_landslide_summary(count, area) if mask is not None else ["no mask yet"]))


def _landslide_summary(count: int, area: float | None) -> list[str]:
    parts = [f"{count} landslide{'' if count == 1 else 's'}"]
    if area is not None:
        parts.append(f"{area / 1e6:.3f} km²" if area >= 1e5 else f"{area:,.0f} m²")
    return parts
