"""Training augmentations: albumentations for geometry, plus the pieces it does not offer for
multi-band float imagery (band-selective colour jitter, IGNORE-aware padding), CenterRep and mix-up.

Images inside the albumentations pipeline are (H, W, C) float32, already normalised with invalid
pixels set to 0, so interpolation never spreads NaN; masks are (H, W) uint8 in {0, 1, IGNORE}.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch

from engine.training.config import TrainConfig
from engine.training.method import IGNORE, Batch

CENTERREP_RATIO = (0.2, 0.3)  # patch side as a fraction of the landslide bounding box (EMR-HRNet 2.2)


def fold_indices(length: int, before: int, after: int) -> np.ndarray:
    """Source indices that mirror an axis outwards on both sides without repeating the edge pixel.

    Unlike cv2/np reflect padding this folds as often as needed, so a 61 px Bijie image can be padded
    to 256 px; a length-1 axis just repeats its pixel.
    """
    positions = np.arange(-before, length + after)
    if length == 1:
        return np.zeros(positions.size, dtype=np.intp)
    period = 2 * (length - 1)
    k = positions % period
    return np.where(k < length, k, period - k).astype(np.intp)


def reflect_pad(image: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """Mirror-pad the first two axes of an (H, W, ...) array: models see no hard edge in padding."""
    out = np.take(image, fold_indices(image.shape[0], top, bottom), axis=0)
    return np.take(out, fold_indices(image.shape[1], left, right), axis=1)


def ignore_pad(mask: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """Padding carries no label: the loss and the metrics must not count it."""
    return np.pad(mask, ((top, bottom), (left, right)), constant_values=IGNORE)


class PadToSize(A.DualTransform):
    """Pad up to size × size at a random position: mirrored image, IGNORE mask.

    albumentations' PadIfNeeded mirrors the mask too when it mirrors the image, which would invent
    labels in the padding.
    """

    def __init__(self, size: int, p: float = 1.0):
        super().__init__(p=p)
        self.size = size

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params["shape"][:2]
        pad_h, pad_w = max(0, self.size - h), max(0, self.size - w)
        top = int(self.py_random.randint(0, pad_h)) if pad_h else 0
        left = int(self.py_random.randint(0, pad_w)) if pad_w else 0
        return {"pads": (top, pad_h - top, left, pad_w - left)}

    def apply(self, img: np.ndarray, pads: tuple[int, int, int, int] = (0, 0, 0, 0), **_: Any) -> np.ndarray:
        return reflect_pad(img, *pads) if any(pads) else img

    def apply_to_mask(
        self, mask: np.ndarray, pads: tuple[int, int, int, int] = (0, 0, 0, 0), **_: Any
    ) -> np.ndarray:
        return ignore_pad(mask, *pads) if any(pads) else mask

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("size",)


class OpticalJitter(A.ImageOnlyTransform):
    """Random contrast gain and brightness offset on the optical bands only, in normalised units.

    albumentations' RandomBrightnessContrast assumes 0–1 (or uint8) images and clips floats to [0, 1],
    which destroys normalised multi-band data, and it cannot spare slope/DEM bands, whose values are
    physical quantities that no illumination change alters. One shared gain/offset models illumination;
    a small per-band gain models a colour shift.
    """

    def __init__(
        self,
        bands: Sequence[int],
        contrast: float = 0.2,
        brightness: float = 0.2,
        per_band: float = 0.05,
        p: float = 0.8,
    ):
        super().__init__(p=p)
        self.bands = [int(b) for b in bands]
        self.contrast = contrast
        self.brightness = brightness
        self.per_band = per_band

    def get_params(self) -> dict[str, Any]:
        rng = self.random_generator
        n = len(self.bands)
        gain = rng.uniform(1 - self.contrast, 1 + self.contrast) * rng.uniform(
            1 - self.per_band, 1 + self.per_band, n
        )
        offset = rng.uniform(-self.brightness, self.brightness)
        return {"gain": gain.astype(np.float32), "offset": np.float32(offset)}

    def apply(
        self, img: np.ndarray, gain: np.ndarray | None = None, offset: float = 0.0, **_: Any
    ) -> np.ndarray:
        if not self.bands or gain is None:
            return img
        out = img.copy()
        out[..., self.bands] = img[..., self.bands] * gain + offset
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("bands", "contrast", "brightness", "per_band")


def build_augmentations(config: TrainConfig, optical_bands: Sequence[int]) -> A.Compose:
    """The training pipeline: random scale, pad/crop to config.size, flips, rot90, optical jitter.

    Scaling comes first so that the crop always has the final size; the caller reseeds the pipeline per
    sample (Compose.set_random_seed) so that a resumed run repeats an epoch exactly.
    """
    size = int(config.size)
    low, high = (float(v) for v in config.scale)
    steps: list[A.BasicTransform] = []
    if (low, high) != (1.0, 1.0):
        steps.append(
            A.RandomScale(
                scale_limit=(low - 1.0, high - 1.0),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                p=1.0,
            )
        )
    steps += [
        PadToSize(size),
        A.RandomCrop(size, size),
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomRotate90(p=1.0),
    ]
    if config.colour_jitter and optical_bands:
        steps.append(OpticalJitter(optical_bands))
    return A.Compose(steps, seed=int(config.seed))


def _side(length: int, ratio: float) -> int:
    """A patch side inside [20 %, 30 %] of `length` whenever a whole number of pixels fits there."""
    low, high = int(np.ceil(CENTERREP_RATIO[0] * length)), int(np.floor(CENTERREP_RATIO[1] * length))
    side = round(ratio * length)
    return max(1, min(max(side, low), high) if low <= high else side)


def center_rep(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """EMR-HRNet's CenterRep: cover the centre of the landslide with background from the same image.

    image (C, H, W), mask (H, W) in {0, 1, IGNORE}. The patch side is 20–30 % of the bounding box of all
    landslide pixels (one ratio for both sides, keeping its shape), the source window holds only
    background (0) pixels, so no landslide or unlabelled texture is copied, and the pasted area is
    labelled background. Samples without landslide, or without any all-background window of that
    size, come back unchanged (as copies).
    """
    image, mask = image.copy(), mask.copy()
    rows, cols = np.nonzero(mask == 1)
    if rows.size == 0:
        return image, mask
    y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    ratio = float(rng.uniform(*CENTERREP_RATIO))
    ph, pw = _side(int(y1 - y0), ratio), _side(int(x1 - x0), ratio)
    height, width = mask.shape
    # summed-area table of non-background pixels: a window is usable when its sum is 0
    bad = np.zeros((height + 1, width + 1), dtype=np.int64)
    bad[1:, 1:] = np.cumsum(np.cumsum(mask != 0, axis=0), axis=1)
    sums = bad[ph:, pw:] - bad[:-ph, pw:] - bad[ph:, :-pw] + bad[:-ph, :-pw]
    sy, sx = np.nonzero(sums == 0)
    if sy.size == 0:
        return image, mask
    pick = int(rng.integers(sy.size))
    src_y, src_x = int(sy[pick]), int(sx[pick])
    top = min(max(round((y0 + y1) / 2 - ph / 2), 0), height - ph)
    left = min(max(round((x0 + x1) / 2 - pw / 2), 0), width - pw)
    patch = image[:, src_y : src_y + ph, src_x : src_x + pw].copy()
    image[:, top : top + ph, left : left + pw] = patch
    mask[top : top + ph, left : left + pw] = 0
    return image, mask


def mix_params(
    n: int, alpha: float, generator: torch.Generator | np.random.Generator
) -> tuple[float, torch.Tensor]:
    """λ ~ Beta(α, α) and the partner permutation; torch has no seeded Beta, so λ comes from numpy,
    seeded from the torch generator when one is given."""
    if isinstance(generator, np.random.Generator):
        rng = generator
        lam = float(rng.beta(alpha, alpha))
        return lam, torch.from_numpy(rng.permutation(n)).long()
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    return lam, torch.randperm(n, generator=generator)


def soft_labels(mask: torch.Tensor) -> torch.Tensor:
    """(N, 2, H, W) one-hot of a {0, 1, IGNORE} mask; IGNORE pixels are all zero."""
    valid = mask != IGNORE
    return torch.stack([(mask == 0) & valid, (mask == 1) & valid], dim=1).float()


def mixup(batch: Batch, alpha: float, generator: torch.Generator | np.random.Generator) -> Batch:
    """Blend each sample with a permuted partner: images and class probabilities with the same λ.

    A pixel is labelled only where both partners are labelled; elsewhere its soft label is zero in both
    classes and its mask IGNORE. A soft-target loss, −Σ_c soft_c · log p_c per pixel, therefore gets
    nothing from it and should average over the pixels whose mask is not IGNORE (soft sums to 1 there),
    exactly as hard-label losses skip IGNORE. α ≤ 0 means mix-up is off: the batch comes back unchanged.
    """
    if alpha <= 0:
        return batch
    lam, perm = mix_params(batch.image.shape[0], float(alpha), generator)
    perm = perm.to(batch.image.device)
    image = lam * batch.image + (1.0 - lam) * batch.image[perm]
    base = batch.soft if batch.soft is not None else soft_labels(batch.mask)
    defined = (base.sum(dim=1) > 0.5) & (base[perm].sum(dim=1) > 0.5)
    soft = (lam * base + (1.0 - lam) * base[perm]) * defined[:, None].to(base.dtype)
    mask = torch.where(defined, soft.argmax(dim=1), torch.full_like(batch.mask, IGNORE))
    return Batch(image=image, mask=mask, soft=soft)
