"""Strong, well-known baselines from segmentation-models-pytorch, built without pretrained weights."""

from __future__ import annotations

import segmentation_models_pytorch as smp

from engine.models.common import SizeSafe


def build_unet_r34(in_channels: int, num_classes: int) -> SizeSafe:
    return SizeSafe(smp.Unet("resnet34", encoder_weights=None, in_channels=in_channels, classes=num_classes))


def build_deeplabv3plus_r101(in_channels: int, num_classes: int) -> SizeSafe:
    net = smp.DeepLabV3Plus("resnet101", encoder_weights=None, in_channels=in_channels, classes=num_classes)
    return SizeSafe(net)


def build_segformer_b0(in_channels: int, num_classes: int) -> SizeSafe:
    return SizeSafe(
        smp.Segformer("mit_b0", encoder_weights=None, in_channels=in_channels, classes=num_classes)
    )
