"""The training losses on hand-made logits and masks whose values can be worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from engine.errors import InputError
from engine.training.config import TrainConfig
from engine.training.losses import KNOWN_LOSSES, SegmentationLoss, build_loss
from engine.training.method import IGNORE, Batch


def _batch(mask: torch.Tensor, soft: torch.Tensor | None = None) -> Batch:
    return Batch(image=torch.zeros(mask.shape[0], 3, *mask.shape[1:]), mask=mask, soft=soft)


def _random_case(seed: int = 0, ignore: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 2, 8, 8, generator=g) * 2
    mask = torch.randint(0, 2, (2, 8, 8), generator=g)
    if ignore:
        mask[0, :2] = IGNORE
        mask[1, :, :3] = IGNORE
    return logits, mask


def _single(name: str, **kwargs) -> SegmentationLoss:
    return SegmentationLoss({name: 1.0}, **kwargs)


def test_ce_equals_torch_with_ignore():
    logits, mask = _random_case()
    out = _single("ce")(logits, _batch(mask))
    assert set(out) == {"ce", "loss"}
    expected = F.cross_entropy(logits, mask, ignore_index=IGNORE)
    assert torch.allclose(out["ce"], expected, atol=1e-6)
    assert torch.allclose(out["loss"], expected, atol=1e-6)


def test_wce_given_weights_equals_torch():
    logits, mask = _random_case(1)
    out = _single("wce", class_weights=(1.0, 5.0))(logits, _batch(mask))
    expected = F.cross_entropy(logits, mask, weight=torch.tensor([1.0, 5.0]), ignore_index=IGNORE)
    assert torch.allclose(out["wce"], expected, atol=1e-6)


def test_wce_inverse_frequency_from_the_batch():
    logits, _ = _random_case(2, ignore=False)
    mask = torch.zeros(2, 8, 8, dtype=torch.long)
    mask[:, :2] = 1  # a quarter landslide -> weights n / (2 n_c) = (2/3, 2)
    mask[0, 7] = IGNORE  # ignored pixels do not count toward the frequencies
    counts = torch.tensor([(mask == 0).sum(), (mask == 1).sum()], dtype=torch.float32)
    weights = counts.sum() / (2 * counts)
    out = _single("wce")(logits, _batch(mask))
    expected = F.cross_entropy(logits, mask, weight=weights, ignore_index=IGNORE)
    assert torch.allclose(out["wce"], expected, atol=1e-6)


def test_uniform_logits_give_the_closed_form_values():
    """All-zero logits: p = 0.5 everywhere, so every component has a closed form."""
    mask = torch.zeros(1, 4, 4, dtype=torch.long)
    mask[0, 0] = 1  # 4 landslide, 12 background pixels
    logits = torch.zeros(1, 2, 4, 4)
    n, counts = 16, (12, 4)
    expected = {
        "ce": math.log(2),
        "wce": math.log(2),
        "focal": 0.25 * math.log(2),  # (1 − 0.5)² · ln 2, the same for both one-vs-rest classes
        "dice": sum(1 - n_c / (0.5 * n + n_c) for n_c in counts) / 2,
        "jaccard": sum(1 - n_c / (n + n_c) for n_c in counts) / 2,
        "lovasz": 0.5,  # every error is 0.5, the Lovász extension of an all-wrong Jaccard loss (1)
    }
    for name, value in expected.items():
        got = _single(name)(logits, _batch(mask))[name]
        assert float(got) == pytest.approx(value, abs=1e-5), name


def test_perfect_logits_give_near_zero():
    _, mask = _random_case(3)
    target = mask.masked_fill(mask == IGNORE, 0)
    logits = 20.0 * (2 * F.one_hot(target, 2).permute(0, 3, 1, 2).float() - 1)
    for name in KNOWN_LOSSES:
        assert float(_single(name)(logits, _batch(mask))[name]) < 1e-4, name


@pytest.mark.parametrize("name", KNOWN_LOSSES)
def test_ignored_pixels_change_nothing(name):
    logits, mask = _random_case(4)
    loss = _single(name, ohem=0.5, ohem_min_kept=4)
    before = loss(logits, _batch(mask))[name]
    changed = logits.clone()
    ignored = (mask == IGNORE).unsqueeze(1).expand_as(logits)
    changed[ignored] = torch.randn(int(ignored.sum())) * 50
    assert torch.allclose(loss(changed, _batch(mask))[name], before, atol=1e-6)
    # and no gradient reaches an ignored pixel
    leaf = changed.clone().requires_grad_(True)
    loss(leaf, _batch(mask))["loss"].backward()
    assert float(leaf.grad[ignored].abs().max()) == 0.0


def test_weights_combine_linearly():
    logits, mask = _random_case(5)
    batch = _batch(mask)
    combined = SegmentationLoss({"ce": 0.4, "focal": 0.6, "lovasz": 2.0})(logits, batch)
    parts = {name: _single(name)(logits, batch)[name] for name in ("ce", "focal", "lovasz")}
    assert torch.allclose(combined["ce"], 0.4 * parts["ce"], atol=1e-6)
    assert torch.allclose(combined["focal"], 0.6 * parts["focal"], atol=1e-6)
    expected = 0.4 * parts["ce"] + 0.6 * parts["focal"] + 2.0 * parts["lovasz"]
    assert torch.allclose(combined["loss"], expected, atol=1e-6)


def test_build_loss_from_config_and_default():
    logits, mask = _random_case(6)
    out = build_loss(TrainConfig(model="segformer_b0"))(logits, _batch(mask))
    assert set(out) == {"ce", "loss"}
    config = TrainConfig(model="segformer_b0", loss={"wce": 1.0, "dice": 0.5}, class_weights=(1.0, 3.0))
    assert set(build_loss(config)(logits, _batch(mask))) == {"wce", "dice", "loss"}


def test_unknown_or_bad_values_raise_input_error():
    with pytest.raises(InputError) as info:
        build_loss(TrainConfig(model="segformer_b0", loss={"ce": 1.0, "hinge": 1.0}))
    message = str(info.value)
    assert "hinge" in message and all(name in message for name in KNOWN_LOSSES)
    with pytest.raises(InputError):
        SegmentationLoss({"ce": -1.0})
    with pytest.raises(InputError):
        SegmentationLoss({"ce": 0.0})
    with pytest.raises(InputError):
        SegmentationLoss({"ce": 1.0}, ohem=1.5)
    logits, mask = _random_case(7)
    with pytest.raises(InputError):
        SegmentationLoss({"wce": 1.0}, class_weights=(1.0, 2.0, 3.0))(logits, _batch(mask))


def test_soft_one_hot_equals_hard():
    logits, mask = _random_case(8)
    one_hot = F.one_hot(mask.masked_fill(mask == IGNORE, 0), 2).permute(0, 3, 1, 2).float()
    one_hot[(mask == IGNORE).unsqueeze(1).expand_as(one_hot)] = 0.5  # junk where ignored
    for name, kwargs in (("ce", {}), ("wce", {}), ("wce", {"class_weights": (1.0, 4.0)})):
        loss = _single(name, **kwargs)
        hard = loss(logits, _batch(mask))[name]
        soft = loss(logits, _batch(mask, one_hot))[name]
        assert torch.allclose(hard, soft, atol=1e-6), name


def test_soft_labels_reach_ce_and_the_hard_mask_reaches_the_rest():
    logits, mask = _random_case(9, ignore=False)
    lam = 0.7
    soft = torch.stack([torch.full((2, 8, 8), 1 - lam), torch.full((2, 8, 8), lam)], dim=1)
    expected = -(soft * F.log_softmax(logits, dim=1)).sum(1).mean()
    assert torch.allclose(_single("ce")(logits, _batch(mask, soft))["ce"], expected, atol=1e-6)
    for name in ("focal", "dice", "lovasz", "jaccard"):
        loss = _single(name)
        assert torch.allclose(loss(logits, _batch(mask, soft))[name], loss(logits, _batch(mask))[name])


def test_ohem_keeps_the_hardest_fraction():
    mask = torch.zeros(1, 4, 4, dtype=torch.long)
    logits = torch.zeros(1, 2, 4, 4)
    logits[:, 0] = 6.0  # easy: confidently right
    logits[0, 0, 0, :] = -3.0  # four hard pixels: confidently wrong
    per_pixel = F.cross_entropy(logits, mask, reduction="none").flatten()
    mask[0, 3, :] = IGNORE  # even harder, but ignored: never among the hardest
    logits[0, 0, 3, :] = -9.0
    per_pixel = per_pixel[:12]
    plain = _single("ce")(logits, _batch(mask))["ce"]
    hard = _single("ce", ohem=0.25, ohem_min_kept=1)(logits, _batch(mask))["ce"]
    assert float(hard) == pytest.approx(float(per_pixel.topk(4).values.mean()), abs=1e-6)
    assert float(hard) >= float(plain)
    # focal follows the same set; the minimum count wins over a small fraction
    assert float(_single("focal", ohem=0.25, ohem_min_kept=1)(logits, _batch(mask))["focal"]) > float(
        _single("focal")(logits, _batch(mask))["focal"]
    )
    everything = _single("ce", ohem=0.25, ohem_min_kept=100)(logits, _batch(mask))["ce"]
    assert torch.allclose(everything, plain)
    # region losses ignore OHEM
    lov = _single("lovasz", ohem=0.25, ohem_min_kept=1)(logits, _batch(mask))["lovasz"]
    assert torch.allclose(lov, _single("lovasz")(logits, _batch(mask))["lovasz"])


def test_gradients_flow_through_every_component():
    logits, mask = _random_case(10)
    leaf = logits.clone().requires_grad_(True)
    loss = SegmentationLoss(dict.fromkeys(KNOWN_LOSSES, 1.0), ohem=0.5, ohem_min_kept=4)
    out = loss(leaf, _batch(mask))
    out["loss"].backward()
    assert torch.isfinite(leaf.grad).all() and float(leaf.grad.abs().sum()) > 0
    for name in KNOWN_LOSSES:
        assert out[name].requires_grad, name


def test_all_ignored_batch_is_zero_and_differentiable():
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    mask = torch.full((1, 4, 4), IGNORE, dtype=torch.long)
    out = SegmentationLoss(dict.fromkeys(KNOWN_LOSSES, 1.0), ohem=0.5)(logits, _batch(mask))
    assert all(float(v.detach()) == 0.0 for v in out.values())
    out["loss"].backward()
    assert float(logits.grad.abs().sum()) == 0.0


def test_bf16_autocast_is_finite():
    _, mask = _random_case(11)
    conv = torch.nn.Conv2d(3, 2, 1)
    image = torch.randn(2, 3, 8, 8) * 1e3  # extreme logits
    loss = SegmentationLoss(dict.fromkeys(KNOWN_LOSSES, 1.0), ohem=0.3, ohem_min_kept=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = conv(image)
        assert logits.dtype == torch.bfloat16
        out = loss(logits, _batch(mask))
    out["loss"].backward()
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in out.values())
    assert torch.isfinite(conv.weight.grad).all()
