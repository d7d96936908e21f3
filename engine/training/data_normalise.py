"""Band normalisation for training: dataset-wide statistics, or each image on its own ("per_image").

Statistics are in raw units over valid pixels only, so nodata never drags a band's mean; they are
written with the checkpoint so that prediction normalises exactly as training did.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.errors import InputError

MIN_STD = 1e-6  # a constant band (a flat DEM tile) would otherwise divide by zero


def sample_image(item: Any) -> np.ndarray:
    """The (C, H, W) image of a dataset item, whether (image, mask), (key, image) or a bare array."""
    if isinstance(item, np.ndarray):
        return item
    image = getattr(item, "image", None)
    if isinstance(image, np.ndarray):
        return image
    for part in item:
        if isinstance(part, np.ndarray) and part.ndim == 3:
            return part
    raise TypeError(f"cannot find a (C, H, W) image in a {type(item).__name__}")


def evenly_spaced(count: int, wanted: int) -> list[int]:
    """Indices spread over the whole dataset, the same every time: statistics must be reproducible."""
    if count <= 0 or wanted <= 0:
        return []
    return sorted({int(i) for i in np.linspace(0, count - 1, min(count, wanted)).round()})


def compute_statistics(dataset: Any, max_samples: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std (float64, raw units) over the valid pixels of up to max_samples samples."""
    total: np.ndarray | None = None
    total_sq: np.ndarray | None = None
    n = 0
    for index in evenly_spaced(len(dataset), max_samples):
        image = sample_image(dataset[index])
        valid = np.isfinite(image).all(axis=0)
        values = image[:, valid].astype(np.float64)
        if total is None:
            total, total_sq = np.zeros(image.shape[0]), np.zeros(image.shape[0])
        if values.shape[0] != total.shape[0]:
            raise InputError("training data", f"sample {index} has {values.shape[0]} bands, not {total.size}")
        total += values.sum(axis=1)
        total_sq += (values**2).sum(axis=1)
        n += values.shape[1]
    if total is None or total_sq is None or n == 0:
        raise InputError("training data", "has no valid pixels to compute band statistics from")
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean**2, 0.0))
    return mean, std


def image_statistics(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One image's per-band valid-pixel mean and std; an image without valid pixels gets (0, 1)."""
    valid = np.isfinite(image).all(axis=0)
    values = image[:, valid].astype(np.float64)
    if values.shape[1] == 0:
        return np.zeros(image.shape[0]), np.ones(image.shape[0])
    return values.mean(axis=1), values.std(axis=1)


class Normaliser:
    """(x − mean) / std per band; with no mean/std, each image uses its own valid-pixel statistics.

    The per-image mode is the separate normalisation of the Landslide4Sense winners: it removes
    scene-to-scene illumination and sensor differences that dataset statistics keep. NaN stays NaN.
    """

    def __init__(self, mean: Any = None, std: Any = None):
        if (mean is None) != (std is None):
            raise InputError("normalisation", "needs both mean and std, or neither (per-image)")
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64).ravel()
        self.std = None if std is None else np.asarray(std, dtype=np.float64).ravel()
        if self.mean is not None and self.std is not None and self.mean.shape != self.std.shape:
            raise InputError("normalisation", f"mean has {self.mean.size} bands but std {self.std.size}")

    @property
    def per_image(self) -> bool:
        return self.mean is None

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self.mean is None or self.std is None:
            mean, std = image_statistics(image)
        else:
            mean, std = self.mean, self.std
            if image.shape[0] != mean.size:
                raise InputError(
                    "normalisation", f"statistics are for {mean.size} bands, the image has {image.shape[0]}"
                )
        std = np.maximum(std, MIN_STD)
        out = (image.astype(np.float64) - mean[:, None, None]) / std[:, None, None]
        return out.astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        if self.mean is None or self.std is None:
            return {"mode": "per_image"}
        return {"mode": "dataset", "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normaliser:
        if data.get("mode") == "per_image":
            return cls()
        return cls(data["mean"], data["std"])
