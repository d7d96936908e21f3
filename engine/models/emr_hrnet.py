"""EMR-HRNet (Sensors 2024): HRNet with DEMA blocks in its backbone and an RMA top-down pyramid.

Layout, for a w18 backbone (branch widths 18/36/72/144 at strides 4/8/16/32):

1. timm's HRNet, built with `features_only=True, feature_location=''` so the four raw branch outputs
   come back (the default 'incre' location would widen them with classification-head bottlenecks).
2. DEMA (`attention.DEMA`) replaces `conv1` and `conv2` of every `BasicBlock` in the branches of
   stages 2, 3 and 4 — all 3×3 convs of HRNet's parallel multi-resolution modules (w18: 104 blocks,
   208 convs). All of them are stride 1 with equal in/out widths. Left plain: the stem convs, the
   stage-1 Bottlenecks (a single stride-4 branch before the parallel design starts) and the stride-2
   3×3 convs of the transition and fuse layers, which downsample rather than extract features.
3. RMA pyramid: a 1×1 lateral conv maps each branch to a common width; starting from the coarsest
   level, each level is RAD(lateral + bilinear-upsampled coarser output) — FPN's add-fusion, which
   the paper's pyramid citation uses and which keeps every RAD at one width.
4. Head at stride 4 (3×3 ConvBNReLU → 1×1 to classes), logits bilinearly upsampled to the input.

Inputs of any size are padded (reflect) to a multiple of 32 and the logits cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.compat import ensure_torchvision
from engine.models.attention import DEMA, RAD, RefConv, positive_int
from engine.models.common import ConvBNReLU, crop_to, pad_to_multiple

BACKBONES = ("hrnet_w18", "hrnet_w32", "hrnet_w48")
HRNET_STAGES = ("stage2", "stage3", "stage4")  # the multi-branch stages whose BasicBlocks get DEMA


def _largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def _make_backbone(name: str, in_channels: int) -> nn.Module:
    ensure_torchvision()
    import timm

    return timm.create_model(
        name,
        pretrained=False,
        features_only=True,
        in_chans=in_channels,
        feature_location="",
        out_indices=(1, 2, 3, 4),
    )


def swap_in_dema(backbone: nn.Module, dilation: int, ema_groups: int) -> list[str]:
    """Replace the 3×3 convs of HRNet's stage 2–4 BasicBlocks with DEMA; returns the replaced names.

    EMA groups per conv are the largest divisor of its width not above `ema_groups` (w18's 18- and
    36-wide branches cannot take 8 groups; they get 6). The dilated conv inherits the old conv's weight,
    so a swap after loading pretrained HRNet weights keeps them.
    """
    ensure_torchvision()
    from timm.models.resnet import BasicBlock

    replaced: list[str] = []
    for stage in HRNET_STAGES:
        for name, block in getattr(backbone, stage).named_modules():
            if not isinstance(block, BasicBlock):
                continue
            for attr in ("conv1", "conv2"):
                conv = getattr(block, attr)
                plain_3x3 = isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3)
                if not (plain_3x3 and conv.stride == (1, 1) and conv.groups == 1):
                    continue
                if conv.in_channels != conv.out_channels:
                    continue
                width = conv.in_channels
                dema = DEMA(width, dilation, _largest_divisor_at_most(width, ema_groups))
                with torch.no_grad():
                    dema.conv.weight.copy_(conv.weight)
                setattr(block, attr, dema)
                replaced.append(f"{stage}.{name}.{attr}")
    return replaced


class EMRHRNet(nn.Module):
    """HRNet + DEMA encoder, RMA pyramid decoder, stride-4 head; logits at the input size."""

    multiple = 32  # HRNet's coarsest branch is stride 32 and its fuse layers need exact ×2 sizes

    def __init__(self, backbone: nn.Module, num_classes: int, pyramid_channels: int, heads: int):
        super().__init__()
        self.backbone = backbone
        widths = [int(c) for c in backbone.feature_info.channels()]
        self.laterals = nn.ModuleList(nn.Conv2d(c, pyramid_channels, 1, bias=False) for c in widths)
        self.rads = nn.ModuleList(RAD(pyramid_channels, pyramid_channels, heads) for _ in widths)
        self.head = nn.Sequential(
            ConvBNReLU(pyramid_channels, pyramid_channels, 3), nn.Conv2d(pyramid_channels, num_classes, 1)
        )
        self.dema_replaced: list[str] = []

    def _features(self, padded: torch.Tensor) -> list[torch.Tensor]:
        return list(self.backbone(padded))

    def encoder_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four HRNet branch outputs (strides 4, 8, 16, 32; deepest last) of the padded input."""
        padded, _ = pad_to_multiple(x, self.multiple)
        return self._features(padded)

    def auxiliary_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """None: every branch feeds the pyramid, so there is nothing extra to supervise."""
        return []

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Top-down RMA pyramid; returns the stride-4 level."""
        level = self.rads[-1](self.laterals[-1](features[-1]))
        for i in range(len(features) - 2, -1, -1):
            lateral = self.laterals[i](features[i])
            up = F.interpolate(level, size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            level = self.rads[i](lateral + up)
        return level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded, size = pad_to_multiple(x, self.multiple)
        logits = self.head(self.decode(self._features(padded)))
        logits = F.interpolate(logits, size=padded.shape[-2:], mode="bilinear", align_corners=False)
        return crop_to(logits, size)

    def reparameterize(self) -> EMRHRNet:
        """Fold every RefConv into a plain conv in place (same outputs, no kernel transform per call)."""
        targets = [(name, m) for name, m in self.named_modules() if isinstance(m, RefConv)]
        for name, module in targets:
            parent_name, _, attr = name.rpartition(".")
            parent = self.get_submodule(parent_name) if parent_name else self
            setattr(parent, attr, module.reparameterize())
        return self


def build_emr_hrnet(
    in_channels: int,
    num_classes: int,
    *,
    backbone: str = "hrnet_w18",
    ema_groups: int = 8,
    dilation: int = 2,
    pyramid_channels: int | None = None,
    heads: int = 4,
    **unknown: object,
) -> EMRHRNet:
    """Build EMR-HRNet with random weights.

    `pyramid_channels` defaults to 4× the backbone's base width (72 / 128 / 192 for w18 / w32 / w48),
    the width HRNet itself reaches at stride 16, so the decoder scales with the encoder.
    """
    if unknown:
        raise ValueError(
            f"unknown emr_hrnet option(s) {', '.join(sorted(unknown))}; "
            "known: backbone, ema_groups, dilation, pyramid_channels, heads"
        )
    if backbone not in BACKBONES:
        raise ValueError(f"unknown emr_hrnet backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    in_channels = positive_int("in_channels", in_channels)
    num_classes = positive_int("num_classes", num_classes)
    ema_groups = positive_int("ema_groups", ema_groups)
    dilation = positive_int("dilation", dilation)
    heads = positive_int("heads", heads)
    base_width = int(backbone.removeprefix("hrnet_w"))
    width = 4 * base_width if pyramid_channels is None else pyramid_channels
    width = positive_int("pyramid_channels", width)
    if width % heads:
        raise ValueError(f"heads ({heads}) must divide pyramid_channels ({width})")
    net = _make_backbone(backbone, in_channels)
    replaced = swap_in_dema(net, dilation, ema_groups)
    model = EMRHRNet(net, num_classes, width, heads)
    model.dema_replaced = replaced
    return model
