"""k-fold cross-validation, for datasets too small for a fixed split (the 21 Landslide4Sense pairs).

Each fold trains on the other folds and keeps its best checkpoint; the folds' validation confusion
matrices are summed, so the pooled metrics cover every sample exactly once. The all-background
baseline (predict no landslide anywhere) is scored on the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import InputError
from engine.metrics import ConfusionMatrix
from engine.training.config import TrainConfig
from engine.training.datasets import FolderDataset, L4SDataset
from engine.training.evaluate import evaluate_checkpoint
from engine.training.method import IGNORE
from engine.training.train import train


@dataclass(frozen=True)
class KFoldResult:
    folds: list[dict[str, Any]]
    pooled: dict[str, Any]
    all_background: dict[str, Any]
    checkpoints: list[Path]


def kfold(
    config: TrainConfig, data: str | Path, out_dir: str | Path, folds: int = 5, progress=None
) -> KFoldResult:
    root = Path(data)
    kind = L4SDataset if (root / "img").is_dir() else FolderDataset
    ids = sorted(kind(root).ids)
    if not 2 <= folds <= len(ids):
        raise InputError("--folds", f"must be between 2 and the {len(ids)} samples, got {folds}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pooled, background = ConfusionMatrix(), ConfusionMatrix()
    rows, checkpoints = [], []
    for k in range(folds):
        val_ids = ids[k::folds]
        train_ids = [i for i in ids if i not in set(val_ids)]
        val = kind(root, ids=val_ids)
        checkpoint = out_dir / f"fold{k + 1}.safetensors"
        result = train(config, root, checkpoint, datasets=(kind(root, ids=train_ids), val), progress=progress,
                       provenance={"fold": k + 1, "folds": folds, "val_ids": val_ids})  # fmt: skip
        metrics = evaluate_checkpoint(checkpoint, dataset=val, precision="fp32")
        pooled.merge(ConfusionMatrix.from_counts(metrics["tp"], metrics["fp"], metrics["fn"], metrics["tn"]))
        for i in range(len(val)):
            mask = val[i][1]
            valid = mask != IGNORE
            background.update(np.zeros_like(mask), np.where(valid, mask, 0), valid)
        rows.append({"fold": k + 1, "val_ids": val_ids, "best_epoch": result.best_epoch, **metrics})
        checkpoints.append(checkpoint)
    return KFoldResult(rows, pooled.to_json_dict(), background.to_json_dict(), checkpoints)
