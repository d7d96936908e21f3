"""Pieces every segmentation model shares: size handling and the small conv blocks the papers name."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def training_only(model: nn.Module) -> tuple[str, ...]:
    """State-dict prefixes of the parts only training uses (e.g. a distillation adapter): shipping drops
    them, and a checkpoint without them still loads."""
    return tuple(getattr(model, "TRAINING_ONLY", ()))


def inference_parameter_count(model: nn.Module) -> int:
    """Parameters a prediction uses: the model's, less its training-only parts."""
    skip = training_only(model)
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith(skip))


def pad_to_multiple(x: torch.Tensor, multiple: int = 32) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad (N, C, H, W) on the bottom/right so H and W divide by `multiple`; returns the original size.

    Reflection keeps image statistics at the border (zeros would look like nodata); inputs too small to
    reflect fall back to replication.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)


def crop_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return x[..., : size[0], : size[1]]


class ConvBNReLU(nn.Sequential):
    """Conv + BatchNorm + ReLU: the CBR unit of the KDA paper and the basic unit elsewhere."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, dilation: int = 1, groups: int = 1
    ):
        padding = dilation * (kernel - 1) // 2
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel, stride, padding, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class SizeSafe(nn.Module):
    """Wraps a network that needs H, W divisible by `multiple`: pads inside, crops the logits back."""

    def __init__(self, net: nn.Module, multiple: int = 32):
        super().__init__()
        self.net = net
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded, size = pad_to_multiple(x, self.multiple)
        return crop_to(self.net(padded), size)
