"""DenseCRF post-processing on a real Bijie image."""

import numpy as np
import pytest

from engine.crf import CrfParams, colour_image, refine
from engine.inference import PredictOptions, predict_scene
from engine.io.masks import read_mask
from engine.io.raster import open_scene
from engine.metrics import ConfusionMatrix


def _iou(pred: np.ndarray, truth: np.ndarray) -> float:
    matrix = ConfusionMatrix()
    matrix.update(pred.astype(np.int64), truth.astype(np.int64))
    return matrix.to_json_dict()["iou"]


@pytest.fixture(scope="module")
def image_and_truth(bijie_pair):
    with open_scene(bijie_pair[0]) as scene:
        image = scene.read_float()
    return image, read_mask(bijie_pair[1]) > 0


def test_crf_snaps_a_blurred_noisy_probability_back_towards_the_true_outline(image_and_truth):
    image, truth = image_and_truth
    rng = np.random.default_rng(0)
    # a coarse, noisy guess: the truth at 1/8 resolution, upsampled, plus noise
    h, w = truth.shape
    coarse = truth[::8, ::8].astype(np.float32).repeat(8, 0).repeat(8, 1)[:h, :w]
    guess = np.clip(0.25 + 0.5 * coarse + rng.normal(0, 0.2, truth.shape), 0.01, 0.99).astype(np.float32)
    refined = refine(guess, image)
    assert refined.shape == truth.shape and refined.dtype == np.float32
    assert np.all((refined >= 0) & (refined <= 1))
    assert _iou(refined >= 0.5, truth) > _iou(guess >= 0.5, truth) + 0.02


def test_crf_keeps_nodata_and_rejects_a_size_mismatch(image_and_truth):
    image, truth = image_and_truth
    probability = np.full(truth.shape, 0.3, np.float32)
    probability[:5] = np.nan
    refined = refine(probability, image, CrfParams(iterations=2))
    assert np.isnan(refined[:5]).all() and np.isfinite(refined[5:]).all()
    with pytest.raises(Exception, match="image is"):
        refine(probability[:-1], image)


def test_colour_image_is_uint8_and_contiguous_for_any_band_count(image_and_truth):
    image, _ = image_and_truth
    for bands in (image[:1], image, np.concatenate([image, image])):
        rgb = colour_image(bands)
        assert rgb.dtype == np.uint8 and rgb.shape == (*image.shape[1:], 3) and rgb.flags.c_contiguous


def test_predict_with_crf_writes_a_mask_that_differs_only_slightly(data_dir, tmp_path):
    from engine.models.shipped import default_name

    if default_name() is None:
        pytest.skip("no default model shipped")
    runs = {}
    for crf in (False, True):
        mask, probability = tmp_path / f"mask-{crf}.tif", tmp_path / f"p-{crf}.tif"
        image = data_dir / "bijie" / "images" / "ls_0028.png"  # the default model finds ~11 % landslide
        predict_scene("default", image, mask, probability, PredictOptions(precision="fp32", crf=crf))
        with open_scene(probability) as p:
            runs[crf] = read_mask(mask) > 0, p.read_float()[0]
    (plain, p_plain), (refined, p_refined) = runs[False], runs[True]
    assert plain.any() and refined.any()
    assert np.abs(p_plain - p_refined).max() > 0.05  # the CRF did change the probabilities...
    assert np.mean(plain != refined) < 0.1  # ...it moves outlines, it does not redraw the map
