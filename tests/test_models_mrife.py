"""MRIFE: shapes at any size, the block mask module, the EMA teacher and the training outputs."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch

from engine.models import build_model
from engine.models.common import pad_to_multiple
from engine.models.mrife import MRIFE, build_mrife
from engine.models.mrife_parts import (
    BACKGROUND,
    EDGE,
    INTERIOR,
    classify_blocks,
    gather_masked,
    make_block_mask,
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread: on a busy 2-core runner OpenMP spinning makes two threads ~10× slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def r34() -> MRIFE:
    torch.manual_seed(0)
    return build_model("mrife", 3, 2, backbone="resnet34").eval()


@pytest.fixture(scope="module")
def r34_14() -> MRIFE:
    torch.manual_seed(1)
    return build_model("mrife", 14, 3, backbone="resnet34").eval()


def _blocks_mask(counts: list[list[int]], block: int = 8) -> torch.Tensor:
    """A (1, H, W) mask whose block (r, c) holds exactly counts[r][c] landslide pixels."""
    rows, cols = len(counts), len(counts[0])
    mask = torch.zeros(1, rows * block, cols * block, dtype=torch.long)
    for r, row in enumerate(counts):
        for c, k in enumerate(row):
            flat = torch.zeros(block * block, dtype=torch.long)
            flat[:k] = 1
            mask[0, r * block : (r + 1) * block, c * block : (c + 1) * block] = flat.view(block, block)
    return mask


# The paper's thresholds: background < 7, edge 7–57, interior > 57 landslide pixels of 64.
COUNTS = [[0, 6, 7, 30], [57, 58, 64, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
B, E, INT = BACKGROUND, EDGE, INTERIOR
CLASSES = [[B, B, E, E], [E, INT, INT, B], [B, B, B, B], [B, B, B, B]]


# ----------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("size", [(64, 64), (128, 128), (75, 93)])
def test_forward_shapes_3_bands(r34: MRIFE, size: tuple[int, int]) -> None:
    with torch.no_grad():
        assert r34(torch.randn(1, 3, *size)).shape == (1, 2, *size)


@pytest.mark.parametrize("size", [(64, 64), (75, 93)])
def test_forward_shapes_14_bands(r34_14: MRIFE, size: tuple[int, int]) -> None:
    with torch.no_grad():
        assert r34_14(torch.randn(1, 14, *size)).shape == (1, 3, *size)


def test_default_resnet101_forward() -> None:
    model = build_model("mrife", 3, 2).eval()
    assert model.scarp_config["architecture"] == "mrife"
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 2, 64, 64)


def test_encoder_features_deepest_last(r34: MRIFE) -> None:
    with torch.no_grad():
        feats = r34.encoder_features(torch.randn(1, 3, 75, 93))
    assert [f.shape[-2:] for f in feats] == [(40, 48), (20, 24)] + [(10, 12)] * 4
    assert feats[-1].shape[1] == 256


def test_bad_options_raise() -> None:
    with pytest.raises(ValueError, match="unknown MRIFE option"):
        build_mrife(3, 2, backbone="resnet34", depth=3)
    with pytest.raises(ValueError, match="backbone"):
        build_mrife(3, 2, backbone="vgg16")
    with pytest.raises(ValueError, match="block"):
        build_mrife(3, 2, backbone="resnet34", block=12)
    with pytest.raises(ValueError, match="ema_decay"):
        build_mrife(3, 2, backbone="resnet34", ema_decay=1.5)


# ------------------------------------------------------------------------------------ mask module
def test_block_classes_follow_the_thresholds() -> None:
    assert classify_blocks(_blocks_mask(COUNTS)).tolist() == [CLASSES]


def test_thresholds_scale_with_block_size() -> None:
    # 10 % and 90 % of 256 pixels: 25 → background, 26 and 230 → edge, 231 → interior.
    got = classify_blocks(_blocks_mask([[25, 26, 230, 231]], block=16), block=16)
    assert got.tolist() == [[[BACKGROUND, EDGE, EDGE, INTERIOR]]]


def test_masking_equal_edge_and_background_no_interior() -> None:
    mask = _blocks_mask(COUNTS)
    bm = make_block_mask(mask, 8, generator=torch.Generator().manual_seed(3))
    classes = torch.tensor([CLASSES])
    assert torch.equal(bm.classes, classes)
    assert not bm.masked[classes == INTERIOR].any()
    # All 3 edge blocks (the smaller class) and 3 of the 11 background blocks.
    assert bm.masked[classes == EDGE].all()
    assert int(bm.masked[classes == BACKGROUND].sum()) == 3
    assert torch.equal(bm.labels[bm.masked], classes[bm.masked])
    assert (bm.labels[~bm.masked] == -1).all()
    masked_image = bm.apply(torch.ones(1, 3, 32, 32))
    assert torch.equal(masked_image == 0, bm.pixel_mask().expand(-1, 3, -1, -1))


def test_masking_is_deterministic_with_a_generator() -> None:
    mask = _blocks_mask(COUNTS).repeat(2, 1, 1)
    seeds = (5, 5, 6, 7)
    draws = [make_block_mask(mask, 8, generator=torch.Generator().manual_seed(s)).masked for s in seeds]
    assert torch.equal(draws[0], draws[1])
    assert not all(torch.equal(draws[0], d) for d in draws[2:])


def test_ratio_and_images_without_edges() -> None:
    mask = torch.cat([_blocks_mask(COUNTS), torch.zeros(1, 32, 32, dtype=torch.long)])
    bm = make_block_mask(mask, 8, ratio=0.5, generator=torch.Generator().manual_seed(0))
    assert bm.masked[0].sum() == 4  # ceil(0.5 × 3) edge + as many background blocks
    assert not bm.masked[1].any()
    with pytest.raises(ValueError, match="multiple"):
        classify_blocks(torch.zeros(1, 30, 32))


def test_gather_masked_points_and_labels() -> None:
    bm = make_block_mask(_blocks_mask(COUNTS), 8, generator=torch.Generator().manual_seed(0))
    feats = torch.arange(4 * 16, dtype=torch.float32).view(1, 4, 4, 4)
    points, labels = gather_masked(feats, bm)
    assert points.shape == (6, 4) and labels.tolist().count(EDGE) == 3
    rows, cols = torch.nonzero(bm.masked[0], as_tuple=True)
    assert torch.equal(points, feats[0, :, rows, cols].T)


# ------------------------------------------------------------------------------------------- EMA
def test_teacher_is_frozen_separate_and_moves_by_one_minus_lambda(r34: MRIFE) -> None:
    r34 = copy.deepcopy(r34)
    assert not any(p.requires_grad for p in r34.teacher.parameters())
    student_ptrs = {p.data_ptr() for p in r34.student.parameters()}
    assert student_ptrs.isdisjoint(p.data_ptr() for p in r34.teacher.parameters())
    assert student_ptrs.isdisjoint(p.data_ptr() for p in r34.segmentation.parameters())
    with torch.no_grad():
        for p in r34.student.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in r34.teacher.parameters()]
    r34.update_teacher()
    lam = 0.996
    for t0, t1, s in zip(before, r34.teacher.parameters(), r34.student.parameters(), strict=True):
        torch.testing.assert_close(t1, lam * t0 + (1 - lam) * s, rtol=0, atol=1e-6)
        assert not torch.equal(t1, t0)


def test_inference_uses_teacher_not_student(r34: MRIFE) -> None:
    r34 = copy.deepcopy(r34)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = r34(x)
        for p in r34.student.parameters():
            p.add_(1.0)
        assert torch.equal(r34(x), ref)
        r34.teacher.aspp.project[0].weight.mul_(2.0)
        assert not torch.allclose(r34(x), ref)


# -------------------------------------------------------------------------------------- training
def test_forward_train_outputs(r34: MRIFE) -> None:
    image = torch.randn(2, 3, 45, 61)
    mask = torch.zeros(2, 45, 61, dtype=torch.long)
    mask[0, 10:30, 20:50] = 1
    mask[1, 20:45, 0:30] = 1
    r34.train()
    try:
        out = r34.forward_train(image, mask, torch.Generator().manual_seed(0))
        again = r34.forward_train(image, mask, torch.Generator().manual_seed(0))
    finally:
        r34.eval()
    grid = (2, 6, 8)
    assert out["logits"].shape == (2, 2, 45, 61)
    assert out["student_features"].shape == out["teacher_features"].shape == (2, 256, 6, 8)
    assert out["student_features"].requires_grad and not out["teacher_features"].requires_grad
    assert out["masked"].shape == out["block_labels"].shape == out["block_classes"].shape == grid
    assert out["masked_image"].shape == image.shape
    assert torch.equal(out["masked"], again["masked"])
    # Blocks describe the padded mask (reflected like the image), and edge/background counts match.
    padded = pad_to_multiple(mask[:, None].float(), 8)[0][:, 0]
    assert torch.equal(out["block_classes"], classify_blocks(padded))
    labels = out["block_labels"]
    for i in range(2):
        assert (labels[i] == EDGE).sum() == (labels[i] == BACKGROUND).sum() > 0
    assert torch.equal(labels >= 0, out["masked"])
    assert not (out["block_classes"][out["masked"]] == INTERIOR).any()
    hidden = out["masked"].repeat_interleave(8, 1).repeat_interleave(8, 2)[:, None, :45, :61].expand_as(image)
    assert (out["masked_image"][hidden] == 0).all()
    assert torch.equal(out["masked_image"][~hidden], image[~hidden])


def test_forward_train_rejects_a_mismatched_mask(r34: MRIFE) -> None:
    with pytest.raises(ValueError, match="does not match"):
        r34.forward_train(torch.randn(1, 3, 32, 32), torch.zeros(1, 32, 31))
    with pytest.raises(ValueError, match="does not match"):
        r34.forward_train(torch.randn(1, 3, 32, 32), torch.zeros(1, 2, 32, 32))


def test_block_16_pools_features_to_the_block_grid() -> None:
    model = build_mrife(3, 2, backbone="resnet34", block=16).eval()
    mask = torch.zeros(1, 40, 40)
    mask[0, 5:30, 8:33] = 1
    with torch.no_grad():
        out = model.forward_train(torch.randn(1, 3, 40, 40), mask, torch.Generator().manual_seed(0))
    assert out["logits"].shape == (1, 2, 40, 40)
    assert out["student_features"].shape == (1, 256, 3, 3) and out["masked"].shape == (1, 3, 3)


def test_every_trainable_parameter_gets_a_gradient(r34: MRIFE) -> None:
    x = torch.randn(1, 3, 48, 48)
    r34.train()
    r34.zero_grad(set_to_none=True)
    try:
        loss = r34(x).sum() + sum(t.sum() for t in r34.auxiliary_outputs(x))
        loss.backward()
    finally:
        r34.eval()
    missing = [n for n, p in r34.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing[:5]
    assert all(p.grad is None for p in r34.teacher.parameters())
    r34.zero_grad(set_to_none=True)


def test_eval_mode_is_deterministic(r34: MRIFE) -> None:
    x = torch.randn(1, 3, 37, 51)
    with torch.no_grad():
        assert torch.equal(r34(x), r34(x))
        assert torch.equal(r34.auxiliary_outputs(x)[0], r34.auxiliary_outputs(x)[0])
