"""Training configuration: one frozen dataclass, written into every checkpoint card and resume state."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from engine.errors import InputError

DISTILL_MODES = ("none", "kd", "kda")
PSEUDO_MODES = ("threshold", "top_percent", "mc_dropout")  # how a pseudo-label round picks pixels
NORMALISATIONS = ("dataset", "per_image")
FINETUNE_LR = 1e-4  # starting from a trained model: the app's training jobs and the pseudo-label rounds


def finetune_rates(lr: float) -> dict[str, float]:
    """Fine-tuning's learning rates: head and encoder alike, decaying to 1/100 of `lr`."""
    return {"lr": lr, "backbone_lr": lr, "lr_end": lr / 100, "backbone_lr_end": lr / 100}


@dataclass(frozen=True)
class TrainConfig:
    model: str
    in_channels: int = 3
    options: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 8
    size: int = 256  # training crops are size × size px
    # None: the model's paper default (engine/training/supervised.py: PAPER_DEFAULTS)
    optimizer: str | None = None  # "adamw" | "sgd"
    lr: float | None = None
    lr_end: float | None = None
    backbone_lr: float | None = None  # KDA: a separate backbone learning rate
    backbone_lr_end: float | None = None
    weight_decay: float | None = None
    momentum: float = 0.9
    loss: dict[str, float] | None = None  # e.g. {"ce": 0.4, "focal": 0.6}
    class_weights: tuple[float, ...] | None = None  # for "wce"
    ohem: float = 0.0  # keep this fraction of the hardest pixels (0: off)
    mixup_alpha: float = 0.0  # 0: off; λ ~ Beta(α, α)
    centerrep: float = 0.0  # probability of CenterRep per landslide sample
    colour_jitter: bool = True
    scale: tuple[float, float] = (0.75, 1.25)
    normalisation: str = "dataset"  # or "per_image": each image with its own statistics
    grad_clip: float = 1.0
    patience: int = 10  # early stopping on validation mIoU
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    workers: int = 0
    # distillation (KDA paper, III-A): the student's phase 1 before the supervised phase 2
    distill: str = "none"
    distill_epochs: int = 0
    teacher: str | None = None  # dinov2_vit{s,b,l}14 or a checkpoint path
    teacher_weights: str | None = None
    # MRIFE (III-C/D): Loss = α·L_rec + β·L_cons + γ·L_CE
    mrife_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    mrife_temperature: float = 0.1
    histogram_equalisation: bool = False

    def __post_init__(self) -> None:
        if self.distill not in DISTILL_MODES:
            raise InputError("--distill", f"must be one of {', '.join(DISTILL_MODES)}, got {self.distill!r}")
        if self.normalisation not in NORMALISATIONS:
            raise InputError("normalisation", f"must be one of {', '.join(NORMALISATIONS)}")
        for name in ("epochs", "batch_size", "size", "in_channels"):
            if int(getattr(self, name)) < 1:
                raise InputError(name, f"must be ≥ 1, got {getattr(self, name)}")
        if self.distill != "none" and not self.teacher:
            raise InputError("--distill", "needs --teacher (dinov2_vits14/vitb14/vitl14 or a checkpoint)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError("training config", f"unknown keys {unknown}")
        tuples = {"class_weights", "scale", "mrife_weights"}
        return cls(**{k: tuple(v) if k in tuples and v is not None else v for k, v in data.items()})

    def replace(self, **changes: Any) -> TrainConfig:
        return TrainConfig.from_dict({**self.to_dict(), **changes})
