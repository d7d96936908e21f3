"""KDA student: a PVT-v2 backbone and the dynamic cross-layer fusion (DCF) decoder (Wang et al., GRSL 2025).

The student is what gets deployed; the teachers and the discriminator it is distilled against live in
`engine.models.teachers`. Distillation needs the deepest stage at a teacher's width, so the student also
carries a 1×1 projection that inference never runs (`project_to_teacher`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.common import ConvBNReLU, crop_to, pad_to_multiple

BACKBONES = ("pvt_v2_b0", "pvt_v2_b1", "pvt_v2_b2")
STRIDES = (4, 8, 16, 32)
DECODER_WIDTH = 40  # puts the b0 decoder near the paper's 0.27 M parameters (Table IV)


class GSoftmax(nn.Module):
    """Gated softmax over channels: turns one pooled descriptor per channel into channel weights.

    The paper names the operator (a GSoftmax with weights shared by the four stages) without defining
    it. Our reading: a learned gate (a linear map over the pooled channel descriptor) scores every
    channel, and a softmax with a learned temperature makes the channels compete for a fixed budget.
    The budget is the channel count, so the weights are positive, sum to C and average to 1: uniform
    scores leave a feature map unchanged, and the attention only redistributes emphasis between
    channels instead of shrinking every activation by 1/C.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.gate = nn.Linear(channels, channels)
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """(N, C) or (N, C, 1, 1) descriptor -> (N, C) weights, positive, summing to C per sample."""
        scores = self.gate(pooled.flatten(1)) / self.log_temperature.exp()
        return self.channels * torch.softmax(scores, dim=1)


class UCM(nn.Module):
    """Upsampling and contextual module: widen the receptive field at stride 4, then climb to full size.

    The paper only names it. Context comes from parallel depthwise 3×3 convolutions at dilations 1, 2
    and 4 plus an image-level pooled branch (cheap in parameters, which the 0.27 M budget demands); the
    climb is two learned ×2 steps, so the class boundaries are drawn at full resolution by a 3×3
    classifier rather than by a bilinear stretch of stride-4 logits.
    """

    def __init__(self, channels: int, num_classes: int, dilations: tuple[int, ...] = (1, 2, 4)):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(channels, channels, 3, padding=d, dilation=d, groups=channels, bias=False)
            for d in dilations
        )
        self.pooled = nn.Conv2d(channels, channels, 1, bias=False)
        self.merge = ConvBNReLU(channels * (len(dilations) + 1), channels, kernel=1)
        half = max(channels // 2, num_classes)
        self.up1 = ConvBNReLU(channels, half)
        self.up2 = ConvBNReLU(half, half)
        self.classifier = nn.Conv2d(half, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        glob = self.pooled(F.adaptive_avg_pool2d(x, 1)).expand_as(x)
        context = self.merge(torch.cat([b(x) for b in self.branches] + [glob], dim=1))
        x = x + context
        x = self.up1(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))
        x = self.up2(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))
        return self.classifier(x)


class DCFDecoder(nn.Module):
    """Dynamic cross-layer fusion decoder (paper Eq. 1 and Fig. 3b), coarse to fine.

    Per stage: a CBR brings the stage to the common width, the shared GSoftmax reweights its channels
    from the globally pooled map, then each finer stage is fused with the upsampled coarser result by
    concatenation and a CBR, so the fine stage decides how much coarse semantics to keep.
    """

    def __init__(self, in_channels: list[int], num_classes: int, width: int):
        super().__init__()
        self.reduce = nn.ModuleList(ConvBNReLU(c, width, kernel=3) for c in in_channels)
        self.gsoftmax = GSoftmax(width)  # one instance: the paper shares its weights across stages
        self.fuse = nn.ModuleList(ConvBNReLU(2 * width, width, kernel=3) for _ in in_channels[:-1])
        self.ucm = UCM(width, num_classes)

    def attention(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """The channel-reweighted maps F*ᵢ, finest first."""
        refined = []
        for reduce, f in zip(self.reduce, features, strict=True):
            f = reduce(f)
            weights = self.gsoftmax(F.adaptive_avg_pool2d(f, 1))
            refined.append(f * weights[:, :, None, None])
        return refined

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        refined = self.attention(features)
        x = refined[-1]
        for fine, fuse in zip(reversed(refined[:-1]), reversed(self.fuse), strict=True):
            x = F.interpolate(x, size=fine.shape[-2:], mode="bilinear", align_corners=False)
            x = fuse(torch.cat([fine, x], dim=1))
        return self.ucm(x)


class KDAStudent(nn.Module):
    """PVT-v2 + DCF decoder; pads to a multiple of 32 inside so any H × W works."""

    TRAINING_ONLY = ("to_teacher.",)

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        backbone: str = "pvt_v2_b0",
        decoder_channels: int = DECODER_WIDTH,
        teacher_channels: int = 384,
    ):
        super().__init__()
        from engine.compat import ensure_torchvision

        ensure_torchvision()
        import timm

        self.encoder = timm.create_model(backbone, pretrained=False, features_only=True, in_chans=in_channels)
        self.encoder_channels: list[int] = list(self.encoder.feature_info.channels())
        if tuple(self.encoder.feature_info.reduction()) != STRIDES:
            raise ValueError(f"{backbone}: expected stage strides {STRIDES}")
        self.decoder = DCFDecoder(self.encoder_channels, num_classes, decoder_channels)
        self.teacher_channels = teacher_channels
        # only distillation uses this (TRAINING_ONLY): the deepest stage mapped to the teacher's width
        self.to_teacher = nn.Sequential(
            nn.Conv2d(self.encoder_channels[-1], teacher_channels, 1, bias=False),
            nn.BatchNorm2d(teacher_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded, size = pad_to_multiple(x, 32)
        logits = self.decoder(self.encoder(padded))
        return crop_to(logits, size)

    def encoder_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four stage maps (strides 4, 8, 16, 32 of the padded input), deepest last."""
        padded, _ = pad_to_multiple(x, 32)
        return list(self.encoder(padded))

    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder_features(x)

    def project_to_teacher(self, stage4: torch.Tensor) -> torch.Tensor:
        """(N, C₄, h, w) -> (N, teacher_channels, h, w), the student side of the feature distillation."""
        return self.to_teacher(stage4)

    def auxiliary_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the training-only parts, so gradient checks can reach every parameter."""
        return [self.project_to_teacher(self.encoder_features(x)[-1])]

    def decoder_parameter_count(self) -> int:
        return sum(p.numel() for p in self.decoder.parameters())


def build_kda_student(
    in_channels: int,
    num_classes: int,
    *,
    backbone: str = "pvt_v2_b0",
    decoder_channels: int = DECODER_WIDTH,
    teacher_channels: int = 384,
    **unknown: Any,
) -> KDAStudent:
    """The registry builder; options are checked here so a typo fails with a readable message."""
    if unknown:
        known = "backbone, decoder_channels, teacher_channels"
        raise ValueError(f"unknown KDA student option(s) {', '.join(sorted(unknown))}; known: {known}")
    if backbone not in BACKBONES:
        raise ValueError(f"unknown KDA backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    for name, value in (("decoder_channels", decoder_channels), ("teacher_channels", teacher_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"KDA option {name} must be a positive integer, got {value!r}")
    return KDAStudent(in_channels, num_classes, backbone, decoder_channels, teacher_channels)
