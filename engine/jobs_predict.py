"""The `predict` job: map landslides on a workspace scene, then record the prediction and its mask.

The rasters are written to the job's scratch folder first; only the commit (under the commit lock, after
a last cancellation check) hands them to the store: the probability raster as a prediction, then the
mask as a new mask version (source "prediction") on top of the scene's latest version at that moment.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from engine.errors import InputError
from engine.jobs_core import Commit, JobContext, JobKind, format_duration
from engine.store import MaskConflictError, MaskVersion, Workspace, Writer

# The same defaults as engine.inference.PredictOptions, repeated so the app can submit without torch.
DEFAULTS: dict[str, Any] = {
    "model": "default",
    "tile": 512,
    "overlap": 64,
    "batch": 4,
    "tta": False,
    "crf": False,
    "device": "auto",
    "precision": "auto",
    "threshold": 0.5,
}
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
MASK_SAVE_ATTEMPTS = 3


def prepare(workspace: Workspace, params: dict[str, Any]) -> dict[str, Any]:
    """Complete and check the options; the scene must exist now, the model is resolved by the worker."""
    unknown = sorted(set(params) - {"scene_id", *DEFAULTS})
    if unknown:
        raise InputError(
            "prediction options", f"unknown option {', '.join(unknown)}; use {', '.join(DEFAULTS)}"
        )
    if params.get("scene_id") is None:
        raise InputError("prediction", "needs the id of the scene to map")
    scene = workspace.get_scene(_integer(params["scene_id"], "scene_id", 1))
    merged = {**DEFAULTS, **{k: v for k, v in params.items() if v is not None}}
    tile = _integer(merged["tile"], "tile", 16, 8192)
    for flag in ("tta", "crf"):
        if not isinstance(merged[flag], bool):
            raise InputError(flag, f"must be true or false, got {merged[flag]!r}")
    threshold = merged["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold < 1:
        raise InputError("threshold", f"must be a probability between 0 and 1, got {threshold!r}")
    for name, choices in (("device", DEVICES), ("precision", PRECISIONS)):
        if merged[name] not in choices:
            raise InputError(name, f"must be one of {', '.join(choices)}, got {merged[name]!r}")
    return {
        "scene_id": scene.id,
        "model": _model_spec(_workspace_default(workspace, merged["model"])),
        "tile": tile,
        "overlap": _integer(merged["overlap"], "overlap", 0, tile - 1),
        "batch": _integer(merged["batch"], "batch", 1, 256),
        "tta": merged["tta"],
        "crf": merged["crf"],
        "device": merged["device"],
        "precision": merged["precision"],
        "threshold": float(threshold),
    }


def _integer(value: Any, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(name, f"must be a whole number, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise InputError(name, f"must be {bounds}, got {value}")
    return value


def _workspace_default(workspace: Workspace, spec: Any) -> Any:
    """`default` means the workspace's default version when one is set, else the shipped default."""
    if spec != "default":
        return spec
    chosen = workspace.default_model()
    return str(chosen.checkpoint_path) if chosen is not None else spec


def _model_spec(spec: Any) -> str:
    """Make relative checkpoint paths absolute: the worker runs in another folder than the caller."""
    if not isinstance(spec, str) or not spec.strip(" ,"):
        raise InputError(
            "model", f"must name a model (a checkpoint, a shipped name or `default`), got {spec!r}"
        )
    items = []
    for item in (part.strip() for part in spec.split(",")):
        path = Path(item).expanduser()
        if item and not path.is_absolute() and path.exists():
            item = str(path.resolve())
        if item:
            items.append(item)
    return ",".join(items)


def run(context: JobContext) -> Commit:
    params = context.job.params
    context.report("loading", f"loading {params['model']} and the scene statistics", 0.0)
    from engine.inference import PredictOptions, predict_scene  # torch: seconds, so after the report

    workspace = context.workspace
    scene = workspace.get_scene(params["scene_id"])
    options = PredictOptions(
        tile=params["tile"],
        overlap=params["overlap"],
        batch=params["batch"],
        device=params["device"],
        precision=params["precision"],
        tta=params["tta"],
        threshold=params["threshold"],
        crf=params.get("crf", False),
    )
    mask_file = context.scratch / "mask.tif"
    probability_file = context.scratch / "probabilities.tif"
    summary = predict_scene(
        params["model"],
        scene.path,
        mask_file,
        probability_file,
        options,
        context.counter("predicting", "tiles"),
    )
    models = ", ".join(summary.models)
    facts = {
        "tiles": summary.tiles,
        "seconds": round(summary.seconds, 2),
        "device": summary.device,
        "precision": summary.precision,
        "landslide_fraction": summary.landslide_fraction,
        "models": models,
    }

    def commit() -> dict[str, Any]:
        prediction = workspace.add_prediction(
            scene.id, models, {**params, **facts, "job_id": context.job.id}, _linked(probability_file)
        )
        extras = "".join(
            label for label, on in ((", TTA", params["tta"]), (", DenseCRF", params.get("crf"))) if on
        )
        note = f"{models}; tile {params['tile']}, overlap {params['overlap']}{extras}"
        mask = _save_mask(workspace, scene.id, mask_file, prediction.id, f"job {context.job.id}", note)
        return {
            "scene_id": scene.id,
            "prediction_id": prediction.id,
            "mask_version_id": mask.id,
            "parent_id": mask.parent_id,
            **facts,
        }

    return commit


def _linked(source: Path) -> Writer:
    """A store writer that links the finished scratch raster in (copying across file systems).

    A link, not a move: if the save is refused (a newer mask appeared meanwhile) the scratch file is
    still there for the next attempt.
    """

    def write(target: Path) -> None:
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)

    return write


def _save_mask(
    workspace: Workspace, scene_id: int, mask_file: Path, prediction_id: int, author: str, note: str
) -> MaskVersion:
    """On top of whatever is latest now: a reviewer may have saved a correction while the model ran."""
    for attempt in range(MASK_SAVE_ATTEMPTS):
        latest = workspace.latest_mask_version(scene_id)
        try:
            return workspace.save_mask_version(
                scene_id,
                _linked(mask_file),
                parent_id=None if latest is None else latest.id,
                source="prediction",
                prediction_id=prediction_id,
                author=author,
                note=note,
            )
        except MaskConflictError:
            if attempt == MASK_SAVE_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def describe(result: dict[str, Any]) -> str:
    tiles = f"{result['tiles']} tile" + ("" if result["tiles"] == 1 else "s")
    return (
        f"prediction {result['prediction_id']} and mask version {result['mask_version_id']}: "
        f"{result['landslide_fraction']:.1%} landslide, {tiles} in "
        f"{format_duration(result['seconds'])} on {result['device']}"
    )


PREDICT = JobKind("predict", prepare, run, describe)
