"""Supervised segmentation training with each model's paper defaults (also KDA's phase 2)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from engine.training.config import TrainConfig
from engine.training.losses import build_loss
from engine.training.method import Batch, Method

# Optimiser, learning rates and loss each paper reports; TrainConfig fields override them.
PAPER_DEFAULTS: dict[str, dict[str, Any]] = {
    # KDA phase 2 (IV-A): 0.4·CE + 0.6·Focal, AdamW, backbone 5e-6 → 5e-9, decoder 5e-4 → 5e-6
    "kda_student": {
        "optimizer": "adamw",
        "lr": 5e-4,
        "lr_end": 5e-6,
        "backbone_lr": 5e-6,
        "backbone_lr_end": 5e-9,
        "weight_decay": 1e-2,
        "loss": {"ce": 0.4, "focal": 0.6},
    },
    # EMR-HRNet (3.1): SGD, lr 1e-3, cosine decay
    "emr_hrnet": {"optimizer": "sgd", "lr": 1e-3, "lr_end": 0.0, "weight_decay": 1e-4, "loss": {"ce": 1.0}},
    # MRIFE (IV): SGD, lr 0.007, momentum 0.9, weight decay 5e-4 (its losses live in mrife_train.py)
    "mrife": {"optimizer": "sgd", "lr": 7e-3, "lr_end": 0.0, "weight_decay": 5e-4, "loss": {"ce": 1.0}},
}
BASELINE_DEFAULTS: dict[str, Any] = {
    "optimizer": "adamw",
    "lr": 1e-3,
    "lr_end": 1e-6,
    "weight_decay": 1e-2,
    "loss": {"ce": 0.5, "dice": 0.5},
}


def with_paper_defaults(config: TrainConfig) -> TrainConfig:
    """Fill every hyper-parameter the user left unset with the model's paper default."""
    defaults = PAPER_DEFAULTS.get(config.model, BASELINE_DEFAULTS)
    changes = {k: v for k, v in defaults.items() if getattr(config, k) is None}
    return config.replace(**changes) if changes else config


def backbone_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The pretrained-style encoder's parameters, where the model names one (KDA: `encoder`)."""
    encoder = getattr(model, "encoder", None)
    return [p for p in encoder.parameters() if p.requires_grad] if encoder is not None else []


def build_optimizer(config: TrainConfig, param_groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """`config.optimizer` (sgd with `config.momentum`, or adamw) with `config.weight_decay`."""
    decay = config.weight_decay or 0.0
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            param_groups, lr=param_groups[0]["lr"], momentum=config.momentum, weight_decay=decay
        )
    if config.optimizer == "adamw":
        return torch.optim.AdamW(param_groups, lr=param_groups[0]["lr"], weight_decay=decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; use adamw or sgd")


def make_optimizer(
    config: TrainConfig, groups: list[tuple[list[nn.Parameter], float, float]], total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """An optimiser over (parameters, lr, lr_end) groups, with a cosine decay from lr to lr_end per group."""
    optimizer = build_optimizer(config, [{"params": params, "lr": lr} for params, lr, _ in groups if params])
    ends = [end for params, _, end in groups if params]
    starts = [g["lr"] for g in optimizer.param_groups]
    steps = max(1, total_steps)

    def factor(group_index: int):
        start, end = starts[group_index], ends[group_index]

        def at(step: int) -> float:
            progress = min(step, steps) / steps
            cosine = 0.5 * (1 + torch.cos(torch.tensor(progress * torch.pi)).item())
            return (end + (start - end) * cosine) / start

        return at

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [factor(i) for i in range(len(starts))])
    return optimizer, scheduler


class SupervisedMethod(Method):
    name = "supervised"

    def __init__(self, model, config, device, dtype, steps_per_epoch):
        super().__init__(model, config, device, dtype, steps_per_epoch)
        self.loss = build_loss(config)
        backbone = backbone_parameters(model)
        if config.backbone_lr is not None and backbone:
            ids = {id(p) for p in backbone}
            rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
            groups = [
                (rest, config.lr, config.lr_end),
                (backbone, config.backbone_lr, config.backbone_lr_end),
            ]
        else:
            groups = [([p for p in model.parameters() if p.requires_grad], config.lr, config.lr_end)]
        total = steps_per_epoch * config.epochs
        self.optimizers["model"], self.schedulers["model"] = make_optimizer(config, groups, total)

    def train_step(self, batch: Batch) -> dict[str, float]:
        self.model.train()
        with self.autocast():
            logits = self.model(batch.image)
        losses = self.loss(logits.float(), batch)
        self.step(losses["loss"], "model", self.model.parameters())
        return {k: float(v.detach()) for k, v in losses.items()}
