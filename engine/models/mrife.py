"""MRIFE: a segmentation branch plus a masked, self-distilled feature-enhancement branch (He et al., 2024).

Three encoders of one design (ResNet at output stride 8 + ASPP + SE) with separate parameters: the
segmentation encoder, the student and its EMA teacher. Training fuses the segmentation features of the
image with the student's features of the block-masked image, so the segmentation loss also steers the
student (the paper's "mutual guidance"); inference fuses them with the teacher's features of the plain
image (Sec. III-D). The losses live elsewhere; `forward_train` returns what they need.

Readings of the paper: the decoder takes only the fused stride-8 features (the text names two
transposed convolutions and no low-level skip); masking zeroes image pixels, since the student's input
is an image; the teacher's BatchNorm statistics track its own passes while EMA moves its weights only;
inputs are padded to a multiple of the block so blocks and feature points align one to one.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.common import crop_to, pad_to_multiple
from engine.models.mrife_parts import (
    BACKBONES,
    FEATURE_STRIDE,
    BlockMask,
    BranchEncoder,
    Decoder,
    make_block_mask,
    synthetic_landslide_mask,
)


class MRIFE(nn.Module):
    """Logits (N, num_classes, H, W) for any H, W; see `forward_train` for the training outputs."""

    TRAINING_ONLY = ("student.",)  # inference reads the EMA teacher, never the student

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        backbone: str = "resnet101",
        ema_decay: float = 0.996,
        block: int = 8,
        channels: int = 256,
        aspp_rates: Sequence[int] = (12, 24, 36),
        dropout: float = 0.1,
        mask_ratio: float = 1.0,
    ):
        super().__init__()
        self.ema_decay = ema_decay
        self.block = block
        self.mask_ratio = mask_ratio
        self.segmentation = BranchEncoder(in_channels, backbone, channels, aspp_rates)
        self.student = BranchEncoder(in_channels, backbone, channels, aspp_rates)
        # The teacher starts as the student (as in DINO) and afterwards moves only by `update_teacher`.
        self.teacher = copy.deepcopy(self.student)
        self.teacher.requires_grad_(False)
        self.decoder = Decoder(channels, num_classes, dropout)

    # ------------------------------------------------------------------------------------- protocol
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded, size = pad_to_multiple(x, self.block)
        with torch.no_grad():
            enhanced = self.teacher(padded)
        return crop_to(self.decoder(self.segmentation(padded) + enhanced), size)

    def encoder_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Segmentation encoder: backbone stages then the ASPP + SE output, on the padded grid."""
        return self.segmentation.stages(pad_to_multiple(x, self.block)[0])

    def auxiliary_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The student's features of `x` masked by a fixed synthetic landslide label (seed 0)."""
        padded, _ = pad_to_multiple(x, self.block)
        n, _, h, w = padded.shape
        label = synthetic_landslide_mask(n, h, w).to(x.device)
        block_mask = self.mask_blocks(label, torch.Generator().manual_seed(0))
        return [self.student(block_mask.apply(padded))]

    # ------------------------------------------------------------------------------------- training
    def mask_blocks(self, mask: torch.Tensor, generator: torch.Generator | None = None) -> BlockMask:
        """The mask module with this model's block size and ratio; `mask` must already be padded."""
        return make_block_mask(mask, self.block, self.mask_ratio, generator)

    def forward_train(
        self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """One training pass; `mask` (N, H, W) or (N, 1, H, W), non-zero = landslide.

        Every image of the batch is masked on its own, so the caller pairs images (e.g. 2k with 2k+1)
        for the cross-sample contrast. Keys, with Hb, Wb = padded H, W / block:
          logits            (N, K, H, W)      segmentation + student(masked image) features, decoded
          student_features  (N, C, Hb, Wb)    student of the masked image (the reconstructions)
          teacher_features  (N, C, Hb, Wb)    teacher of the original image, detached (the targets)
          masked            (N, Hb, Wb) bool  blocks hidden from the student
          block_labels      (N, Hb, Wb) long  1 masked edge, 0 masked background, -1 not masked
          block_classes     (N, Hb, Wb) long  0 background, 1 edge, 2 interior (all blocks)
          masked_image      (N, C_in, H, W)   the student's input, cropped back to the input size
        Features are on the block grid: identical to the stride-8 grid for block 8, average-pooled for
        larger blocks. `generator` (CPU) makes the block draw reproducible.
        """
        single_band = mask.dim() == 3 or (mask.dim() == 4 and mask.shape[1] == 1)
        if not single_band or mask.shape[-2:] != image.shape[-2:] or mask.shape[0] != image.shape[0]:
            raise ValueError(f"mask {tuple(mask.shape)} does not match image {tuple(image.shape)}")
        padded, size = pad_to_multiple(image, self.block)
        label = mask.reshape(mask.shape[0], 1, *mask.shape[-2:]).float()
        # Pad the label exactly as the image is padded so blocks describe what the encoders see.
        padded_label = pad_to_multiple(label, self.block)[0] > 0.5
        block_mask = self.mask_blocks(padded_label, generator)
        masked_image = block_mask.apply(padded)

        student = self.student(masked_image)
        with torch.no_grad():
            teacher = self.teacher(padded)
        logits = crop_to(self.decoder(self.segmentation(padded) + student), size)
        return {
            "logits": logits,
            "student_features": self._to_blocks(student),
            "teacher_features": self._to_blocks(teacher).detach(),
            "masked": block_mask.masked,
            "block_labels": block_mask.labels,
            "block_classes": block_mask.classes,
            "masked_image": crop_to(masked_image, size),
        }

    @torch.no_grad()
    def update_teacher(self) -> None:
        """θ_t ← λ θ_t + (1 − λ) θ_s (Eq. 1); call after each optimiser step on the student.

        Only parameters move: the teacher's BatchNorm statistics come from its own forward passes.
        """
        lam = self.ema_decay
        for t, s in zip(self.teacher.parameters(), self.student.parameters(), strict=True):
            t.mul_(lam).add_(s.detach(), alpha=1.0 - lam)

    @torch.no_grad()
    def restore_training_parts(self) -> None:
        """After loading a checkpoint shipped without the student: restart it from the teacher (its EMA),
        so fine-tuning begins where the teacher stands."""
        self.student.load_state_dict(self.teacher.state_dict())

    def _to_blocks(self, features: torch.Tensor) -> torch.Tensor:
        factor = self.block // FEATURE_STRIDE
        return features if factor == 1 else F.avg_pool2d(features, factor)


def build_mrife(
    in_channels: int,
    num_classes: int,
    *,
    backbone: str = "resnet101",
    ema_decay: float = 0.996,
    block: int = 8,
    channels: int = 256,
    aspp_rates: Sequence[int] = (12, 24, 36),
    dropout: float = 0.1,
    mask_ratio: float = 1.0,
    **unknown: Any,
) -> MRIFE:
    """The registry's builder; rejects bad options with a ValueError the CLI can show as is."""
    if unknown:
        raise ValueError(
            f"unknown MRIFE option(s) {', '.join(sorted(unknown))}; known: backbone, ema_decay, block, "
            "channels, aspp_rates, dropout, mask_ratio"
        )
    if backbone not in BACKBONES:
        raise ValueError(f"unknown MRIFE backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    if not 0.0 <= ema_decay <= 1.0:
        raise ValueError(f"ema_decay must be in [0, 1], got {ema_decay}")
    if block < FEATURE_STRIDE or block % FEATURE_STRIDE:
        raise ValueError(f"block must be a positive multiple of {FEATURE_STRIDE}, got {block}")
    if channels < 4:
        raise ValueError(f"channels must be ≥ 4, got {channels}")
    if not aspp_rates or any(int(r) < 1 for r in aspp_rates):
        raise ValueError(f"aspp_rates must be positive dilations, got {aspp_rates!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if not 0.0 < mask_ratio <= 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1], got {mask_ratio}")
    return MRIFE(
        in_channels,
        num_classes,
        backbone=backbone,
        ema_decay=float(ema_decay),
        block=int(block),
        channels=int(channels),
        aspp_rates=tuple(int(r) for r in aspp_rates),
        dropout=float(dropout),
        mask_ratio=float(mask_ratio),
    )
