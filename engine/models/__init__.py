"""The model registry: every architecture Scarp can build, by name, for any band count.

`build_model` imports an architecture's module only when it is asked for, so listing the registry is
cheap. Every model maps (N, in_channels, H, W) to logits (N, num_classes, H, W) for any H and W.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from engine.compat import ensure_torchvision

# name -> (module, builder, one line for `python -m engine models`)
ARCHITECTURES: dict[str, tuple[str, str, str]] = {
    "kda_student": (
        "engine.models.kda",
        "build_kda_student",
        "KDA student: PVT-v2 + DCF decoder (KDA, GRSL 2025)",
    ),
    "emr_hrnet": (
        "engine.models.emr_hrnet",
        "build_emr_hrnet",
        "EMR-HRNet: HRNet + DEMA + RMA (Sensors 2024)",
    ),
    "mrife": ("engine.models.mrife", "build_mrife", "MRIFE: DeepLabv3+ + feature enhancement (2024)"),
    "unet_r34": ("engine.models.baselines", "build_unet_r34", "U-Net, ResNet-34 encoder (smp)"),
    "deeplabv3plus_r101": (
        "engine.models.baselines",
        "build_deeplabv3plus_r101",
        "DeepLabV3+, ResNet-101 (smp)",
    ),
    "segformer_b0": ("engine.models.baselines", "build_segformer_b0", "SegFormer, MiT-B0 encoder (smp)"),
}
RESEARCH_MODELS = ("kda_student", "emr_hrnet", "mrife")  # the papers' models; the rest are baselines


def build_model(name: str, in_channels: int = 3, num_classes: int = 2, **options: Any) -> nn.Module:
    """A fresh, randomly initialised model (no weights are ever downloaded)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    if int(in_channels) < 1 or int(num_classes) < 1:
        raise ValueError(f"in_channels and num_classes must be ≥ 1, got {in_channels} and {num_classes}")
    ensure_torchvision()
    module_name, builder, _ = ARCHITECTURES[name]
    model = getattr(importlib.import_module(module_name), builder)(
        int(in_channels), int(num_classes), **options
    )
    model.scarp_config = {
        "architecture": name,
        "in_channels": int(in_channels),
        "num_classes": int(num_classes),
        "options": dict(options),
    }
    return model
