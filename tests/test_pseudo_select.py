"""Pseudo-label selection on hand-made probability maps, and MC dropout on a small registry model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.errors import InputError
from engine.training.method import IGNORE
from engine.training.pseudo_select import (
    mc_dropout_probabilities,
    merge_with_human,
    refine_threshold,
    select_mc_dropout,
    select_threshold,
    select_top_percent,
)

I = IGNORE  # noqa: E741


def test_threshold_exact_mask_numpy_and_torch():
    prob = [[0.0, 0.3, 0.31, 0.5], [0.69, 0.7, 0.95, np.nan]]
    expected = np.array([[0, 0, I, I], [I, 1, 1, I]], dtype=np.uint8)
    got = select_threshold(np.array(prob, dtype=np.float32), 0.7)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)
    got_t = select_threshold(torch.tensor(prob, dtype=torch.float64), 0.7)
    assert got_t.dtype == torch.long
    np.testing.assert_array_equal(got_t.numpy(), expected)
    # a stricter threshold and a batch of maps
    both = select_threshold(torch.tensor([prob, prob]), 0.9)
    assert both.shape == (2, 2, 4)
    np.testing.assert_array_equal(both[1].numpy(), [[0, I, I, I], [I, I, 1, I]])
    with pytest.raises(InputError):
        select_threshold(np.zeros((2, 2)), 0.4)


def test_top_percent_exact_count_and_pixels():
    # two 2×3 maps, 12 pixels; confidences max(p, 1 − p) all distinct except one tie
    prob = torch.tensor(
        [
            [[0.99, 0.40, 0.55], [0.03, 0.65, 0.50]],
            [[0.80, 0.15, 0.02], [0.60, 0.35, 0.97]],
        ]
    )
    # confidences: .99 (0,0,0), .98 (1,0,2), then a tie at .97 between (0,1,0) and (1,1,2)
    got = select_top_percent(prob, 25)  # 3 of 12: the tie goes to the earlier pixel, (0,1,0)
    assert int((got != I).sum()) == 3
    expected = torch.full((2, 2, 3), I)
    expected[0, 0, 0], expected[1, 0, 2], expected[0, 1, 0] = 1, 0, 0
    assert torch.equal(got, expected)
    got = select_top_percent(prob, 50)  # 6: then (1,1,2) .97, (1,0,1) .85, (1,0,0) .80
    assert int((got != I).sum()) == 6
    expected[1, 1, 2], expected[1, 0, 1], expected[1, 0, 0] = 1, 0, 1
    assert torch.equal(got, expected)
    assert int((select_top_percent(prob.numpy(), 100) != I).sum()) == 12


def test_top_percent_ties_are_deterministic():
    prob = np.full((4, 5), 0.9, dtype=np.float32)
    got = select_top_percent(prob, 30)  # 6 of 20 tied: the first six in C order
    flat = got.ravel()
    assert flat.dtype == np.uint8
    np.testing.assert_array_equal(flat[:6], 1)
    np.testing.assert_array_equal(flat[6:], I)


def test_top_percent_skips_nodata():
    prob = np.array([[np.nan, 0.9], [0.2, 0.6]], dtype=np.float32)
    got = select_top_percent(prob, 100)
    np.testing.assert_array_equal(got, [[I, 1], [0, 1]])


def test_mc_dropout_selection_keeps_90_and_70_percent_lowest_variance():
    rng = np.random.default_rng(0)
    mean = np.zeros((4, 5), dtype=np.float32)
    landslide = np.zeros(20, dtype=bool)
    landslide[rng.choice(20, 10, replace=False)] = True
    mean.ravel()[landslide] = 0.8
    mean.ravel()[~landslide] = 0.1
    variance = rng.permutation(20).astype(np.float32).reshape(4, 5) / 100  # distinct: a known order
    got = select_mc_dropout(mean, variance, keep_background=0.9, keep_landslide=0.7)
    flat, var = got.ravel(), variance.ravel()
    assert int((flat[~landslide] == 0).sum()) == 9 and int((flat[~landslide] == 1).sum()) == 0
    assert int((flat[landslide] == 1).sum()) == 7 and int((flat[landslide] == 0).sum()) == 0
    # the dropped ones are exactly the most uncertain of each class
    bg_idx, ls_idx = np.flatnonzero(~landslide), np.flatnonzero(landslide)
    assert set(bg_idx[np.argsort(var[bg_idx])[9:]]) == set(np.flatnonzero((flat == I) & ~landslide))
    assert set(ls_idx[np.argsort(var[ls_idx])[7:]]) == set(np.flatnonzero((flat == I) & landslide))
    # tensors in, tensors out
    got_t = select_mc_dropout(torch.from_numpy(mean), torch.from_numpy(variance))
    assert got_t.dtype == torch.long and np.array_equal(got_t.numpy(), got)


def test_merge_with_human_overrides_where_defined():
    pseudo = torch.tensor([[0, 1, I], [1, I, 0]])
    human = np.array([[1, I, 0], [I, I, I]], dtype=np.uint8)
    got = merge_with_human(pseudo, human)
    assert torch.equal(got, torch.tensor([[1, 1, 0], [1, I, 0]]))
    assert torch.equal(merge_with_human(pseudo, None), pseudo)
    np.testing.assert_array_equal(merge_with_human(pseudo.numpy().astype(np.uint8), human), got.numpy())
    with pytest.raises(InputError):
        merge_with_human(pseudo, np.zeros((3, 3), dtype=np.uint8))


def test_refine_threshold_tightens_then_caps():
    assert [refine_threshold(0.7, r) for r in range(6)] == [0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    assert refine_threshold(0.7, 10) == 0.95
    assert refine_threshold(0.7, 3, step=0.0) == 0.7  # the L4S first-place rule: fixed 0.7
    assert refine_threshold(0.97, 2) == 0.97  # never loosens
    with pytest.raises(InputError):
        refine_threshold(0.7, -1)


@pytest.fixture(scope="module")
def segformer():
    from engine.models import build_model

    torch.manual_seed(0)
    return build_model("segformer_b0").eval()


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_mc_dropout_probabilities_on_segformer(segformer):
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    state = {k: v.clone() for k, v in segformer.state_dict().items()}
    hooks = _hook_count(segformer)
    torch.manual_seed(3)
    mean, variance = mc_dropout_probabilities(segformer, images, passes=10, p=0.3)
    assert mean.shape == variance.shape == (2, 64, 64)
    assert float(variance.max()) > 0 and float(variance.min()) >= 0
    assert float(mean.min()) >= 0.0 and float(mean.max()) <= 1.0
    assert _hook_count(segformer) == hooks
    assert not any(m.training for m in segformer.modules())
    assert all(torch.equal(v, state[k]) for k, v in segformer.state_dict().items())
    torch.manual_seed(3)
    again = mc_dropout_probabilities(segformer, images, passes=10, p=0.3)
    assert torch.equal(again[0], mean) and torch.equal(again[1], variance)
    # without dropout every pass is the same eval() forward
    zero_mean, zero_var = mc_dropout_probabilities(segformer, images, passes=2, p=0.0)
    assert float(zero_var.max()) < 1e-10
    assert torch.allclose(zero_mean, torch.softmax(segformer(images), dim=1)[:, 1], atol=1e-5)


def test_mc_dropout_restores_train_mode_and_supports_first_layer(segformer):
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    segformer.train()
    segformer.net.encoder.eval()  # a mixed state must come back exactly
    flags = [m.training for m in segformer.modules()]
    bn = segformer.net.decoder.fuse_stage[1]
    running = bn.running_mean.clone()
    try:
        runs = [
            mc_dropout_probabilities(
                segformer, images, passes=3, where="first", generator=torch.Generator().manual_seed(0)
            )
            for _ in range(2)
        ]
        assert float(runs[0][1].max()) > 0
        assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
        assert [m.training for m in segformer.modules()] == flags
        assert torch.equal(bn.running_mean, running)  # ran in eval(): BatchNorm statistics untouched
        assert _hook_count(segformer) == 0
    finally:
        segformer.eval()
    with pytest.raises(InputError):
        mc_dropout_probabilities(segformer, images, passes=1)
