"""Confusion-matrix metrics, checked against values worked out by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from engine.metrics import ConfusionMatrix

KEYS = {
    "precision",
    "recall",
    "f1",
    "iou",
    "iou_background",
    "miou",
    "oa",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "tp",
    "fp",
    "fn",
    "tn",
    "pixels",
}


def approx(expected: dict[str, float]) -> object:
    return pytest.approx(expected, nan_ok=True)


def test_hand_computed_matrix() -> None:
    # truth = [[1, 1, 0], [0, 0, 1]], pred = [[1, 0, 1], [0, 0, 1]] → tp 2, fn 1, fp 1, tn 2.
    truth = np.array([[1, 1, 0], [0, 0, 1]])
    pred = np.array([[1, 0, 1], [0, 0, 1]])
    cm = ConfusionMatrix()
    cm.update(pred, truth)
    assert (cm.tp, cm.fp, cm.fn, cm.tn) == (2, 1, 1, 2)
    np.testing.assert_array_equal(cm.counts, [[2, 1], [1, 2]])
    m = cm.metrics()
    assert set(m) == KEYS
    assert m == approx(
        {
            "precision": 2 / 3,
            "recall": 2 / 3,
            "f1": 2 / 3,
            "iou": 2 / 4,
            "iou_background": 2 / 4,
            "miou": 1 / 2,
            "oa": 4 / 6,
            "precision_macro": 2 / 3,
            "recall_macro": 2 / 3,
            "f1_macro": 2 / 3,
            "tp": 2,
            "fp": 1,
            "fn": 1,
            "tn": 2,
            "pixels": 6,
        }
    )


def test_asymmetric_matrix_macro_averages() -> None:
    # tp 3, fp 1, fn 2, tn 4 (10 pixels).
    m = ConfusionMatrix.from_counts(tp=3, fp=1, fn=2, tn=4).metrics()
    precision, recall = 3 / 4, 3 / 5
    precision_bg, recall_bg = 4 / 6, 4 / 5  # tn/(tn+fn), tn/(tn+fp)
    f1, f1_bg = 6 / 9, 8 / 11  # 2tp/(2tp+fp+fn), 2tn/(2tn+fn+fp)
    assert m == approx(
        {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "iou": 3 / 6,
            "iou_background": 4 / 7,
            "miou": (3 / 6 + 4 / 7) / 2,
            "oa": 7 / 10,
            "precision_macro": (precision + precision_bg) / 2,
            "recall_macro": (recall + recall_bg) / 2,
            "f1_macro": (f1 + f1_bg) / 2,
            "tp": 3,
            "fp": 1,
            "fn": 2,
            "tn": 4,
            "pixels": 10,
        }
    )
    # F1 from counts equals the harmonic mean of precision and recall wherever both are defined.
    assert m["f1"] == pytest.approx(2 * precision * recall / (precision + recall))


def test_perfect_prediction() -> None:
    truth = np.array([[0, 1, 1], [0, 0, 1]], dtype=np.uint8)
    cm = ConfusionMatrix()
    cm.update(truth.copy(), truth)
    m = cm.metrics()
    for key in ("precision", "recall", "f1", "iou", "iou_background", "miou", "oa"):
        assert m[key] == 1.0
    for key in ("precision_macro", "recall_macro", "f1_macro"):
        assert m[key] == 1.0
    assert (m["tp"], m["fp"], m["fn"], m["tn"], m["pixels"]) == (3, 0, 0, 3, 6)


def test_all_wrong_prediction() -> None:
    truth = np.array([1, 1, 0, 0, 0])
    cm = ConfusionMatrix()
    cm.update(1 - truth, truth)
    m = cm.metrics()
    assert (cm.tp, cm.fp, cm.fn, cm.tn) == (0, 3, 2, 0)
    for key in ("precision", "recall", "f1", "iou", "iou_background", "miou", "oa"):
        assert m[key] == 0.0
    for key in ("precision_macro", "recall_macro", "f1_macro"):
        assert m[key] == 0.0


def test_empty_landslide_class_is_nan_not_zero() -> None:
    # No landslide in truth or prediction: landslide scores are undefined, background is perfect.
    cm = ConfusionMatrix()
    cm.update(np.zeros((4, 4), dtype=bool), np.zeros((4, 4), dtype=bool))
    m = cm.metrics()
    for key in ("precision", "recall", "f1", "iou", "miou", "precision_macro", "recall_macro", "f1_macro"):
        assert math.isnan(m[key]), key
    assert m["iou_background"] == 1.0
    assert m["oa"] == 1.0
    assert m["pixels"] == 16


def test_false_alarms_only_give_zero_f1_but_nan_recall() -> None:
    # No landslide in truth, one predicted: precision 0/1, recall 0/0, F1 and IoU 0/1.
    m = ConfusionMatrix.from_counts(tp=0, fp=1, fn=0, tn=3).metrics()
    assert m["precision"] == 0.0
    assert math.isnan(m["recall"])
    assert m["f1"] == 0.0
    assert m["iou"] == 0.0
    assert m["iou_background"] == 3 / 4
    assert m["miou"] == 3 / 8
    assert math.isnan(m["recall_macro"])
    assert m["precision_macro"] == pytest.approx((0 + 3 / 3) / 2)


def test_empty_matrix_is_all_nan() -> None:
    m = ConfusionMatrix().metrics()
    assert m["pixels"] == 0
    assert all(math.isnan(m[key]) for key in KEYS - {"tp", "fp", "fn", "tn", "pixels"})


def test_to_json_dict_writes_null_for_nan() -> None:
    cm = ConfusionMatrix.from_counts(tp=0, fp=0, fn=0, tn=5)
    data = cm.to_json_dict()
    assert data["iou"] is None and data["miou"] is None
    assert data["iou_background"] == 1.0 and data["tn"] == 5
    text = json.dumps(data, allow_nan=False)
    assert '"iou": null' in text
    assert json.loads(text)["pixels"] == 5


def test_valid_mask_excludes_nodata() -> None:
    truth = np.array([[1, 1, 0], [0, 1, 0]])
    pred = np.array([[1, 0, 0], [1, 1, 1]])
    valid = np.array([[True, False, True], [False, True, True]])
    # Kept pixels (truth, pred): (1,1) (0,0) (1,1) (0,1) → tp 2, fp 1, fn 0, tn 1.
    cm = ConfusionMatrix()
    cm.update(pred, truth, valid=valid)
    assert (cm.tp, cm.fp, cm.fn, cm.tn) == (2, 1, 0, 1)
    m = cm.metrics()
    assert m["pixels"] == 4
    assert m["precision"] == 2 / 3
    assert m["recall"] == 1.0
    assert m["oa"] == 3 / 4
    nothing = ConfusionMatrix()
    nothing.update(pred, truth, valid=np.zeros_like(valid))
    assert nothing.pixels == 0


def test_accumulating_images_equals_one_update_on_the_concatenation() -> None:
    rng = np.random.default_rng(7)
    shapes = [(5, 7), (3, 7), (11, 7)]
    preds = [rng.integers(0, 2, size=s) for s in shapes]
    truths = [rng.integers(0, 2, size=s) for s in shapes]
    valids = [rng.random(s) > 0.2 for s in shapes]
    running = ConfusionMatrix()
    parts = []
    for pred, truth, valid in zip(preds, truths, valids, strict=True):
        running.update(pred, truth, valid)
        part = ConfusionMatrix()
        part.update(pred, truth, valid)
        parts.append(part)
    whole = ConfusionMatrix()
    whole.update(np.concatenate(preds), np.concatenate(truths), np.concatenate(valids))
    assert running == whole
    assert parts[0] + parts[1] + parts[2] == whole
    merged = ConfusionMatrix().merge(parts[0]).merge(parts[1]).merge(parts[2])
    assert merged == whole
    assert merged.metrics() == approx(whole.metrics())
    assert whole.pixels == sum(int(v.sum()) for v in valids)


def test_add_does_not_modify_operands() -> None:
    a = ConfusionMatrix.from_counts(1, 2, 3, 4)
    b = ConfusionMatrix.from_counts(10, 20, 30, 40)
    c = a + b
    assert (c.tp, c.fp, c.fn, c.tn) == (11, 22, 33, 44)
    assert (a.tp, b.tp) == (1, 10)
    assert c.counts.dtype == np.int64


def test_bool_and_uint8_inputs_agree() -> None:
    truth = np.array([[True, False], [True, True]])
    pred = np.array([[True, True], [False, True]])
    as_bool, as_uint8, as_float = ConfusionMatrix(), ConfusionMatrix(), ConfusionMatrix()
    as_bool.update(pred, truth)
    as_uint8.update(pred.astype(np.uint8), truth.astype(np.uint8))
    as_float.update(pred.astype(np.float32), truth.astype(np.uint8), valid=np.ones((2, 2), np.uint8))
    assert as_bool == as_uint8 == as_float
    assert (as_bool.tp, as_bool.fp, as_bool.fn, as_bool.tn) == (2, 1, 1, 0)


@pytest.mark.parametrize(
    ("pred", "truth", "match"),
    [
        (np.array([0, 2]), np.array([0, 1]), "pred must contain only 0 and 1"),
        (np.array([0, 1]), np.array([-1, 1]), "truth must contain only 0 and 1"),
        (np.array([0.5, 1.0]), np.array([0, 1]), "pred must contain only 0 and 1"),
        (np.array([np.nan, 1.0]), np.array([0, 1]), "pred must contain only 0 and 1"),
        (np.array([255, 0], dtype=np.uint8), np.array([0, 1]), "pred must contain only 0 and 1"),
        (np.array(["0", "1"]), np.array([0, 1]), "dtype"),
        (np.zeros((2, 3)), np.zeros((3, 2)), "shape"),
    ],
)
def test_bad_inputs_are_rejected(pred: np.ndarray, truth: np.ndarray, match: str) -> None:
    cm = ConfusionMatrix()
    with pytest.raises(ValueError, match=match):
        cm.update(pred, truth)
    assert cm.pixels == 0


def test_bad_valid_mask_is_rejected() -> None:
    cm = ConfusionMatrix()
    with pytest.raises(ValueError, match="valid shape"):
        cm.update(np.zeros((2, 2)), np.zeros((2, 2)), valid=np.ones((2, 3), dtype=bool))
    with pytest.raises(ValueError, match="valid must contain only 0 and 1"):
        cm.update(np.zeros((2, 2)), np.zeros((2, 2)), valid=np.full((2, 2), 3))


def test_counts_constructor_validates() -> None:
    with pytest.raises(ValueError, match="2×2"):
        ConfusionMatrix(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="non-negative"):
        ConfusionMatrix(np.array([[1, -1], [0, 0]]))
    assert repr(ConfusionMatrix.from_counts(1, 2, 3, 4)) == "ConfusionMatrix(tp=1, fp=2, fn=3, tn=4)"
