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

Training writes its per-epoch resume state into the job's scratch folder. If the worker dies (SIGKILL,
crash) or is shut down, the next worker queues the job again and it continues after the last finished
epoch (`resumed_from` in the result), provided its training data is still the same: the snapshot of
the first attempt is kept beside the checkpoint, and a changed one (a newer correction) starts over.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from engine.errors import InputError
from engine.jobs_core import Commit, JobContext, JobKind, format_duration
from engine.store import Workspace, atomic_write, atomic_write_text
from engine.training.config import FINETUNE_LR, PSEUDO_MODES, finetune_rates

MODES = ("finetune", "pseudo_label")
TRAINING_SOURCES = ("correction", "import")
DEFAULTS: dict[str, Any] = {
    "base": "default",
    "dataset": None,
    "mode": "finetune",
    "pseudo_mode": "threshold",
    "threshold": 0.7,
    "epochs": 5,
    "lr": FINETUNE_LR,
    "batch": 8,
    "size": 256,
    "precision": "auto",
    "val_folder": None,
    "val_split": "val",
    "val_scene_ids": None,
    "name": None,
}
REPORT_EVERY_S = 0.5
CHECKPOINT = "model.safetensors"
RESUME_STATE = "model.resume.pt"  # engine.training.loop.resume_path(CHECKPOINT), named without torch
ATTEMPT = "attempt.json"  # the first attempt's data snapshot and base score, for a resumed run


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
        **finetune_rates(params["lr"]),
        precision=params["precision"],
        patience=max(params["epochs"], 1),
        normalisation="per_image" if card.mean is None else "dataset",
    )
    out = context.scratch / CHECKPOINT
    datasets = (torch.utils.data.ConcatDataset(parts), validation)
    snapshot = {
        "base": start.stem,
        "mode": params["mode"],
        "mask_version_ids": {str(k): v for k, v in corrected.mask_version_ids.items()},
        "dataset": params["dataset"],
        "validation": params["val_folder"] or {"scene_ids": params["val_scene_ids"]},
        **({"pseudo_mode": params["pseudo_mode"], "selected": selected} if selected is not None else {}),
    }
    resume, before = _previous_attempt(context, snapshot)
    if before is None:
        context.report("scoring", f"scoring {start.stem} on the validation set", 0.02)
        before = _short(evaluate_checkpoint(start, dataset=validation, precision=params["precision"]))
        attempt = {"snapshot": snapshot, "before": before}
        atomic_write_text(context.scratch / ATTEMPT, json.dumps(attempt, default=float))
    history: list[dict[str, Any]] = []
    if resume is not None:
        history += [_epoch_entry(r["epoch"], r.get("loss"), r.get("val_miou")) for r in resume["history"]]
        context.report(
            "training", f"resuming after epoch {resume['epochs_done']} of {params['epochs']}",
            0.1 + 0.8 * resume["epochs_done"] / params["epochs"], history=history,
        )  # fmt: skip
    progress = _TrainingProgress(context, history)
    result = train(
        config, None, out, datasets=datasets, init=start, progress=progress, resume=resume is not None,
        provenance={"job": context.job.id, "training_snapshot": snapshot},
    )  # fmt: skip
    context.report("scoring", "scoring the new model on the validation set", 0.92, history=history)
    after = evaluate_checkpoint(out, dataset=validation, precision=params["precision"])
    metrics = {"before": _short(before), "after": _short(after), "best_epoch": result.best_epoch}
    resumed = {"resumed_from": result.resumed_from} if result.resumed_from else {}

    def commit() -> dict[str, Any]:
        name = workspace.free_model_name(params["name"] or f"{start.stem}-ft{context.job.id}")
        target = workspace.root / "models" / f"{_file_stem(name)}-job{context.job.id}.safetensors"
        for source, final in ((out.with_suffix(".json"), target.with_suffix(".json")), (out, target)):
            workspace.remove_on_rollback(final)  # the card and weights go if the registration does not
            _place(source, final)
        model = workspace.add_model(
            name, card.architecture, config.to_dict(), target,
            parent_id=parent_id, training_snapshot=snapshot, metrics=metrics,
        )  # fmt: skip
        return {"model_id": model.id, "name": name, "history": history, **metrics, **resumed}

    return commit


def _place(source: Path, target: Path) -> None:
    """Link (or copy, across file systems) a finished scratch file in; it appears whole or not at all."""
    with atomic_write(target) as tmp:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)


def _previous_attempt(context: JobContext, snapshot: dict[str, Any]) -> tuple[dict[str, Any] | None, Any]:
    """(resume state, base score) left by an interrupted attempt of this job, or (None, None).

    The checkpoint is used only if the training data is what it was trained on; otherwise the job
    starts over (and says so), rather than mix two data sets in one model.
    """
    attempt_file, state_file = context.scratch / ATTEMPT, context.scratch / RESUME_STATE
    try:
        attempt = json.loads(attempt_file.read_text())
    except (OSError, ValueError):
        attempt = None
    same_data = isinstance(attempt, dict) and attempt.get("snapshot") == json.loads(
        json.dumps(snapshot, default=float)
    )
    if not same_data:
        if attempt is not None or state_file.exists():
            context.report("loading", "the training data changed since the interruption; starting over", 0.02)
        attempt_file.unlink(missing_ok=True)
        state_file.unlink(missing_ok=True)
        return None, None
    if not state_file.is_file():
        return None, attempt.get("before")
    from engine.training.loop import load_resume_state

    try:
        state = load_resume_state(context.scratch / CHECKPOINT)
    except InputError:  # unreadable (it is written atomically, so only a damaged disk does this)
        context.report("loading", "the training checkpoint is unreadable; starting over", 0.02)
        state_file.unlink(missing_ok=True)
        return None, attempt.get("before")
    return (state["state"] if state else None), attempt.get("before")


def _resumable(scratch: Path) -> bool:
    """A train job can continue once it has written the resume state of its first epoch."""
    return (scratch / RESUME_STATE).is_file() and (scratch / ATTEMPT).is_file()


def _epoch_entry(epoch: int, loss: Any, val_miou: Any) -> dict[str, Any]:
    return {"epoch": epoch, "loss": loss, "val_miou": val_miou}


class _TrainingProgress:
    """Training progress as job reports: a line with epoch, step, loss and ETA; history per epoch."""

    def __init__(self, context: JobContext, history: list[dict[str, Any]]):
        self.context = context
        self.history = history
        self.last = float("-inf")

    def __call__(self, p) -> None:
        if p.metrics is not None:
            self.history.append(_epoch_entry(p.epoch, p.losses.get("loss"), p.metrics.get("val_miou")))
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


TRAIN = JobKind("train", prepare, run, describe, resumable=_resumable)
