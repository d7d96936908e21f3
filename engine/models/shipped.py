"""The checkpoints shipped in assets/models/, and which of them is the default.

`assets/models/index.json` names the default (`{"default": "kda_student_bijie"}`); every
`<name>.safetensors` there has its `<name>.json` card beside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import InputError

if TYPE_CHECKING:
    from engine.models.checkpoint import ModelCard

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "models"
INDEX = ASSETS / "index.json"


def shipped_names() -> list[str]:
    return sorted(p.stem for p in ASSETS.glob("*.safetensors")) if ASSETS.is_dir() else []


def default_name() -> str | None:
    if not INDEX.is_file():
        return None
    name = json.loads(INDEX.read_text()).get("default")
    return name if name in shipped_names() else None


def resolve_checkpoint(spec: str | Path) -> Path:
    """A checkpoint path from a path, a shipped model's name, or `default`."""
    text = str(spec)
    if text == "default":
        name = default_name()
        if name is None:
            raise InputError("default", f"no default model is shipped in {ASSETS} (see its index.json)")
        return ASSETS / f"{name}.safetensors"
    if text in shipped_names():
        return ASSETS / f"{text}.safetensors"
    return Path(spec)


MAX_SHIPPED_BYTES = 25_000_000  # what the repository keeps per checkpoint


def ship(
    checkpoint: str | Path,
    name: str,
    bijie: Path,
    *,
    make_default: bool = False,
    kfold_summary: Path | None = None,
    max_bytes: int = MAX_SHIPPED_BYTES,
) -> Path:
    """Copy a trained checkpoint into assets/models/ under `name`, with a 20-image check score.

    The parts only training uses (a distillation adapter, MRIFE's student) are left out (the card's
    `provenance.left_out` names them); weights that would still pass `max_bytes` are stored in fp16
    (`provenance.stored_as` says so; loading casts them back). The card keeps the training
    provenance and gains `metrics.val20_miou`: the mIoU of the stored file on the first 20 Bijie
    `val` images, which the test suite recomputes to catch a broken export. Nothing appears in
    assets/models/ until the stored file has been scored.
    """
    import dataclasses
    import os
    import tempfile

    from engine.models.checkpoint import ModelCard, card_path
    from engine.store.files import atomic_write_text
    from engine.training.evaluate import evaluate_checkpoint

    source = Path(checkpoint)
    card = ModelCard.from_file(card_path(source))
    metrics, provenance = dict(card.metrics), dict(card.provenance)
    ASSETS.mkdir(parents=True, exist_ok=True)
    target = ASSETS / f"{name}.safetensors"
    with tempfile.TemporaryDirectory(dir=ASSETS, prefix=".ship-") as scratch:
        staged = Path(scratch) / target.name
        provenance.update(_write_inference_weights(source, staged, card, max_bytes))
        atomic_write_text(card_path(staged), card.to_json())
        if card.in_channels == 3:
            score = evaluate_checkpoint(staged, dataset=check_dataset(bijie), precision="fp32")
            metrics["val20_miou"] = score["miou"]
        if kfold_summary is not None:  # cross-validated figures for models trained on tiny datasets
            summary = json.loads(Path(kfold_summary).read_text())
            metrics["kfold_pooled"] = summary["pooled"]
            metrics["kfold_all_background"] = summary["all_background"]
        if (size := staged.stat().st_size) > max_bytes:
            raise InputError(
                source,
                f"is {size / 1e6:.1f} MB even in fp16; shipped models stay under {max_bytes / 1e6:.0f} MB",
            )
        os.chmod(staged, 0o644)  # readable like the rest of the repository (a temp file is private)
        os.replace(staged, target)
    shipped = dataclasses.replace(card, metrics=metrics, provenance=provenance)
    atomic_write_text(card_path(target), shipped.to_json())
    if make_default:
        atomic_write_text(INDEX, json.dumps({"default": name}, indent=2) + "\n")
    return target


def _write_inference_weights(source: Path, target: Path, card: ModelCard, max_bytes: int) -> dict[str, Any]:
    """The tensors a prediction needs, in fp16 where fp32 would pass `max_bytes`; returns what the card's
    provenance should say about the difference from `source`."""
    import safetensors.torch
    import torch

    from engine.models import build_model
    from engine.models.common import training_only

    try:
        tensors = safetensors.torch.load_file(str(source))
    except (safetensors.SafetensorError, OSError) as exc:
        raise InputError(source, f"weights are not readable ({str(exc).splitlines()[0]})") from exc
    drop = training_only(build_model(card.architecture, card.in_channels, card.num_classes, **card.options))
    kept = {k: v for k, v in tensors.items() if not k.startswith(drop)}
    notes: dict[str, Any] = {"left_out": list(drop)} if len(kept) < len(tensors) else {}
    if sum(v.numel() * v.element_size() for v in kept.values()) > max_bytes:
        # every fp32 tensor as fp16, unless it holds values past fp16's range (e.g. a large BatchNorm
        # variance); integer buffers stay as they are
        fp16_max = torch.finfo(torch.float16).max
        kept = {
            k: v.half() if v.dtype == torch.float32 and (v.numel() == 0 or v.abs().max() <= fp16_max) else v
            for k, v in kept.items()
        }
        notes["stored_as"] = "fp16"
    safetensors.torch.save_file(kept, str(target))
    return notes


def check_dataset(bijie: Path):
    """The first 20 ids of Bijie `val`: small enough for CI, fixed so scores are comparable."""
    from engine.training.datasets import FolderDataset

    ids = json.loads((bijie / "splits.json").read_text())["val"][:20]
    return FolderDataset(bijie, ids=ids)
