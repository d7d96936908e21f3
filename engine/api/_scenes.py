"""What the Home, Scenes and Predict pages need beyond import: scene facts for a list, thumbnails,
browser uploads, the model menu and the one-click demo. Plain functions, tested without streamlit."""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.api._core import ImportResult, import_scene
from engine.api._jobs import submit_prediction
from engine.api._review import link_scene
from engine.errors import InputError, ScarpError, printable
from engine.io.raster import open_scene
from engine.store import Scene, Workspace, safe_filename

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


def import_upload(workspace: Workspace, filename: str | bytes, data: bytes) -> ImportResult:
    """Import bytes a browser sent: written under tmp/ with a harmless name, checked, copied in, removed.

    The name is the user's, so it is only a hint: directory parts, NUL, control and non-ASCII characters
    are dropped (`safe_filename`), and nothing is written unless the workspace folders it goes to lie
    inside the workspace. The temp file sits in its own folder so the scene keeps the (sanitised) name.
    Errors name the file as it was uploaded, never the temp path.
    """
    shown = (os.fsdecode(filename) if isinstance(filename, bytes) else str(filename)).strip() or "(no name)"
    _check_inside(workspace, "tmp", "scenes")
    folder = workspace.root / "tmp" / f"upload-{uuid.uuid4().hex}"
    target = folder / safe_filename(shown, fallback="upload")
    try:
        folder.mkdir(parents=True)
        target.write_bytes(data)
    except OSError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise ScarpError(
            f"{printable(shown)}: could not be saved for checking ({exc.strerror or exc})"
        ) from exc
    try:
        return import_scene(workspace, target, copy=True)
    except InputError as exc:
        if exc.source != str(target):
            raise
        problem = exc.problem.replace(f"{folder}{os.sep}", "")
        raise InputError(shown, problem) from exc
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _check_inside(workspace: Workspace, *folders: str) -> None:
    """Refuse to write through a workspace folder that is a link to somewhere else."""
    root = workspace.root.resolve()
    for name in folders:
        real = (workspace.root / name).resolve()
        if not real.is_relative_to(root):
            raise InputError(
                workspace.root / name, f"leads outside the workspace (to {real}); nothing was written"
            )


def mask_version_count(workspace: Workspace, scene_id: int) -> int:
    """Asked before a delete, so the page can name what would be lost."""
    return len(workspace.list_mask_versions(scene_id))


def delete_scene(workspace: Workspace, scene_id: int, *, drop_masks: bool = False, author: str = "") -> None:
    """Refused (ScarpError) when the scene has mask versions and drop_masks is not asked for."""
    workspace.delete_scene(scene_id, drop_masks=drop_masks, author=author)


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

    chosen = workspace.default_model()
    default = chosen.name if chosen is not None else default_name()
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


@dataclass(frozen=True)
class ShippedModel:
    """A checkpoint in assets/models/ as its card describes it."""

    name: str
    architecture: str
    val_miou: float | None
    data: str | None


def shipped_models() -> list[ShippedModel]:
    """The shipped checkpoints with their architecture, validation mIoU and training data."""
    from engine.models.checkpoint import ModelCard
    from engine.models.shipped import ASSETS, shipped_names

    models = []
    for name in shipped_names():
        card = ModelCard.from_file(ASSETS / f"{name}.json")
        data = card.provenance.get("data")
        split = card.provenance.get("split")
        models.append(
            ShippedModel(
                name,
                card.architecture,
                card.metrics.get("miou"),
                f"{data} · {split}" if data and split else data,
            )
        )
    return models


def base_model_choices(workspace: Workspace) -> list[ModelChoice]:
    """What training can start from: the default and shipped models, then the workspace's versions
    (by id, so the new version records its parent); newest workspace versions first."""
    choices = [c for c in model_choices(workspace, random_weights=False) if c.kind != "workspace"]
    return choices + [
        ModelChoice(f"{m.name} (workspace, {m.architecture})", str(m.id), "workspace")
        for m in reversed(workspace.list_models())
    ]


def trainable_scenes(workspace: Workspace) -> list[Scene]:
    """Scenes whose latest mask a person made (a correction, or an imported reference mask)."""
    from engine.jobs_train import TRAINING_SOURCES

    return [
        s for s in workspace.list_scenes()
        if (latest := workspace.latest_mask_version(s.id)) is not None and latest.source in TRAINING_SOURCES
    ]  # fmt: skip


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
    beside_repo = Path(__file__).resolve().parents[3] / "shared" / "data"  # engine/api/ → repo → its parent
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
