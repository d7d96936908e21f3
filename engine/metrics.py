"""Confusion-matrix metrics for binary landslide segmentation (1 = landslide, 0 = background).

Counts are summed over every pixel of a split before any ratio is taken, so large and small images
weigh by their pixel counts, as in the landslide benchmarks. A ratio whose denominator is zero is
undefined and reported as nan rather than a made-up 0 or 1. Only numpy and the standard library.
"""

from __future__ import annotations

import math

import numpy as np


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def _mean(*values: float) -> float:
    # Plain arithmetic keeps nan contagious: a mean over an undefined class is undefined too.
    return sum(values) / len(values)


def _as_binary(array: np.ndarray, name: str) -> np.ndarray:
    """Accept bool or {0, 1} numbers; anything else is likely a probability or a class-id mix-up."""
    array = np.asarray(array)
    if array.dtype == np.bool_:
        return array
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"{name} must be bool or numeric with values 0 and 1, got dtype {array.dtype}")
    ones = array == 1
    if not np.all(ones | (array == 0)):
        bad = np.unique(array[~(ones | (array == 0))])[:5]
        raise ValueError(f"{name} must contain only 0 and 1, found {bad.tolist()}")
    return ones


class ConfusionMatrix:
    """A 2×2 count matrix `counts[truth, pred]` that accumulates over images and merges across splits."""

    def __init__(self, counts: np.ndarray | None = None) -> None:
        if counts is None:
            self.counts = np.zeros((2, 2), dtype=np.int64)
        else:
            counts = np.asarray(counts)
            if counts.shape != (2, 2) or np.any(counts < 0):
                raise ValueError(f"counts must be a 2×2 non-negative matrix, got {counts!r}")
            self.counts = counts.astype(np.int64)

    @classmethod
    def from_counts(cls, tp: int, fp: int, fn: int, tn: int) -> ConfusionMatrix:
        """Build from the four cells, which is how results are written by hand in tests and papers."""
        return cls(np.array([[tn, fp], [fn, tp]], dtype=np.int64))

    def update(self, pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add one image; pixels where `valid` is False (nodata) are left out of every count."""
        pred_arr = np.asarray(pred)
        truth_arr = np.asarray(truth)
        if pred_arr.shape != truth_arr.shape:
            raise ValueError(f"pred shape {pred_arr.shape} does not match truth shape {truth_arr.shape}")
        p = _as_binary(pred_arr, "pred")
        t = _as_binary(truth_arr, "truth")
        if valid is not None:
            valid_arr = np.asarray(valid)
            if valid_arr.shape != p.shape:
                raise ValueError(f"valid shape {valid_arr.shape} does not match pred shape {p.shape}")
            keep = _as_binary(valid_arr, "valid")
            p = p[keep]
            t = t[keep]
        cells = np.bincount((t.astype(np.intp) * 2 + p).ravel(), minlength=4)
        self.counts += cells.reshape(2, 2).astype(np.int64)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix's counts into this one (in place) and return self for chaining."""
        self.counts += other.counts
        return self

    def __add__(self, other: object) -> ConfusionMatrix:
        if not isinstance(other, ConfusionMatrix):
            return NotImplemented
        return ConfusionMatrix(self.counts + other.counts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConfusionMatrix):
            return NotImplemented
        return bool(np.array_equal(self.counts, other.counts))

    __hash__ = None  # type: ignore[assignment]  # mutable: update() changes the counts

    def __repr__(self) -> str:
        return f"ConfusionMatrix(tp={self.tp}, fp={self.fp}, fn={self.fn}, tn={self.tn})"

    @property
    def tp(self) -> int:
        return int(self.counts[1, 1])

    @property
    def fp(self) -> int:
        return int(self.counts[0, 1])

    @property
    def fn(self) -> int:
        return int(self.counts[1, 0])

    @property
    def tn(self) -> int:
        return int(self.counts[0, 0])

    @property
    def pixels(self) -> int:
        return int(self.counts.sum())

    def metrics(self) -> dict[str, float]:
        """Landslide-class metrics, background IoU, mIoU, OA and the class-averaged (macro) scores.

        F1 and IoU are computed from counts (2tp / (2tp + fp + fn)), so a prediction with no true
        positive scores 0 rather than nan; they are nan only when neither truth nor prediction has
        the class. Macro scores average landslide and background, with background's precision being
        tn / (tn + fn) and so on.
        """
        tp, fp, fn, tn = self.tp, self.fp, self.fn, self.tn
        precision = _ratio(tp, tp + fp)
        recall = _ratio(tp, tp + fn)
        f1 = _ratio(2 * tp, 2 * tp + fp + fn)
        iou = _ratio(tp, tp + fp + fn)
        precision_bg = _ratio(tn, tn + fn)
        recall_bg = _ratio(tn, tn + fp)
        f1_bg = _ratio(2 * tn, 2 * tn + fn + fp)
        iou_bg = _ratio(tn, tn + fn + fp)
        pixels = tp + fp + fn + tn
        return {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "iou": iou,
            "iou_background": iou_bg,
            "miou": _mean(iou, iou_bg),
            "oa": _ratio(tp + tn, pixels),
            "precision_macro": _mean(precision, precision_bg),
            "recall_macro": _mean(recall, recall_bg),
            "f1_macro": _mean(f1, f1_bg),
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "tn": tn,
            "pixels": pixels,
        }

    def to_json_dict(self) -> dict[str, float | None]:
        """metrics() with nan as None, since JSON has no nan and json.dumps would write invalid NaN."""
        return {
            key: None if isinstance(value, float) and math.isnan(value) else value
            for key, value in self.metrics().items()
        }
