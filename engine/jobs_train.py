"""The `train` job: fine-tune a model (or run one pseudo-label round) on the scenes a reviewer corrected.

Parameters (checked by `prepare` in the submitting process):
- `base`: the model to start from: a registry model id, a shipped model name, `default`, or a path;
- `scene_ids`: the training scenes; each one's latest mask version must be a correction or an import;
- `dataset`: optionally, a labelled folder (images/ + masks/ [+ splits.json]) whose train split joins;
- `mode`: `finetune`, or `pseudo_label` (with `pseudo_mode` and `threshold`): the base model labels the
  workspace scenes that have no reviewed mask, and those confident pixels join the training data;
- `epochs`, `lr`, `batch`, `size`, `precision`;
- the fixed validation set: `val_folder` (+ `val_split`), or `val_scene_ids`.

The job scores the base model on the validation set, trains, scores the result, and registers the new
model version with its parent, the mask versions it learned from, and both scores. The message of a
running job carries `history` (one entry per epoch: loss and validation mIoU) for a live chart.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

from engine.errors import InputError
from engine.jobs_core import Commit, JobContext, JobKind, format_duration
from engine.store import Workspace

MODES = ("finetune", "pseudo_label")
PSEUDO_MODES = ("threshold", "top_percent", "mc_dropout")
TRAINING_SOURCES = ("correction", "import")
DEFAULTS: dict[str, Any] = {
    "base": "default",
    "dataset": None,
    "mode": "finetune",
    "pseudo_mode": "threshold",
    "threshold": 0.7,
    "epochs": 5,
    "lr": 1e-4,
    "batch": 8,
    "size": 256,
    "precision": "auto",
    "val_folder": None,
    "val_split": "val",
    "val_scene_ids": None,
    "name": None,
}
REPORT_EVERY_S = 0.5


def prepare(workspace: Workspace, params: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(params) - {"scene_ids", *DEFAULTS})
    if unknown:
        raise InputError(
            "training options", f"unknown option {', '.join(unknown)}; use {', '.join(DEFAULTS)}"
        )
    merged = {**DEFAULTS, **{k: v for k, v in params.items() if v is not None}}
    scene_ids = _ids(params.get("scene_ids"), "scene_ids")
    if not scene_ids:
        raise InputError("training", "needs at least one corrected scene")
    for scene_id in scene_ids:
        latest = workspace.latest_mask_version(workspace.get_scene(scene_id).id)
        if latest is None or latest.source not in TRAINING_SOURCES:
            shown = "no mask" if latest is None else f"a {latest.source} as its latest mask"
            raise InputError(f"scene {scene_id}", f"has {shown}: correct it (or import its mask) first")
    if merged["mode"] not in MODES:
        raise InputError("mode", f"must be one of {', '.join(MODES)}, got {merged['mode']!r}")
    if merged["pseudo_mode"] not in PSEUDO_MODES:
        raise InputError("pseudo_mode", f"must be one of {', '.join(PSEUDO_MODES)}")
    epochs = merged["epochs"]
    if isinstance(epochs, bool) or not isinstance(epochs, int) or not 1 <= epochs <= 500:
        raise InputError("epochs", f"must be a whole number from 1 to 500, got {epochs!r}")
    for folder in ("dataset", "val_folder"):
        if merged[folder] is not None:
            path = Path(merged[folder]).expanduser().resolve()
            if not path.is_dir():
                raise InputError(path, "is not a folder")
            merged[folder] = str(path)
    val_scenes = _ids(merged["val_scene_ids"], "val_scene_ids")
    if merged["val_folder"] is None and not val_scenes:
        raise InputError("validation", "choose a validation folder (e.g. Bijie val) or accepted scenes")
    for scene_id in val_scenes:
        workspace.get_scene(scene_id)
    merged["base"] = _base(workspace, merged["base"])
    return {**merged, "scene_ids": scene_ids, "val_scene_ids": val_scenes or None}


def _ids(value: Any, name: str) -> list[int]:
    if value is None:
        return []
    if not isinstance(value, list | tuple) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise InputError(name, f"must be a list of ids, got {value!r}")
    return [int(v) for v in value]


def _base(workspace: Workspace, base: Any) -> str:
    """A registry id stays an id (as text); anything else must resolve to an existing checkpoint now."""
    from engine.models.shipped import resolve_checkpoint

    text = str(base)
    if text.isdigit():
        workspace.get_model(int(text))
        return text
    path = resolve_checkpoint(text)
    if not path.is_file():
        raise InputError(text, "is neither a model id, a shipped model, `default` nor a checkpoint file")
    return str(path.resolve())


def base_checkpoint(workspace: Workspace, base: str) -> tuple[Path, int | None]:
    """The checkpoint to start from, and its registry id when it is a registered version."""
    if base.isdigit():
        model = workspace.get_model(int(base))
        return Path(model.checkpoint_path), model.id
    return Path(base), None


def run(context: JobContext) -> Commit:
    params = context.job.params
    context.report("loading", "reading the training scenes", 0.0)
    import torch  # the worker pays for torch only when it trains

    from engine.models.checkpoint import load_model
    from engine.training.config import TrainConfig
    from engine.training.datasets import FolderDataset, WorkspaceTiles
    from engine.training.evaluate import evaluate_checkpoint
    from engine.training.train import open_datasets, train

    workspace = context.workspace
    start, parent_id = base_checkpoint(workspace, params["base"])
    _, card = load_model(start)
    corrected = WorkspaceTiles(
        workspace, params["scene_ids"], tile=max(params["size"], 256), sources=TRAINING_SOURCES
    )
    if len(corrected) == 0:
        raise InputError("training scenes", f"give no tiles: {corrected.skipped}")
    parts: list[Any] = [corrected]
    if params["dataset"]:
        parts.append(open_datasets(params["dataset"])[0])
    if params["val_folder"]:
        validation = FolderDataset(params["val_folder"], split=params["val_split"])
    else:
        validation = WorkspaceTiles(
            workspace, params["val_scene_ids"], tile=512, sources=(*TRAINING_SOURCES, "prediction")
        )
    context.report("scoring", f"scoring {start.stem} on the validation set", 0.02)
    before = evaluate_checkpoint(start, dataset=validation, precision=params["precision"])
    selected = None
    if params["mode"] == "pseudo_label":
        context.report("pseudo-labelling", "the base model labels the unreviewed scenes", 0.06)
        pool_labels, selected = _pseudo_labels(workspace, start, params, set(params["scene_ids"]))
        if pool_labels is not None:
            parts.append(pool_labels)
    config = TrainConfig(
        model=card.architecture,
        in_channels=card.in_channels,
        options=card.options,
        epochs=params["epochs"],
        batch_size=params["batch"],
        size=params["size"],
        lr=params["lr"],
        backbone_lr=params["lr"],
        lr_end=params["lr"] / 100,
        backbone_lr_end=params["lr"] / 100,
        precision=params["precision"],
        patience=max(params["epochs"], 1),
        normalisation="per_image" if card.mean is None else "dataset",
    )
    out = context.scratch / "model.safetensors"
    history: list[dict[str, Any]] = []
    progress = _TrainingProgress(context, history)
    datasets = (torch.utils.data.ConcatDataset(parts), validation)
    snapshot = {
        "base": start.stem,
        "mode": params["mode"],
        "mask_version_ids": {str(k): v for k, v in corrected.mask_version_ids.items()},
        "dataset": params["dataset"],
        "validation": params["val_folder"] or {"scene_ids": params["val_scene_ids"]},
        **({"pseudo_mode": params["pseudo_mode"], "selected": selected} if selected is not None else {}),
    }
    result = train(
        config, None, out, datasets=datasets, init=start, progress=progress,
        provenance={"job": context.job.id, "training_snapshot": snapshot},
    )  # fmt: skip
    context.report("scoring", "scoring the new model on the validation set", 0.92, history=history)
    after = evaluate_checkpoint(out, dataset=validation, precision=params["precision"])
    metrics = {"before": _short(before), "after": _short(after), "best_epoch": result.best_epoch}

    def commit() -> dict[str, Any]:
        name = workspace.free_model_name(params["name"] or f"{start.stem}-ft{context.job.id}")
        target = workspace.root / "models" / f"{_file_stem(name)}-job{context.job.id}.safetensors"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out.with_suffix(".json"), target.with_suffix(".json"))
        shutil.copyfile(out, target)
        model = workspace.add_model(
            name, card.architecture, config.to_dict(), target,
            parent_id=parent_id, training_snapshot=snapshot, metrics=metrics,
        )  # fmt: skip
        return {"model_id": model.id, "name": name, "history": history, **metrics}

    return commit


class _TrainingProgress:
    """Training progress as job reports: a line with epoch, step, loss and ETA; history per epoch."""

    def __init__(self, context: JobContext, history: list[dict[str, Any]]):
        self.context = context
        self.history = history
        self.last = float("-inf")

    def __call__(self, p) -> None:
        if p.metrics is not None:
            self.history.append(
                {"epoch": p.epoch, "loss": p.losses.get("loss"), "val_miou": p.metrics.get("val_miou")}
            )
        elif time.monotonic() - self.last < REPORT_EVERY_S:
            self.context.check()
            return
        self.last = time.monotonic()
        done = ((p.epoch - 1) * p.steps + p.step) / max(1, p.epochs * p.steps)
        text = f"{p.phase} epoch {p.epoch}/{p.epochs}, step {p.step}/{p.steps}"
        if "loss" in p.losses:
            text += f", loss {p.losses['loss']:.3f}"
        if p.eta_s > 0:
            text += f", ETA {format_duration(p.eta_s)}"
        self.context.report("training", text, 0.1 + 0.8 * done, history=self.history)


def _pseudo_labels(workspace: Workspace, checkpoint: Path, params: dict[str, Any], reviewed: set[int]):
    """The workspace scenes nobody reviewed, labelled by the base model where it is confident."""
    from engine.training.datasets import Labeled, UnlabeledPool
    from engine.training.pseudo_label import pseudo_labels

    unreviewed = [
        s.id for s in workspace.list_scenes()
        if s.id not in reviewed and (workspace.latest_mask_version(s.id) is None
                                     or workspace.latest_mask_version(s.id).source == "prediction")
    ]  # fmt: skip
    if not unreviewed:
        return None, 0.0
    pool = UnlabeledPool.from_workspace(workspace, unreviewed)
    labels, selected = pseudo_labels(checkpoint, pool, params["pseudo_mode"], params["threshold"], 50.0)
    return Labeled(pool, labels), selected


def _short(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: metrics[k] for k in ("miou", "iou", "f1", "precision", "recall", "oa") if k in metrics}


def _file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


def describe(result: dict[str, Any]) -> str:
    before, after = result["before"].get("miou"), result["after"].get("miou")
    return (
        f"model {result['name']} (id {result['model_id']}): validation mIoU {before:.3f} → {after:.3f}, "
        f"best epoch {result['best_epoch']}"
    )


TRAIN = JobKind("train", prepare, run, describe)
