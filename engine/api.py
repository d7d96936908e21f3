"""The facade the app and the CLI call: workspaces, scene import, evaluation.

Heavier pieces (models, inference, training) join here as they are built; the app never reaches past
this module into the engine's internals.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from engine.errors import InputError, ScarpError
from engine.io.masks import open_mask, read_mask
from engine.io.raster import HDF5_SUFFIXES, SCENE_SUFFIXES, describe, open_scene
from engine.io.writers import write_raster
from engine.metrics import ConfusionMatrix
from engine.store import MaskVersion, Scene, Workspace

__all__ = ["ImportResult", "describe", "evaluate_masks", "import_path", "import_scene", "open_workspace"]


def default_workspace_path() -> Path:
    """`$SCARP_WORKSPACE`, or `./workspace` in the current folder."""
    return Path(os.environ.get("SCARP_WORKSPACE") or "workspace").expanduser()


def open_workspace(path: str | Path | None = None) -> Workspace:
    return Workspace.open(Path(path) if path is not None else default_workspace_path())


@dataclass(frozen=True)
class ImportResult:
    scene: Scene
    mask_version: MaskVersion | None
    already_present: bool


def import_scene(
    workspace: Workspace, path: str | Path, *, mask: str | Path | None = None, copy: bool = True
) -> ImportResult:
    """Check a scene (and its mask) completely, then record it; nothing is recorded if any check fails.

    A Landslide4Sense HDF5 file that carries a `mask` brings it along as the first mask version. A file
    that is already in the workspace (same checksum) is not imported twice.
    """
    path = Path(path)
    with open_scene(path) as scene:
        scene.check_has_data()
        descriptor = scene.descriptor
    mask_path = Path(mask) if mask is not None else _embedded_mask(path)
    mask_array = read_mask(mask_path, like=descriptor) if mask_path is not None else None
    before = {s.id for s in workspace.list_scenes()}
    record = workspace.add_scene(path, descriptor.to_dict(), copy=copy)
    if record.id in before:
        return ImportResult(record, workspace.latest_mask_version(record.id), already_present=True)
    version = None
    if mask_array is not None:
        version = workspace.save_mask_version(
            record.id,
            lambda target: write_raster(target, mask_array, descriptor),
            parent_id=None,
            source="import",
            note=f"imported from {mask_path.name}",
        )
    return ImportResult(record, version, already_present=False)


def _embedded_mask(path: Path) -> Path | None:
    if path.suffix.lower() not in HDF5_SUFFIXES:
        return None
    import h5py

    with h5py.File(path, "r") as file:
        return path if "mask" in file else None


def import_path(
    workspace: Workspace, path: str | Path, *, mask: str | Path | None = None, copy: bool = True
) -> Iterator[ImportResult | ScarpError]:
    """Import one file, or every supported file of a folder; a bad file is reported and the rest go on."""
    path = Path(path)
    if not path.is_dir():
        yield import_scene(workspace, path, mask=mask, copy=copy)
        return
    if mask is not None:
        raise InputError(path, "--mask goes with a single image, not a folder")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SCENE_SUFFIXES)
    if not files:
        raise InputError(path, f"holds no images ({', '.join(SCENE_SUFFIXES)})")
    for file in files:
        try:
            yield import_scene(workspace, file, copy=copy)
        except ScarpError as exc:
            yield exc


def evaluate_masks(pred: str | Path, truth: str | Path) -> dict:
    """Metrics of predicted masks against true ones: two files, or two folders of same-named masks.

    Files pair up by name without extension, so `ls_0001.tif` is scored against `ls_0001.png`. Masks are
    read block by block, so large scenes are scored in bounded memory.
    """
    pairs = _mask_pairs(Path(pred), Path(truth))
    matrix = ConfusionMatrix()
    for pred_path, truth_path in pairs:
        with open_mask(truth_path) as truth_mask, open_mask(pred_path) as pred_mask:
            if (pred_mask.height, pred_mask.width) != (truth_mask.height, truth_mask.width):
                raise InputError(
                    pred_path,
                    f"is {pred_mask.width}×{pred_mask.height} px but {truth_path.name} is "
                    f"{truth_mask.width}×{truth_mask.height} px",
                )
            for box in truth_mask.blocks():
                matrix.update(pred_mask.read(box), truth_mask.read(box))
    return {"images": len(pairs), **matrix.to_json_dict()}


def _mask_pairs(pred: Path, truth: Path) -> list[tuple[Path, Path]]:
    for path in (pred, truth):
        if not path.exists():
            raise InputError(path, "not found")
    if pred.is_dir() != truth.is_dir():
        raise InputError(pred, "give two files or two folders, not one of each")
    if not pred.is_dir():
        return [(pred, truth)]
    preds, truths = _masks_by_stem(pred), _masks_by_stem(truth)
    missing = sorted(set(truths) - set(preds))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise InputError(pred, f"has no prediction for {len(missing)} of {len(truths)} true masks: {shown}")
    if not truths:
        raise InputError(truth, "holds no masks")
    return [(preds[stem], truths[stem]) for stem in sorted(truths)]


def _masks_by_stem(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in SCENE_SUFFIXES:
            if path.stem in found:
                raise InputError(path, f"two masks share the name {path.stem!r} ({found[path.stem].name})")
            found[path.stem] = path
    return found


# --- jobs -------------------------------------------------------------------------------------------
# Long work runs in the workspace's worker process (see engine/jobs.py); these calls only touch the
# databases, so they return at once. engine.jobs is imported on use to keep `import engine.api` light.

from typing import TYPE_CHECKING, Any  # noqa: E402 (kept with the section it serves)

from engine.store import Job  # noqa: E402

if TYPE_CHECKING:
    from engine.jobs import JobReport, WorkerStatus

__all__ += [
    "cancel_job",
    "ensure_worker",
    "job_report",
    "job_status",
    "list_jobs",
    "retry_job",
    "submit_prediction",
    "worker_status",
]


def submit_prediction(workspace: Workspace, scene_id: int, model: str = "default", **options: Any) -> Job:
    """Queue a prediction of a scene; options: tile, overlap, batch, tta, device, precision, threshold.

    When it succeeds the job's result names the new prediction and its mask version (`job_report`).
    """
    from engine import jobs

    return jobs.submit(workspace, "predict", {"scene_id": scene_id, "model": model, **options})


def cancel_job(workspace: Workspace, job_id: int) -> Job:
    """Takes effect at once; a running job stops at its next progress report and saves nothing."""
    from engine import jobs

    return jobs.cancel_job(workspace, job_id)


def retry_job(workspace: Workspace, job_id: int) -> Job:
    """A new job with the same parameters as a failed or cancelled one (e.g. after a worker crash)."""
    from engine import jobs

    return jobs.retry_job(workspace, job_id)


def job_status(workspace: Workspace, job_id: int) -> Job:
    """Read from the workspace database, so every tab and session sees the same state."""
    return workspace.get_job(job_id)


def list_jobs(workspace: Workspace, status: str | None = None) -> list[Job]:
    """Oldest first; `status` narrows to queued, running, succeeded, failed or cancelled."""
    return workspace.list_jobs(status)


def job_report(job: Job) -> JobReport:
    """Stage, one-line text, ETA and result of a job, decoded from its row."""
    from engine import jobs

    return jobs.job_report(job)


def ensure_worker(workspace: Workspace) -> int:
    """The pid of the workspace's job worker, started if none is alive; cheap enough for every rerun."""
    from engine import jobs

    return jobs.ensure_worker(workspace.root)


def worker_status(workspace: Workspace) -> WorkerStatus:
    """Whether a worker serves the workspace, its pid, last heartbeat and current job; starts nothing."""
    from engine import jobs

    return jobs.worker_status(workspace.root)


# --- scenes -----------------------------------------------------------------------------------------
# What the Home, Scenes and Predict pages need beyond import: scene facts for a list, thumbnails, browser
# uploads, the model menu and the one-click demo. Plain functions, so they are tested without streamlit.

import shutil  # noqa: E402 (kept with the section it serves)
import uuid  # noqa: E402

import numpy as np  # noqa: E402

from engine.store import safe_filename  # noqa: E402

__all__ += [
    "DEMO_LINKS",
    "DEMO_SCENE",
    "DemoStart",
    "ModelChoice",
    "SceneInfo",
    "band_presets",
    "delete_scene",
    "find_demo_dir",
    "import_upload",
    "list_scenes",
    "mask_version_count",
    "model_choices",
    "prediction_defaults",
    "scene_info",
    "scene_thumbnail",
    "try_demo",
    "workspace_summary",
]

DEMO_SCENE = "iburi_s2/post_event_S2_RGB_B4B3B2.tif"
DEMO_LINKS = {
    "pre_event": "iburi_s2/pre_event_S2_RGB_B4B3B2.tif",
    "dem": "iburi_s2/dsm.tif",
    "slope": "iburi_s2/slope.tif",
    "hillshade": "iburi_s2/hillshade.tif",
}


@dataclass(frozen=True)
class SceneInfo:
    """The facts a scene list shows, read from the stored descriptor (no pixels are opened)."""

    id: int
    name: str
    width: int
    height: int
    bands: tuple[str, ...]
    dtype: str
    crs: str | None
    resolution_m: tuple[float, float] | None
    lonlat_bounds: tuple[float, float, float, float] | None


def list_scenes(workspace: Workspace) -> list[Scene]:
    return workspace.list_scenes()


def scene_info(scene: Scene) -> SceneInfo:
    d = scene.descriptor
    resolution = d.get("pixel_size_m")
    bounds = d.get("lonlat_bounds")
    return SceneInfo(
        id=scene.id,
        name=scene.name,
        width=int(d["width"]),
        height=int(d["height"]),
        bands=tuple(d.get("band_names") or ()),
        dtype=str(d.get("dtype", "")),
        crs=d.get("crs"),
        resolution_m=None if resolution is None else (float(resolution[0]), float(resolution[1])),
        lonlat_bounds=None if bounds is None else tuple(float(v) for v in bounds),  # type: ignore[arg-type]
    )


def band_presets() -> tuple[str, ...]:
    from engine.io.bands import PRESETS

    return PRESETS


def scene_thumbnail(
    workspace: Workspace,
    scene_id: int,
    *,
    bands: str | tuple[int, ...] = "rgb",
    low: float = 2.0,
    high: float = 98.0,
    max_side: int = 256,
) -> np.ndarray:
    """An (h, w, 3) uint8 preview; read decimated, so a list of large scenes stays quick."""
    from engine.io.bands import thumbnail

    scene = workspace.get_scene(scene_id)
    with open_scene(scene.path) as opened:
        return thumbnail(opened, max_side=max_side, bands=bands, low=low, high=high)


def import_upload(workspace: Workspace, filename: str, data: bytes) -> ImportResult:
    """Import bytes a browser sent: written under tmp/ with a harmless name, checked, copied in, removed.

    The temp file sits in its own folder so the scene keeps the uploaded file's (sanitised) name.
    """
    folder = workspace.root / "tmp" / f"upload-{uuid.uuid4().hex}"
    target = folder / safe_filename(filename, fallback="upload")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        target.write_bytes(data)
        return import_scene(workspace, target, copy=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def mask_version_count(workspace: Workspace, scene_id: int) -> int:
    """Asked before a delete, so the page can name what would be lost."""
    return len(workspace.list_mask_versions(scene_id))


def delete_scene(workspace: Workspace, scene_id: int, *, drop_masks: bool = False) -> None:
    """Refused (ScarpError) when the scene has mask versions and drop_masks is not asked for."""
    workspace.delete_scene(scene_id, drop_masks=drop_masks)


def workspace_summary(workspace: Workspace) -> dict[str, int]:
    return workspace.summary()


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model menu: what people read, and the spec a prediction job takes."""

    label: str
    spec: str
    kind: str  # default, shipped, workspace, random


def model_choices(workspace: Workspace, *, random_weights: bool = True) -> list[ModelChoice]:
    """The default first, then shipped and workspace models; bare architectures last (test only).

    Listing architectures imports torch (a second or two), so callers that do not need them can skip it.
    """
    from engine.models.shipped import default_name, shipped_names

    default = default_name()
    choices = [
        ModelChoice(f"default ({default})" if default else "default (none shipped yet)", "default", "default")
    ]
    choices += [ModelChoice(f"{name} (shipped)", name, "shipped") for name in shipped_names()]
    choices += [
        ModelChoice(f"{m.name} (workspace, {m.architecture})", str(m.checkpoint_path), "workspace")
        for m in workspace.list_models()
    ]
    if random_weights:
        from engine.models import ARCHITECTURES

        choices += [
            ModelChoice(f"{name} — random weights (test only)", name, "random") for name in ARCHITECTURES
        ]
    return choices


def prediction_defaults() -> dict[str, Any]:
    from engine.jobs_predict import DEFAULTS

    return dict(DEFAULTS)


@dataclass(frozen=True)
class DemoStart:
    """The demo's post-event scene, the layers linked to it (role → scene id) and its prediction job."""

    scene_id: int
    job_id: int
    links: dict[str, int]
    reused_job: bool


def find_demo_dir(demo_dir: str | Path | None = None) -> Path | None:
    """`demo_dir`, `$SCARP_DEMO_DIR` or ../shared/data beside the repository, if it holds the Iburi scene."""
    beside_repo = Path(__file__).resolve().parents[2] / "shared" / "data"
    candidates = [demo_dir, os.environ.get("SCARP_DEMO_DIR"), beside_repo]
    for candidate in candidates:
        if candidate and (Path(candidate).expanduser() / DEMO_SCENE).is_file():
            return Path(candidate).expanduser()
    return None


def try_demo(workspace: Workspace, demo_dir: str | Path | None = None) -> DemoStart:
    """Import the Iburi 2018 scene with its pre-event image and terrain, link them, and queue a prediction.

    Idempotent: files already imported are reused (same checksum), and a prediction of the scene that is
    still queued or running is returned instead of queueing another.
    """
    folder = find_demo_dir(demo_dir)
    if folder is None:
        where = demo_dir or os.environ.get("SCARP_DEMO_DIR") or "../shared/data"
        raise InputError(where, f"does not hold the demo scene {DEMO_SCENE}")
    post = import_scene(workspace, folder / DEMO_SCENE).scene
    links: dict[str, int] = {}
    for role, relative in DEMO_LINKS.items():
        layer = import_scene(workspace, folder / relative).scene
        link_scene(workspace, post.id, role, layer.id)
        links[role] = layer.id
    pending = [
        job
        for job in workspace.list_jobs()
        if job.kind == "predict" and not job.done and job.params.get("scene_id") == post.id
    ]
    if pending:
        return DemoStart(post.id, pending[-1].id, links, reused_job=True)
    job = submit_prediction(workspace, post.id, model="default")
    return DemoStart(post.id, job.id, links, reused_job=False)


# --- review -----------------------------------------------------------------------------------------
# The Review map: scene links (auxiliary layers) and the overlays, polygons and caption of one scene.
# Everything here is a pure function of workspace ids, so the page can cache it by those ids.

from engine.store.links import LINK_ROLES  # noqa: E402 (kept with the section it serves)

__all__ += ["LINK_ROLES", "link_scene", "scene_links", "unlink_scene"]


def link_scene(workspace: Workspace, scene_id: int, role: str, other_id: int) -> Scene:
    """Make `other_id` the scene's `role` layer (pre_event, dem, slope, hillshade), replacing any before."""
    return workspace.link_scene(scene_id, role, other_id)


def unlink_scene(workspace: Workspace, scene_id: int, role: str) -> bool:
    return workspace.unlink_scene(scene_id, role)


def scene_links(workspace: Workspace, scene_id: int) -> dict[str, Scene]:
    return workspace.scene_links(scene_id)


from engine.store import Prediction  # noqa: E402

__all__ += ["ReviewChoices", "ReviewLayers", "review_choices", "review_layers"]

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
    from engine.io.raster import SceneDescriptor

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
        parts.append(f"{count} landslide{'' if count == 1 else 's'}")
        if area is not None:
            parts.append(f"{area / 1e6:.3f} km²" if area >= 1e5 else f"{area:,.0f} m²")
    return " · ".join(parts)


# --- end of review ---------------------------------------------------------------------------------
