"""What a training method is: the loop owns epochs, evaluation, checkpoints and resume; a method owns
how one batch updates the model (losses, optimisers, extra networks such as a discriminator)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from engine.devices import autocast
from engine.training.config import TrainConfig

IGNORE = 255  # mask value for pixels that do not count (nodata, unselected pseudo-labels)


@dataclass
class Batch:
    """image (N, C, H, W) float, normalised; mask (N, H, W) long in {0, 1, IGNORE};
    soft (N, 2, H, W) float class probabilities when mix-up blended two samples, else None."""

    image: torch.Tensor
    mask: torch.Tensor
    soft: torch.Tensor | None = None

    def to(self, device: torch.device) -> Batch:
        soft = None if self.soft is None else self.soft.to(device, non_blocking=True)
        image = self.image.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        return Batch(image, self.mask.to(device, non_blocking=True), soft)


class Method:
    """Base class. Subclasses set up optimisers in __init__ and implement `train_step`."""

    name = "method"

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        device: torch.device,
        dtype: torch.dtype,
        steps_per_epoch: int,
    ):
        self.model = model
        self.config = config
        self.device = device
        self.dtype = dtype
        self.steps_per_epoch = steps_per_epoch
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}  # stepped once per batch
        self.extra_modules: dict[str, nn.Module] = {}  # trained alongside (e.g. a discriminator)
        self.skipped_steps = 0

    def autocast(self) -> AbstractContextManager:
        return autocast(self.device, self.dtype)

    def step(self, loss: torch.Tensor, optimizer: str, parameters) -> bool:
        """Backward, clip, step one optimiser and its scheduler.

        A non-finite loss or gradient skips the update (the schedule still advances), so one bad
        batch cannot turn the weights into NaN; `skipped_steps` counts them.
        """
        opt = self.optimizers[optimizer]
        opt.zero_grad(set_to_none=True)
        finite = bool(torch.isfinite(loss.detach()))
        if finite:
            loss.backward()
            params = [p for p in parameters if p.grad is not None]
            norm = torch.nn.utils.clip_grad_norm_(
                params, self.config.grad_clip if self.config.grad_clip > 0 else float("inf")
            )
            finite = bool(torch.isfinite(norm))
        if finite:
            opt.step()
        else:
            opt.zero_grad(set_to_none=True)
            self.skipped_steps += 1
        if optimizer in self.schedulers:
            self.schedulers[optimizer].step()
        return finite

    def train_step(self, batch: Batch) -> dict[str, float]:
        """Update on one batch; return the losses as floats, with the total under "loss"."""
        raise NotImplementedError

    def after_step(self) -> None:
        """Hook after every step (MRIFE's EMA teacher update)."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "schedulers": {k: v.state_dict() for k, v in self.schedulers.items()},
            "modules": {k: v.state_dict() for k, v in self.extra_modules.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state["optimizers"].items():
            self.optimizers[k].load_state_dict(v)
        for k, v in state["schedulers"].items():
            self.schedulers[k].load_state_dict(v)
        for k, v in state["modules"].items():
            self.extra_modules[k].load_state_dict(v)
