"""Score a checkpoint on labelled data: a training folder's split, or a folder of images + masks."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.crf import CrfParams, refine
from engine.devices import pick_device, resolve_precision
from engine.errors import InputError
from engine.inference import landslide_probability
from engine.metrics import ConfusionMatrix
from engine.models.checkpoint import load_model
from engine.models.shipped import resolve_checkpoint
from engine.training.config import TrainConfig
from engine.training.datasets import FolderDataset, TrainingView, make_loader
from engine.training.loop import evaluate
from engine.training.method import IGNORE


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    data: str | Path | None = None,
    split: str = "val",
    images: str | Path | None = None,
    masks: str | Path | None = None,
    device: str = "auto",
    precision: str = "auto",
    dataset: Any = None,
    crf: CrfParams | None = None,
    tta: bool = False,
) -> dict[str, Any]:
    """Metrics JSON (as `evaluate --pred/--truth` prints) of the model's argmax masks, whole images;
    with `tta`, of the mean probability over the four flips; with `crf`, of the masks after DenseCRF
    post-processing."""
    model, card = load_model(resolve_checkpoint(checkpoint))
    if dataset is None:
        dataset = _dataset(data, split, images, masks)
    torch_device = pick_device(device)
    dtype = resolve_precision(torch_device, precision)
    per_image = card.mean is None
    config = TrainConfig(
        model=card.architecture,
        in_channels=card.in_channels,
        normalisation="per_image" if per_image else "dataset",
    )
    view = TrainingView(dataset, config, card.mean, card.std, train=False)
    model.to(torch_device, memory_format=torch.channels_last)
    loader = make_loader(view, 1, False, 0, 0, 0)
    if crf is None and not tta:
        matrix = evaluate(model, loader, torch_device, dtype)
    else:
        matrix = _evaluate_post_processed(model, loader, torch_device, dtype, crf, tta)
    result = {"model": str(checkpoint), "images": len(dataset), **matrix.to_json_dict()}
    return result | ({"crf": asdict(crf)} if crf is not None else {}) | ({"tta": True} if tta else {})


@torch.inference_mode()
def _evaluate_post_processed(
    model, loader, device, dtype, crf: CrfParams | None, tta: bool
) -> ConfusionMatrix:
    model.eval()
    matrix = ConfusionMatrix()
    for batch in loader:
        batch = batch.to(device)
        probability = landslide_probability(model, batch.image, device, dtype, tta).cpu().numpy()
        images = batch.image.float().cpu().numpy()
        masks = batch.mask.cpu().numpy()
        for p, image, mask in zip(probability, images, masks, strict=True):
            refined = refine(p, image, crf) if crf is not None else p
            pred = (refined >= 0.5).astype(np.int64)
            valid = mask != IGNORE
            matrix.update(pred[None], np.where(valid, mask, 0)[None], valid[None])
    return matrix


def _dataset(data, split: str, images, masks):
    if data is not None:
        from engine.training.train import open_datasets

        return open_datasets(data, split)[1]
    if images is None or masks is None:
        raise InputError("evaluate", "give --data DIR [--split val], or --images DIR with --masks DIR")
    return FolderDataset.from_folders(Path(images), Path(masks))
