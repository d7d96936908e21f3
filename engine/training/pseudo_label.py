"""Pseudo-label rounds (the Landslide4Sense 2022 winners' self-training).

One round: the teacher predicts the unlabelled pool; confident pixels become labels (threshold,
top-λ %, or Monte-Carlo-dropout uncertainty with class balance); human-corrected masks override them;
the student is fine-tuned from the teacher on labelled + pseudo-labelled data, validated, and
registered as a new model version whose parent is the teacher. The next round's teacher is that
student, and the threshold tightens round by round.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.errors import InputError
from engine.models.checkpoint import load_model
from engine.store import Workspace
from engine.training.config import PSEUDO_MODES
from engine.training.datasets import Labeled, UnlabeledPool
from engine.training.method import IGNORE
from engine.training.pseudo_select import (
    mc_dropout_probabilities,
    merge_with_human,
    refine_threshold,
    select_mc_dropout,
    select_threshold,
    select_top_percent,
)
from engine.training.studies import finished, run_once


@dataclass(frozen=True)
class PseudoLabelRound:
    teacher: Path
    labeled: Path
    unlabeled: Path
    mode: str = "threshold"
    threshold: float = 0.7
    percent: float = 50.0
    split: str = "val"


@dataclass(frozen=True)
class RoundResult:
    index: int
    checkpoint: Path
    miou: float
    selected: float  # fraction of pool pixels that received a pseudo-label
    model_id: int | None


def _normalise(image: np.ndarray, mean, std) -> torch.Tensor:
    if mean is None:
        valid = np.isfinite(image).all(axis=0)
        values = image[:, valid]
        mean = values.mean(axis=1) if values.size else np.zeros(image.shape[0])
        std = values.std(axis=1) if values.size else np.ones(image.shape[0])
    mean = np.asarray(mean, np.float32)[:, None, None]
    std = np.maximum(np.asarray(std, np.float32), 1e-6)[:, None, None]
    return torch.from_numpy(np.nan_to_num((image - mean) / std, nan=0.0).astype(np.float32))[None]


def pseudo_labels(
    checkpoint: Path,
    pool: UnlabeledPool,
    mode: str,
    threshold: float,
    percent: float,
    human: dict[Any, np.ndarray] | None = None,
) -> tuple[dict[Any, np.ndarray], float]:
    """Labels for every pool item (IGNORE where not confident) and the fraction of pixels labelled.

    `human` maps pool keys to a reviewer's masks (IGNORE where not reviewed); they always win.
    """
    model, card = load_model(checkpoint)
    labels: dict[Any, np.ndarray] = {}
    probabilities: dict[Any, np.ndarray] = {}
    with torch.inference_mode():
        for key, image in pool.items():
            x = _normalise(image, card.mean, card.std)
            if mode == "mc_dropout":
                mean, variance = mc_dropout_probabilities(model, x)
                labels[key] = np.asarray(select_mc_dropout(mean[0], variance[0]))
            else:
                probabilities[key] = torch.softmax(model(x).float(), dim=1)[0, 1].numpy()
    if mode == "threshold":
        labels = {k: np.asarray(select_threshold(p, threshold)) for k, p in probabilities.items()}
    elif mode == "top_percent" and probabilities:  # the λ % most confident pixels of the whole pool
        flat = np.concatenate([p.ravel() for p in probabilities.values()])[None]
        selected = np.asarray(select_top_percent(flat, percent))[0]
        start = 0
        for key, p in probabilities.items():
            labels[key] = selected[start : start + p.size].reshape(p.shape)
            start += p.size
    elif mode != "mc_dropout":
        raise InputError(f"--mode {mode}", f"use one of {', '.join(PSEUDO_MODES)}")
    for key, mask in (human or {}).items():
        if key in labels:
            labels[key] = np.asarray(merge_with_human(labels[key], mask))
    total = sum(m.size for m in labels.values())
    chosen = sum(int((m != IGNORE).sum()) for m in labels.values())
    return labels, chosen / total if total else 0.0


def run_rounds(
    plan: PseudoLabelRound,
    *,
    rounds: int,
    out_dir: Path,
    workspace: Workspace | None,
    args,
    progress=None,
) -> list[RoundResult]:
    from engine.cli_train import config_from_args
    from engine.training.train import open_datasets, train

    if rounds < 1:
        raise InputError("--rounds", f"must be ≥ 1, got {rounds}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labeled_train, labeled_val = open_datasets(plan.labeled, plan.split)
    pool = UnlabeledPool.from_folder(plan.unlabeled)
    teacher = Path(plan.teacher)
    parent_id = _register_base(workspace, teacher)
    results = []
    for index in range(1, rounds + 1):
        student = out_dir / f"round_{index}.safetensors"
        done = finished(student)  # a rerun of the same command skips finished rounds
        if done is not None:
            results.append(RoundResult(index, student, done["miou"], done.get("selected", 0.0), None))
            teacher = student
            continue
        threshold = refine_threshold(plan.threshold, index - 1)
        labels, selected = pseudo_labels(teacher, pool, plan.mode, threshold, plan.percent)
        _, card = load_model(teacher)
        config = config_from_args(args, card.in_channels, card.architecture).replace(options=card.options)
        datasets = (torch.utils.data.ConcatDataset([labeled_train, Labeled(pool, labels)]), labeled_val)
        snapshot = {
            "labeled": str(plan.labeled),
            "unlabeled": str(plan.unlabeled),
            "mode": plan.mode,
            "threshold": threshold,
            "percent": plan.percent,
            "round": index,
            "selected": selected,
        }
        record = run_once(
            student,
            lambda resume, c=config, d=datasets, t=teacher, s=snapshot, out=student: train(
                c, plan.labeled, out, split=plan.split, datasets=d, init=t, resume=resume,
                progress=progress, provenance={"pseudo_label": s, "teacher": str(t)},
            ),
            extra={"selected": selected},
        )  # fmt: skip
        model_id = None
        if workspace is not None:
            _, trained = load_model(student)
            name = workspace.free_model_name(f"{Path(plan.teacher).stem}-pl{index}")
            registered = workspace.add_model(
                name, card.architecture, config.to_dict(), student,
                parent_id=parent_id, training_snapshot=snapshot, metrics=trained.metrics,
            )  # fmt: skip
            model_id = parent_id = registered.id
        results.append(RoundResult(index, student, record["miou"], selected, model_id))
        teacher = student
    return results


def _register_base(workspace: Workspace | None, checkpoint: Path) -> int | None:
    """The round-1 teacher, registered once so every round has a parent to point at."""
    if workspace is None:
        return None
    for model in workspace.list_models():
        if Path(model.checkpoint_path).resolve() == checkpoint.resolve():
            return model.id
    _, card = load_model(checkpoint)
    name = workspace.free_model_name(checkpoint.stem)
    return workspace.add_model(
        name, card.architecture, {"options": card.options}, checkpoint, metrics=card.metrics
    ).id
