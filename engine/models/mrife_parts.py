"""Building blocks of MRIFE (He et al., 2024): the shared encoder, the decoder and the block mask module.

The mask module is a set of pure functions so the losses (a later issue) and the tests can use it
without a network. Block classes follow Sec. III-C1 of the paper: a block is background below 10 % of
its pixels (fewer than 7 of 64), interior above 90 % (more than 57 of 64) and edge otherwise (7–57).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.compat import ensure_torchvision
from engine.models.common import ConvBNReLU

BACKGROUND, EDGE, INTERIOR = 0, 1, 2
FEATURE_STRIDE = 8  # the encoders' output stride; one feature point per 8×8 pixel block
BACKBONES = ("resnet101", "resnet50", "resnet34", "resnet18", "resnet10t")  # timm names


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling, with rates doubled for output stride 8 as DeepLab does."""

    def __init__(self, in_ch: int, out_ch: int, rates: Sequence[int]):
        super().__init__()
        self.branches = nn.ModuleList(
            [ConvBNReLU(in_ch, out_ch, 1)] + [ConvBNReLU(in_ch, out_ch, 3, dilation=r) for r in rates]
        )
        # No BatchNorm on the 1×1 pooled map: it cannot normalise a single value per channel when a
        # training batch holds one image.
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_ch, out_ch, 1), nn.ReLU(inplace=True))
        self.project = ConvBNReLU(out_ch * (len(rates) + 2), out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [branch(x) for branch in self.branches]
        outs.append(self.pool(x).expand(-1, -1, *x.shape[-2:]))
        return self.project(torch.cat(outs, dim=1))


class SqueezeExcite(nn.Module):
    """Channel attention on the ASPP output, the SE step of the paper's feature extraction module."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class BranchEncoder(nn.Module):
    """ResNet (output stride 8) + ASPP + SE: the one encoder design all three MRIFE encoders share."""

    def __init__(self, in_channels: int, backbone: str, channels: int, rates: Sequence[int]):
        super().__init__()
        ensure_torchvision()
        import timm

        self.backbone = timm.create_model(
            backbone, pretrained=False, features_only=True, in_chans=in_channels, output_stride=8
        )
        self.aspp = ASPP(self.backbone.feature_info.channels()[-1], channels, rates)
        self.se = SqueezeExcite(channels)

    def head(self, deepest: torch.Tensor) -> torch.Tensor:
        return self.se(self.aspp(deepest))

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Backbone stages (strides 2, 4, 8, 8, 8) followed by the ASPP + SE output."""
        feats = list(self.backbone(x))
        return [*feats, self.head(feats[-1])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)[-1])


class Decoder(nn.Module):
    """Two transposed convolutions (×2 then ×4) back to full resolution, then a 1×1 classifier.

    Each transposed convolution is followed by BN, ReLU and dropout as in the paper's ICSSN decoder;
    the classifier keeps BN/ReLU off the logits.
    """

    def __init__(self, channels: int, num_classes: int, dropout: float):
        super().__init__()
        mid, low = max(channels // 2, 1), max(channels // 4, 1)
        self.up2 = self._block(channels, mid, kernel=4, stride=2, padding=1, dropout=dropout)
        self.up4 = self._block(mid, low, kernel=8, stride=4, padding=2, dropout=dropout)
        self.classifier = nn.Conv2d(low, num_classes, 1)

    @staticmethod
    def _block(cin: int, cout: int, kernel: int, stride: int, padding: int, dropout: float) -> nn.Sequential:
        return nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel, stride, padding, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.up4(self.up2(x)))


# ---------------------------------------------------------------------------------------------- masks


@dataclass(frozen=True)
class BlockMask:
    """What the mask module decided for a batch, on the block grid (N, H/block, W/block).

    `classes`: BACKGROUND / EDGE / INTERIOR per block. `masked`: blocks hidden from the student (the
    paper's maskList_1 ∪ maskList_0). `labels`: EDGE (1) or BACKGROUND (0) at masked blocks, -1 elsewhere.
    """

    classes: torch.Tensor
    masked: torch.Tensor
    labels: torch.Tensor
    block: int

    def pixel_mask(self) -> torch.Tensor:
        """(N, 1, H, W) bool, True on pixels of masked blocks."""
        grid = self.masked.repeat_interleave(self.block, dim=1).repeat_interleave(self.block, dim=2)
        return grid.unsqueeze(1)

    def apply(self, image: torch.Tensor) -> torch.Tensor:
        """The masked sample: pixels of masked blocks set to zero in every band."""
        return image.masked_fill(self.pixel_mask().to(image.device), 0.0)


def _landslide(mask: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool from a (N, H, W) or (N, 1, H, W) mask where any non-zero value is landslide."""
    if mask.dim() == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if mask.dim() != 3:
        raise ValueError(f"mask must be (N, H, W) or (N, 1, H, W), got shape {tuple(mask.shape)}")
    return mask > 0


def classify_blocks(mask: torch.Tensor, block: int = 8) -> torch.Tensor:
    """Block classes (N, H/block, W/block) from landslide pixel counts; H and W must divide by `block`."""
    land = _landslide(mask)
    n, h, w = land.shape
    if block < 1 or h % block or w % block:
        raise ValueError(f"mask size {h}×{w} is not a multiple of the block size {block}")
    counts = land.reshape(n, h // block, block, w // block, block).sum(dim=(2, 4))
    area = block * block
    # Integer form of "< 10 %" and "> 90 %": for 8×8 blocks exactly the paper's < 7 and > 57.
    classes = torch.full_like(counts, EDGE)
    classes[counts * 10 < area] = BACKGROUND
    classes[counts * 10 > area * 9] = INTERIOR
    return classes


def make_block_mask(
    mask: torch.Tensor, block: int = 8, ratio: float = 1.0, generator: torch.Generator | None = None
) -> BlockMask:
    """Pick equal numbers of edge and background blocks per image to mask; interior blocks never are.

    Per image, ceil(ratio × min(#edge, #background)) blocks of each class are drawn at random (the
    paper asks for equal counts but gives no ratio), so an image without edges masks nothing. The draw
    runs on the CPU so a seeded CPU `generator` gives the same blocks on any device.
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"mask ratio must be in (0, 1], got {ratio}")
    classes = classify_blocks(mask, block)
    flat = classes.reshape(classes.shape[0], -1).cpu()
    masked = torch.zeros_like(flat, dtype=torch.bool)
    for i, row in enumerate(flat):
        edge = torch.nonzero(row == EDGE).flatten()
        back = torch.nonzero(row == BACKGROUND).flatten()
        count = math.ceil(ratio * min(edge.numel(), back.numel()))
        for pool in (edge, back):
            chosen = pool[torch.randperm(pool.numel(), generator=generator)[:count]]
            masked[i, chosen] = True
    masked = masked.reshape(classes.shape).to(classes.device)
    labels = torch.where(masked, classes, torch.full_like(classes, -1))
    return BlockMask(classes=classes, masked=masked, labels=labels, block=block)


def gather_masked(features: torch.Tensor, block_mask: BlockMask) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature points (M, C) at the masked blocks and their labels (M,), ordered by image, row, column.

    `features` must be on the block grid, as `MRIFE.forward_train` returns them.
    """
    masked = block_mask.masked.to(features.device)
    if features.shape[-2:] != masked.shape[-2:] or features.shape[0] != masked.shape[0]:
        raise ValueError(f"features {tuple(features.shape)} do not fit the block grid {tuple(masked.shape)}")
    points = features.permute(0, 2, 3, 1)[masked]
    return points, block_mask.labels.to(features.device)[masked]


def synthetic_landslide_mask(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A fixed blobby landslide mask (N, H, W): smooth upsampled noise, thresholded.

    Gives every input size a reproducible mix of background, edge and interior blocks, for code that
    must run the training-only path without a real label.
    """
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, max(h // 32, 1) + 2, max(w // 32, 1) + 2, generator=gen)
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[:, 0] > 0.5
