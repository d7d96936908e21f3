"""`train`: data → model → (distillation phase) → supervised or MRIFE phase → best checkpoint + card.

This is what `python -m engine train` and the app's retrain jobs call.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.devices import pick_device, resolve_precision
from engine.errors import InputError
from engine.models import build_model
from engine.models.checkpoint import load_model, save_model
from engine.training.config import TrainConfig
from engine.training.datasets import FolderDataset, L4SDataset, TrainingView, compute_statistics
from engine.training.loop import (
    PhaseState,
    ProgressCallback,
    batches_per_epoch,
    load_resume_state,
    run_phase,
)
from engine.training.method import Method
from engine.training.supervised import SupervisedMethod, with_paper_defaults

HOLDOUT_EVERY = 5  # without a split file, every 5th sample (sorted by name) validates


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path
    best_miou: float
    best_epoch: int
    epochs_run: int
    history: list[dict[str, Any]]
    resumed_from: int  # epochs already done when this call started (0 for a fresh run)


def open_datasets(data: str | Path, split: str = "val") -> tuple[Any, Any]:
    """(train, validation) datasets from a Bijie-style folder or a Landslide4Sense folder."""
    root = Path(data)
    if (root / "images").is_dir() and (root / "masks").is_dir():
        if (root / "splits.json").is_file():
            return FolderDataset(root, split="train"), FolderDataset(root, split=split)
        ids = FolderDataset(root).ids
        return FolderDataset(root, ids=_train_ids(ids)), FolderDataset(root, ids=_val_ids(ids))
    if (root / "img").is_dir() and (root / "mask").is_dir():
        ids = L4SDataset(root).ids
        return L4SDataset(root, ids=_train_ids(ids)), L4SDataset(root, ids=_val_ids(ids))
    raise InputError(
        root, "is not a training folder: expected images/ + masks/ (Bijie) or img/ + mask/ (L4S)"
    )


def _val_ids(ids: list[str]) -> list[str]:
    return sorted(ids)[::HOLDOUT_EVERY]


def _train_ids(ids: list[str]) -> list[str]:
    held = set(_val_ids(ids))
    return [i for i in sorted(ids) if i not in held]


def train(
    config: TrainConfig,
    data: str | Path | None = None,
    out: str | Path = "model.safetensors",
    *,
    split: str = "val",
    datasets: tuple[Any, Any] | None = None,
    resume: bool = False,
    init: str | Path | None = None,
    progress: ProgressCallback | None = None,
    provenance: dict[str, Any] | None = None,
) -> TrainResult:
    """Train `config.model` and keep the checkpoint with the best validation mIoU at `out`.

    `resume` continues from `<out>.resume.pt` (written after every epoch); `init` fine-tunes from the
    weights of an earlier checkpoint of the same architecture.
    """
    out = Path(out)
    if out.suffix != ".safetensors":
        raise InputError(out, "the output checkpoint must end in .safetensors")
    config = with_paper_defaults(config)
    train_ds, val_ds = datasets if datasets is not None else open_datasets(data, split)
    torch.manual_seed(config.seed)
    if config.normalisation == "dataset":  # a fine-tune keeps the statistics its start was trained with
        mean, std = _card_statistics(init) or compute_statistics(train_ds)
        card_stats = {"mean": tuple(float(v) for v in mean), "std": tuple(float(v) for v in std)}
    else:
        mean = std = None
        card_stats = {}
    train_view = TrainingView(train_ds, config, mean, std, train=True)
    val_view = (
        TrainingView(val_ds, config, mean, std, train=False) if val_ds is not None and len(val_ds) else None
    )

    device = pick_device(config.device)
    dtype = resolve_precision(device, config.precision)
    teacher = None
    options = dict(config.options)
    if config.distill != "none":
        from engine.training.distill import build_teacher

        teacher = build_teacher(config, config.in_channels)
        options.setdefault("teacher_channels", teacher.channels)
    model = build_model(config.model, config.in_channels, **options).to(
        device, memory_format=torch.channels_last
    )
    if init is not None:  # fine-tune: start from an earlier checkpoint's weights
        start, _ = load_model(init)
        model.load_state_dict(start.state_dict())
    state_blob = load_resume_state(out) if resume else None
    if resume and state_blob is None:
        print(f"no resume state at {out.with_suffix('.resume.pt')}; starting from scratch", file=sys.stderr)
    if state_blob is not None:
        model.load_state_dict(state_blob["model"])
    resumed_from = state_blob["state"]["epochs_done"] if state_blob else 0
    steps = batches_per_epoch(train_view, config.batch_size)
    meta = {
        "data": str(data) if data is not None else "custom",
        "split": split,
        "command": _command_line(),
        "commit": _git_commit(),
        "device": str(device),
        "precision": str(dtype).removeprefix("torch."),
        "config": config.to_dict(),
        **(provenance or {}),
    }

    def save_best(record: dict[str, Any]) -> None:
        metrics = {k.removeprefix("val_"): v for k, v in record.items() if k.startswith("val_")}
        wall = sum(r["seconds"] for r in state.history) + record["seconds"]
        provenance = {**meta, "epoch": record["epoch"], "wall_time_s": round(wall, 1)}
        save_model(model, out, provenance=provenance, metrics=metrics, **card_stats)

    phases = [("distill", config.distill_epochs)] if config.distill != "none" else []
    phases.append(("train", config.epochs))
    if state_blob is not None:  # phases before the one that was interrupted are complete
        names = [name for name, _ in phases]
        phases = phases[names.index(state_blob["state"]["phase"]) :]
    history: list[dict[str, Any]] = []
    for phase, epochs in phases:
        state = PhaseState(phase)
        method = _method(phase, model, config, device, dtype, steps, teacher)
        if state_blob is not None:
            state = PhaseState(**state_blob["state"])
            method.load_state_dict(state_blob["method"])
            state_blob = None
        state = run_phase(
            model, method, train_view, val_view, config, out, state,
            epochs=epochs, save_best=save_best if phase == "train" else None, progress=progress,
            validate=phase == "train",
        )  # fmt: skip
        history += [{"phase": phase, **r} for r in state.history]
    if state.best_epoch == 0:
        raise InputError(out, "training produced no validated checkpoint (no validation data?)")
    return TrainResult(out, state.best_miou, state.best_epoch, state.epochs_done, history, resumed_from)


def _card_statistics(checkpoint: str | Path | None) -> tuple[np.ndarray, np.ndarray] | None:
    if checkpoint is None:
        return None
    from engine.models.checkpoint import ModelCard

    card = ModelCard.from_file(Path(checkpoint).with_suffix(".json"))
    if card.mean is None or card.std is None:
        return None
    return np.asarray(card.mean, np.float64), np.asarray(card.std, np.float64)


def _method(phase: str, model: nn.Module, config, device, dtype, steps: int, teacher) -> Method:
    if phase == "distill":
        from engine.training.distill import DistillMethod

        return DistillMethod(model, config, device, dtype, steps, teacher=teacher, mode=config.distill)
    if config.model == "mrife":
        from engine.training.mrife_train import MRIFEMethod

        return MRIFEMethod(model, config, device, dtype, steps)
    return SupervisedMethod(model, config, device, dtype, steps)


def _command_line() -> str:
    """How this run was started, as a person would type it (`python -m engine ...`)."""
    args = sys.argv[1:] if sys.argv and sys.argv[0].endswith("__main__.py") else sys.argv
    return " ".join(["python -m engine", *args] if args is not sys.argv else args)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
