"""Checkpoints: weights in `.safetensors`, everything else in a JSON card beside them.

The card holds what rebuilding and using the model needs (architecture, options, band count,
normalisation statistics, class names) and where it came from (data, command, commit, metrics).
Pickle-based files (`.pt`, `.pth`, `.ckpt`, `.bin`) are refused: unpickling a file runs its code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
from torch import nn

from engine.errors import InputError
from engine.models import ARCHITECTURES, build_model
from engine.models.common import training_only
from engine.store.files import atomic_write, atomic_write_text

CARD_VERSION = 1
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")


@dataclass(frozen=True)
class ModelCard:
    architecture: str
    in_channels: int
    num_classes: int = 2
    options: dict[str, Any] = field(default_factory=dict)
    class_names: tuple[str, ...] = ("background", "landslide")
    # per-band statistics in the units the scene is read in; None: normalise each scene with its own
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    card_version: int = CARD_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_file(cls, path: Path) -> ModelCard:
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(path, f"model card is not readable JSON ({exc})") from exc
        return cls.from_dict(data, path)

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path) -> ModelCard:
        """A card from its JSON fields; `path` names where they came from in error messages."""
        if not isinstance(data, dict):
            raise InputError(path, "model card is not a JSON object")
        data = dict(data)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(path, f"model card has unknown fields {unknown}")
        if data.get("card_version", CARD_VERSION) > CARD_VERSION:
            raise InputError(path, "model card was written by a newer Scarp; update Scarp to load it")
        if data.get("architecture") not in ARCHITECTURES:
            raise InputError(path, f"unknown architecture {data.get('architecture')!r}")
        for key in ("class_names", "mean", "std"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)


def card_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def save_model(model: nn.Module, path: str | Path, **card_fields: Any) -> Path:
    """Write `path` (.safetensors) and its card; both appear atomically. Returns the weights path."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise InputError(path, "checkpoints are written as .safetensors")
    config = model.scarp_config
    card = ModelCard(
        architecture=config["architecture"],
        in_channels=config["in_channels"],
        num_classes=config["num_classes"],
        options=config["options"],
        **card_fields,
    )
    with atomic_write(path) as tmp:
        safetensors.torch.save_model(model, str(tmp))
    atomic_write_text(card_path(path), card.to_json())
    return path


def load_model(path: str | Path) -> tuple[nn.Module, ModelCard]:
    """Rebuild a model exactly from `.safetensors` + card (either file may be given); eval mode."""
    weights = _weights_path(Path(path))
    card = ModelCard.from_file(card_path(weights))
    model = build_model(card.architecture, card.in_channels, card.num_classes, **card.options)
    try:
        missing, unexpected = safetensors.torch.load_model(model, str(weights), strict=False, device="cpu")
    except (safetensors.SafetensorError, OSError) as exc:
        raise InputError(weights, f"weights are not readable ({str(exc).splitlines()[0]})") from exc
    except RuntimeError as exc:  # tensor shapes differ from what the card's architecture builds
        raise InputError(weights, f"weights do not fit a {card.architecture} with these options") from exc
    dropped = [key for key in missing if key.startswith(training_only(model))]
    missing = [key for key in missing if key not in dropped]
    if missing or unexpected:
        raise InputError(
            weights,
            f"weights do not fit a {card.architecture} with these options "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})",
        )
    if dropped and hasattr(model, "restore_training_parts"):  # shipped without them
        model.restore_training_parts()
    model.eval()
    model.scarp_card = card
    return model, card


def _weights_path(path: Path) -> Path:
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise InputError(
            path,
            "is a pickle-based checkpoint, which Scarp refuses to load because unpickling runs code "
            "from the file; convert it to .safetensors (safetensors.torch.save_model) where you trust it",
        )
    if suffix == ".json":
        path = path.with_suffix(".safetensors")
    elif suffix != ".safetensors":
        raise InputError(path, "is not a checkpoint; Scarp loads .safetensors files with a .json card")
    if not path.is_file():
        raise InputError(path, "checkpoint not found")
    if not card_path(path).is_file():
        raise InputError(path, f"has no model card {card_path(path).name} beside it")
    return path
