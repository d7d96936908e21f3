"""Frozen teachers and the adversarial discriminator for KDA distillation (Wang et al., GRSL 2025, III-A).

Teachers never train: their parameters are frozen and they stay in eval mode even when a parent module
is switched to training. Weights come only from local files, and pickled checkpoints are read with
`weights_only=True`, so a weights file can never run code.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import InputError
from engine.models.common import pad_to_multiple

DINOV2 = {
    # our name -> (timm architecture, feature width)
    "dinov2_vits14": ("vit_small_patch14_dinov2", 384),
    "dinov2_vitb14": ("vit_base_patch14_dinov2", 768),
    "dinov2_vitl14": ("vit_large_patch14_dinov2", 1024),
}
PATCH = 14


class _Frozen(nn.Module):
    """Base for teachers: parameters frozen, and `train()` cannot switch them out of eval mode."""

    def _freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> _Frozen:
        # BatchNorm statistics and dropout of a teacher must not change when the student's loop calls
        # .train() on a module that contains it
        return super().train(False)


def dinov2_architecture(name: str) -> nn.Module:
    """The randomly initialised timm ViT for a DINOv2 name: 518² grid like the release, any size in use."""
    if name not in DINOV2:
        raise ValueError(f"unknown DINOv2 teacher {name!r}; choose one of {', '.join(DINOV2)}")
    from engine.compat import ensure_torchvision

    ensure_torchvision()
    import timm

    return timm.create_model(DINOV2[name][0], pretrained=False, num_classes=0, dynamic_img_size=True)


def _missing_weights_message(name: str) -> str:
    arch = DINOV2[name][0]
    return (
        f"no weights given for the {name} teacher, and DINOv2 weights cannot be downloaded here (no network "
        f"access). On a machine with internet, fetch the official checkpoint "
        f"https://dl.fbaipublicfiles.com/dinov2/{name}/{name}_pretrain.pth or the timm "
        f"'{arch}.lvd142m' model.safetensors, copy it here, and pass its path as the teacher weights "
        f"(weights=PATH; on the command line --teacher-weights PATH). .safetensors, .pth and .pt are read."
    )


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors only: safetensors, or torch.load with weights_only=True (no arbitrary unpickling)."""
    if not path.is_file():
        raise InputError(path, "teacher weights file not found")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            loaded: Any = load_file(str(path), device="cpu")
        except Exception as exc:
            raise InputError(path, f"not a readable safetensors file ({exc})") from None
    elif suffix in (".pth", ".pt"):
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            # torch's own message suggests disabling the safety check; ours must not
            raise InputError(
                path,
                f"refused ({type(exc).__name__}): not a plain tensor checkpoint; only weights are read from "
                "a .pth/.pt, never objects or code (re-save it as a state dict, or use .safetensors)",
            ) from None
    else:
        raise InputError(
            path, f"unsupported weights format {suffix or '(none)'}; use .safetensors, .pth or .pt"
        )
    if isinstance(loaded, dict) and isinstance(loaded.get("teacher"), dict):
        # a DINOv2 training checkpoint: the teacher's backbone is what we want
        teacher = loaded["teacher"]
        loaded = {k.removeprefix("backbone."): v for k, v in teacher.items() if k.startswith("backbone.")}
    for key in ("model", "state_dict"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise InputError(path, "the file does not hold a state dict of tensors")
    return loaded


def _few(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


class DINOv2Teacher(_Frozen):
    """A frozen DINOv2 ViT whose patch tokens, laid out as a map, are the distillation target.

    `features` expects the 3-band image normalised the way DINOv2 was trained (ImageNet mean and std);
    selecting and scaling the bands is the caller's job.
    """

    def __init__(self, name: str, vit: nn.Module):
        super().__init__()
        self.name = name
        self.vit = vit
        self.channels: int = DINOV2[name][1]
        self._freeze()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, C, ⌈H/14⌉, ⌈W/14⌉); pads inside so any size works."""
        if x.shape[1] != 3:
            raise ValueError(f"the DINOv2 teacher takes 3 bands (RGB), got {x.shape[1]}")
        padded, _ = pad_to_multiple(x, PATCH)
        h, w = padded.shape[-2] // PATCH, padded.shape[-1] // PATCH
        with torch.no_grad():
            tokens = self.vit.forward_features(padded)[:, self.vit.num_prefix_tokens :]
        return tokens.transpose(1, 2).reshape(x.shape[0], self.channels, h, w)

    def refine(self, features: torch.Tensor) -> torch.Tensor:
        """Run a (N, C, h, w) feature map through the last quarter of the frozen transformer blocks.

        This is the discriminator's frozen DINOv2 backbone: the maps it judges are already final-layer
        patch tokens (the teacher's, or the student's projected to the same width), so they enter at the
        depth they belong to. Gradients flow through to the input (the student's adversarial step needs
        them); the blocks' own weights stay frozen.
        """
        n, c, h, w = features.shape
        tokens = features.flatten(2).transpose(1, 2)
        blocks = list(self.vit.blocks)
        for block in blocks[-max(1, len(blocks) // 4) :]:
            tokens = block(tokens)
        tokens = self.vit.norm(tokens)
        return tokens.transpose(1, 2).reshape(n, c, h, w)


def build_dinov2_teacher(name: str, weights: str | Path | None) -> DINOv2Teacher:
    """A frozen DINOv2 teacher from a local weights file (timm or original DINOv2 key layout)."""
    if name not in DINOV2:
        raise ValueError(f"unknown DINOv2 teacher {name!r}; choose one of {', '.join(DINOV2)}")
    if weights is None:
        raise InputError(name, _missing_weights_message(name))
    path = Path(weights)
    state = _read_state_dict(path)
    # built without storage: random init of a ViT-L costs seconds, and the file replaces every tensor
    with torch.device("meta"):
        vit = dinov2_architecture(name)
    from timm.models.vision_transformer import checkpoint_filter_fn

    try:
        # maps the original DINOv2 layout (mask_token, w12/w3 MLPs, registers) onto timm's names and
        # resamples a position embedding of another grid; a timm state dict passes through unchanged
        state = checkpoint_filter_fn(state, vit)
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        missing, unexpected = vit.load_state_dict(state, strict=False, assign=True)
    except Exception as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise InputError(path, f"weights do not fit {name}: {detail[:400]}") from None
    if missing or unexpected:
        parts = [
            f"missing {_few(missing)}" if missing else "",
            f"unexpected {_few(unexpected)}" if unexpected else "",
        ]
        raise InputError(path, f"not {name} weights: " + "; ".join(p for p in parts if p))
    return DINOv2Teacher(name, vit)


class RegistryTeacher(_Frozen):
    """Any registry model (built or trained) as a frozen teacher: its deepest encoder stage is the target."""

    def __init__(self, model: nn.Module):
        super().__init__()
        if not callable(getattr(model, "encoder_features", None)):
            raise ValueError(
                f"{type(model).__name__} has no encoder_features(x); it cannot serve as a teacher"
            )
        self.model = model
        self._freeze()
        self.channels: int = self._infer_channels()

    def _infer_channels(self) -> int:
        declared = getattr(self.model, "encoder_channels", None)
        if declared:
            return int(declared[-1])
        config = getattr(self.model, "scarp_config", {})
        in_ch = config.get("in_channels") or next(
            m.in_channels for m in self.model.modules() if isinstance(m, nn.Conv2d)
        )
        return int(self.features(torch.zeros(1, in_ch, 64, 64)).shape[1])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model.encoder_features(x)[-1]

    def refine(self, features: torch.Tensor) -> torch.Tensor:
        """Pass-through: a registry encoder has no stage that takes its own deepest map back as input."""
        return features


class Discriminator(nn.Module):
    """Tells teacher feature maps from student ones, per location (paper III-A, Fig. 2).

    Our reading of "a frozen DINOv2 backbone and a multilevel convolutional head": the judged map (at the
    teacher's width) first passes the teacher's frozen backbone (`teacher.refine`, the last transformer
    blocks for DINOv2, a pass-through for registry teachers); the trainable head then looks at the raw
    and refined maps at `levels` scales (1, 1/2, 1/4, ...), each a conv branch upsampled back and fused,
    and emits one score per location, the map the MSE losses of Eq. 2 and 3 compare.
    """

    def __init__(self, teacher_backbone: nn.Module, levels: int = 3, width: int = 128):
        super().__init__()
        if levels < 1:
            raise ValueError(f"levels must be ≥ 1, got {levels}")
        self.backbone = teacher_backbone
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.channels = int(teacher_backbone.channels)
        self.head = _MultiLevelHead(2 * self.channels, width, levels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, teacher_channels, h, w) -> (N, 1, h, w) scores."""
        if features.shape[1] != self.channels:
            raise ValueError(f"discriminator expects {self.channels} channels, got {features.shape[1]}")
        refined = self.backbone.refine(features)
        return self.head(torch.cat([features, refined], dim=1))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.head.parameters() if p.requires_grad]


class _MultiLevelHead(nn.Module):
    """Conv branches at several scales; LeakyReLU and GroupNorm, since batch statistics mixing teacher
    and student batches would leak which is which."""

    def __init__(self, in_channels: int, width: int, levels: int):
        super().__init__()
        self.stem = _conv_block(in_channels, width, 1)
        self.levels = nn.ModuleList(_conv_block(width, width, 3) for _ in range(levels))
        self.fuse = _conv_block(width * levels, width, 1)
        self.score = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        h, w = x.shape[-2:]
        outs = []
        for i, branch in enumerate(self.levels):
            size = (max(1, math.ceil(h / 2**i)), max(1, math.ceil(w / 2**i)))
            y = branch(F.adaptive_avg_pool2d(x, size) if i else x)
            outs.append(F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False) if i else y)
        return self.score(self.fuse(torch.cat(outs, dim=1)))


def _conv_block(in_ch: int, out_ch: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2),
        nn.GroupNorm(8 if out_ch % 8 == 0 else 1, out_ch),
        nn.LeakyReLU(0.2, inplace=True),
    )
