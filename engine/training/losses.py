"""Segmentation losses: a weighted sum of named components, built from a TrainConfig.

Components (weights from `config.loss`, default {"ce": 1.0}):

- ``ce``: cross-entropy; soft-target cross-entropy when the batch carries mix-up soft labels.
- ``wce``: class-weighted cross-entropy. Weights come from `config.class_weights`; when that is None
  they are the inverse class frequencies of the batch's valid pixels (w_c = n / (C · n_c), recomputed
  every batch, no gradient), because landslides cover ~2 % of a scene and a fixed guess goes stale as
  pseudo-labelled tiles join the data. Normalised like torch's weighted mean (Σ w·ℓ / Σ w), so only the
  ratios between weights matter.
- ``focal``, ``dice``, ``lovasz``, ``jaccard``: segmentation-models-pytorch's losses in multiclass mode
  (Focal γ = 2 without α, i.e. smp's one-vs-rest sigmoid focal averaged over classes; Dice and Jaccard
  over the whole batch, both classes; Lovász-softmax over the classes present in the batch).

IGNORE (255) pixels never contribute: the CE terms mask them, the smp losses get ``ignore_index``. A
batch with no valid pixel gives zero for every component (still attached to the graph).

Soft labels: only the cross-entropy terms can learn from mix-up's blended probabilities; smp's Focal,
Dice, Jaccard and Lovász take class indices, so they use the hard argmax mask the batch already
carries (`batch.mask`). Validity (IGNORE) always comes from `batch.mask`.

OHEM (`config.ohem` = f in (0, 1]; 0 is off) applies to the per-pixel components only, ``ce``,
``wce`` and ``focal``: each batch, the valid pixels are ranked by their unweighted (soft) CE and only
the hardest ⌊f·n⌉ (but at least `ohem_min_kept`) stay, one shared set for all three so the weights
still combine linearly. Dice, Jaccard and Lovász are region measures whose value depends on every pixel
of a class, so they always see all valid pixels; the L4S 2022 winners paired OHEM with Lovász this way.

Everything is computed in float32 with autocast off, so bf16 autocast logits cannot overflow the
log-softmax or the sums.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from engine.compat import ensure_torchvision
from engine.errors import InputError
from engine.training.config import TrainConfig
from engine.training.method import IGNORE, Batch

PER_PIXEL = ("ce", "wce", "focal")
REGION = ("dice", "lovasz", "jaccard")
KNOWN_LOSSES = PER_PIXEL + REGION
DEFAULT_LOSS: dict[str, float] = {"ce": 1.0}
OHEM_MIN_KEPT = 1024  # OHEM never trains on fewer pixels than this (or all valid ones, if fewer)
FOCAL_GAMMA = 2.0
_EPS = 1e-12


def round_half_up(x: float) -> int:
    """Counts from fractions: 0.7 · 10 is 7.000000000000001 in floats, so neither ceil nor floor."""
    return math.floor(x + 0.5 + 1e-9)


class SegmentationLoss:
    """`loss(logits (N, C, H, W), batch) -> {name: weighted component, ..., "loss": total}`."""

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        class_weights: Sequence[float] | None = None,
        ohem: float = 0.0,
        ohem_min_kept: int = OHEM_MIN_KEPT,
    ):
        weights = dict(DEFAULT_LOSS if weights is None else weights)
        unknown = sorted(set(weights) - set(KNOWN_LOSSES))
        if unknown:
            raise InputError(
                "loss", f"unknown loss {', '.join(map(repr, unknown))}; known: {', '.join(KNOWN_LOSSES)}"
            )
        for name, w in weights.items():
            if not math.isfinite(float(w)) or float(w) < 0:
                raise InputError("loss", f"weight of {name!r} must be a finite number ≥ 0, got {w}")
        # zero-weighted components are neither computed nor reported
        self.weights = {name: float(w) for name, w in weights.items() if float(w) > 0}
        if not self.weights:
            raise InputError("loss", f"needs at least one positive weight among {', '.join(KNOWN_LOSSES)}")
        if class_weights is not None:
            cw = [float(w) for w in class_weights]
            if not cw or any(not math.isfinite(w) or w < 0 for w in cw) or sum(cw) <= 0:
                raise InputError("class_weights", f"must be finite, ≥ 0 and not all 0, got {class_weights}")
            self.class_weights: tuple[float, ...] | None = tuple(cw)
        else:
            self.class_weights = None
        if not 0.0 <= float(ohem) <= 1.0:
            raise InputError(
                "ohem", f"is the fraction of hardest pixels kept, in (0, 1] (0: off), got {ohem}"
            )
        self.ohem = float(ohem)
        self.ohem_min_kept = max(1, int(ohem_min_kept))

        ensure_torchvision()
        from segmentation_models_pytorch import losses as smp_losses

        mode = smp_losses.MULTICLASS_MODE
        factories = {
            "focal": lambda: smp_losses.FocalLoss(mode, gamma=FOCAL_GAMMA, ignore_index=IGNORE),
            "dice": lambda: smp_losses.DiceLoss(mode, from_logits=True, ignore_index=IGNORE),
            "jaccard": lambda: smp_losses.JaccardLoss(mode, from_logits=True, ignore_index=IGNORE),
            "lovasz": lambda: smp_losses.LovaszLoss(mode, per_image=False, ignore_index=IGNORE),
        }
        self._smp = {name: make() for name, make in factories.items() if name in self.weights}

    def __call__(self, logits: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        if logits.dim() != 4:
            raise ValueError(f"logits must be (N, C, H, W), got shape {tuple(logits.shape)}")
        n, _, h, w = logits.shape
        if tuple(batch.mask.shape) != (n, h, w):
            raise ValueError(
                f"mask shape {tuple(batch.mask.shape)} does not match logits {tuple(logits.shape)}"
            )
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self._compute(logits.float(), batch)

    def _compute(self, logits: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        mask = batch.mask.to(logits.device).long()
        valid = mask != IGNORE
        if not bool(valid.any()):
            zero = logits.sum() * 0.0
            return {**dict.fromkeys(self.weights, zero), "loss": zero}
        target = self._target(logits, batch, mask, valid)
        log_p = F.log_softmax(logits, dim=1)
        kept = self._hardest(log_p, target, valid) if 0.0 < self.ohem < 1.0 else valid

        parts: dict[str, torch.Tensor] = {}
        for name, weight in self.weights.items():
            if name == "ce":
                value = _soft_ce(log_p, target, kept, None)
            elif name == "wce":
                value = _soft_ce(log_p, target, kept, self._class_weights(target, valid))
            elif name == "focal":
                value = self._smp[name](logits, mask.masked_fill(~kept, IGNORE))
            else:  # region losses see every valid pixel
                value = self._smp[name](logits, mask)
            parts[name] = weight * value
        parts["loss"] = torch.stack(list(parts.values())).sum()
        return parts

    @staticmethod
    def _target(logits: torch.Tensor, batch: Batch, mask: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Per-pixel class probabilities (N, C, H, W), zero at IGNORE pixels."""
        c = logits.shape[1]
        if batch.soft is not None:
            soft = batch.soft.to(logits.device).float()
            if soft.shape != logits.shape:
                raise ValueError(f"soft labels {tuple(soft.shape)} do not match logits {tuple(logits.shape)}")
            soft = torch.nan_to_num(soft, nan=0.0).clamp_min(0.0)
        else:
            if bool((valid & ((mask < 0) | (mask >= c))).any()):
                raise ValueError(f"mask holds labels outside 0..{c - 1} (and {IGNORE})")
            soft = F.one_hot(mask.masked_fill(~valid, 0), c).permute(0, 3, 1, 2).float()
        return soft * valid.unsqueeze(1)

    def _class_weights(self, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        c = target.shape[1]
        if self.class_weights is not None:
            if len(self.class_weights) != c:
                raise InputError("class_weights", f"has {len(self.class_weights)} values for {c} classes")
            return torch.tensor(self.class_weights, dtype=torch.float32, device=target.device)
        counts = target.detach().sum(dim=(0, 2, 3))
        return (valid.sum().float() / (c * counts.clamp_min(1.0))).detach()

    def _hardest(self, log_p: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The valid pixels with the highest unweighted CE: the OHEM set, shared by ce, wce and focal."""
        n_valid = int(valid.sum())
        k = min(n_valid, max(round_half_up(self.ohem * n_valid), self.ohem_min_kept))
        if k >= n_valid:
            return valid
        hardness = (-(target * log_p).sum(dim=1)).detach().masked_fill(~valid, float("-inf"))
        index = torch.topk(hardness.flatten(), k, sorted=False).indices
        kept = torch.zeros(valid.numel(), dtype=torch.bool, device=valid.device)
        kept[index] = True
        return kept.view_as(valid)


def _soft_ce(
    log_p: torch.Tensor, target: torch.Tensor, kept: torch.Tensor, class_weights: torch.Tensor | None
) -> torch.Tensor:
    """Σ_i Σ_c w_c q_ic (−log p_ic) / Σ_i Σ_c w_c q_ic over kept pixels: with one-hot q this is exactly
    torch's (weighted) mean cross-entropy, so hard and soft labels share one definition."""
    weighted = target if class_weights is None else target * class_weights.view(1, -1, 1, 1)
    per_pixel = -(weighted * log_p).sum(dim=1)
    norm = weighted.sum(dim=1)
    keep = kept.float()
    return (per_pixel * keep).sum() / (norm * keep).sum().clamp_min(_EPS)


def build_loss(config: TrainConfig, *, ohem_min_kept: int = OHEM_MIN_KEPT) -> SegmentationLoss:
    """The training loss the config asks for; raises InputError for unknown names or bad values."""
    return SegmentationLoss(config.loss, config.class_weights, config.ohem, ohem_min_kept)
