"""MRIFE training on real Bijie landslides: the three losses, pairing, the EMA teacher, fitting."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.errors import InputError
from engine.models import build_model
from engine.models.mrife import MRIFE
from engine.training.config import TrainConfig
from engine.training.method import IGNORE, Batch
from engine.training.mrife_train import (
    MRIFEMethod,
    equalise_histograms,
    pair_contrast_loss,
    poly_schedule,
    reconstruction_loss,
    supervised_contrast,
)

CPU = torch.device("cpu")
SIZE = 64
MEAN, STD = (0.45, 0.45, 0.40), (0.22, 0.20, 0.20)  # rough Bijie RGB statistics in [0, 1]
LANDSLIDES = ("ls_0000", "ls_0002", "ls_0005", "ls_0010")


@pytest.fixture(scope="module", autouse=True)
def _threads():
    saved = torch.get_num_threads()
    torch.set_num_threads(min(saved, 2))
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def batch(data_dir: Path) -> Batch:
    from PIL import Image

    images, masks = [], []
    for name in LANDSLIDES:
        image = Image.open(data_dir / "bijie" / "images" / f"{name}.png").convert("RGB")
        mask = Image.open(data_dir / "bijie" / "masks" / f"{name}.png")
        images.append(np.asarray(image.resize((SIZE, SIZE), Image.BILINEAR), dtype=np.float32) / 255)
        masks.append(np.asarray(mask.resize((SIZE, SIZE), Image.NEAREST)) > 127)  # {0, 255} → {0, 1}
    image = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    image = (image - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    return Batch(image.contiguous(), torch.from_numpy(np.stack(masks)).long())


@pytest.fixture(scope="module")
def base_model() -> MRIFE:
    torch.manual_seed(0)
    return build_model("mrife", 3, 2, backbone="resnet34")


def config(**changes) -> TrainConfig:
    return TrainConfig(model="mrife", batch_size=4, size=SIZE, epochs=1, **changes)


def method(base_model: MRIFE, **changes) -> MRIFEMethod:
    return MRIFEMethod(copy.deepcopy(base_model), config(**changes), CPU, torch.float32, 20)


# --- losses on hand-made features --------------------------------------------------------------------


def test_contrast_matches_a_hand_computed_value() -> None:
    # unit directions (1, 0), (0, 1) of class 1 and (−1, 0) of class 0, at other lengths; τ = 1.
    # anchor 1: positive 2 (s = 0), negative 3 (s = −1): −log(1 / (1 + e⁻¹)) = log(1 + e⁻¹)
    # anchor 2: positive 1 (s = 0), negative 3 (s = 0):  −log(1 / 2) = log 2
    # anchor 3: no positive, skipped
    features = torch.tensor([[3.0, 0.0], [0.0, 2.0], [-5.0, 0.0]], requires_grad=True)
    labels = torch.tensor([1, 1, 0])
    loss = supervised_contrast(features, labels, temperature=1.0)
    assert loss.item() == pytest.approx((math.log(1 + math.exp(-1)) + math.log(2)) / 2, rel=1e-6)
    # τ = 0.5 doubles every similarity: anchor 1 gives log(1 + e⁻²), anchor 2 still log 2
    halved = supervised_contrast(features, labels, temperature=0.5)
    assert halved.item() == pytest.approx((math.log(1 + math.exp(-2)) + math.log(2)) / 2, rel=1e-6)
    loss.backward()
    assert torch.isfinite(features.grad).all()


def test_contrast_of_degenerate_sets_is_zero_without_nan() -> None:
    for features, labels in (
        (torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)),  # nothing masked
        (torch.randn(1, 4), torch.tensor([1])),  # one point
        (torch.randn(3, 4), torch.tensor([0, 0, 0])),  # one class: positives, no negatives
        (torch.randn(2, 4), torch.tensor([0, 1])),  # no positives
    ):
        features.requires_grad_(True)
        loss = supervised_contrast(features, labels, 0.1)
        loss.backward()
        assert loss.item() == 0.0
        assert features.grad is None or torch.isfinite(features.grad).all()


def test_pair_losses_contrast_student_of_one_with_teacher_of_the_other() -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 4, 2, 2), torch.randn(2, 4, 2, 2)
    masked = torch.tensor([[[True, True], [False, False]], [[True, False], [True, True]]])
    labels = torch.tensor([[[1, 0], [-1, -1]], [[0, -1], [1, 1]]])
    s, t = student.permute(0, 2, 3, 1), teacher.permute(0, 2, 3, 1)
    one = supervised_contrast(
        torch.cat([s[0][masked[0]], t[1][masked[1]]]), torch.tensor([1, 0, 0, 1, 1]), 0.1
    )
    two = supervised_contrast(
        torch.cat([s[1][masked[1]], t[0][masked[0]]]), torch.tensor([0, 1, 1, 1, 0]), 0.1
    )
    got = pair_contrast_loss(student, teacher, masked, labels, 0.1)
    assert got.item() == pytest.approx((one + two).item(), rel=1e-6)
    # L_rec: per-image MSE over masked blocks and channels, the pair's two images summed
    want = sum(((s[i] - t[i])[masked[i]] ** 2).mean() for i in range(2))
    assert reconstruction_loss(student, teacher, masked).item() == pytest.approx(want.item(), rel=1e-6)
    nothing = torch.zeros_like(masked)
    assert reconstruction_loss(student, teacher, nothing).item() == 0.0
    assert pair_contrast_loss(student, teacher, nothing, labels, 0.1).item() == 0.0


def test_histogram_equalisation_is_rank_based_and_standardised() -> None:
    torch.manual_seed(0)
    x = torch.randint(0, 40, (2, 3, 16, 16)).float() ** 2  # skewed 8-bit-like bands, with ties
    out = equalise_histograms(x)
    assert torch.allclose(out.mean(dim=(2, 3)), torch.zeros(2, 3), atol=1e-5)
    assert torch.allclose(out.std(dim=(2, 3)), torch.ones(2, 3), atol=1e-2)
    # a per-band affine normalisation (positive scale) does not change the result
    assert torch.allclose(equalise_histograms(3.0 * x + 7.0), out, atol=1e-6)
    assert torch.equal(equalise_histograms(torch.full((1, 1, 4, 4), 2.0)), torch.zeros(1, 1, 4, 4))
    flat_in, flat_out = x[0, 0].flatten(), out[0, 0].flatten()
    order = flat_in.argsort()
    assert (flat_out[order].diff() >= 0).all()  # monotone


def test_poly_schedule_decays_to_the_end_value() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.007)
    sched = poly_schedule(opt, 0.007, 0.0, 10)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.007)
    assert lrs[5] == pytest.approx(0.007 * 0.5**0.9)
    assert lrs[10] == lrs[11] == 0.0


# --- the method on real samples ----------------------------------------------------------------------


def test_odd_batches_are_refused(base_model: MRIFE, batch: Batch) -> None:
    with pytest.raises(InputError, match="even"):
        MRIFEMethod(base_model, config().replace(batch_size=3), CPU, torch.float32, 10)
    m = MRIFEMethod(base_model, config(), CPU, torch.float32, 10)
    opt = m.optimizers["model"]
    assert isinstance(opt, torch.optim.SGD)  # the paper's optimiser when config.lr is unset
    assert opt.defaults["momentum"] == 0.9 and opt.defaults["weight_decay"] == 5e-4
    assert opt.param_groups[0]["lr"] == pytest.approx(0.007)
    with pytest.raises(InputError, match="even"):
        m.train_step(Batch(batch.image[:3], batch.mask[:3]))


def test_the_optimizer_option_is_honoured(base_model: MRIFE) -> None:
    """`--optimizer adamw` trains with AdamW (the card records the config, so it must be what ran)."""
    m = MRIFEMethod(base_model, config(optimizer="adamw", lr=1e-3), CPU, torch.float32, 10)
    opt = m.optimizers["model"]
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["lr"] == pytest.approx(1e-3)
    assert opt.defaults["weight_decay"] == 5e-4  # the paper's decay still applies unless set
    with pytest.raises(ValueError, match="adamw or sgd"):
        MRIFEMethod(base_model, config(optimizer="lamb"), CPU, torch.float32, 10)


def test_steps_are_finite_and_the_teacher_follows_by_ema(base_model: MRIFE, batch: Batch) -> None:
    torch.manual_seed(0)
    # a large lr moves the student far enough for the EMA check to tell λ from any other mix
    m = method(base_model, histogram_equalisation=True, lr=0.5)
    model = m.model
    assert m.optimizers["model"].param_groups[0]["lr"] == pytest.approx(0.5)
    assert not any(p is q for p in m.trainable for q in model.teacher.parameters())

    teacher_before = [p.detach().clone() for p in model.teacher.parameters()]
    losses = m.train_step(batch)
    assert set(losses) == {"loss", "rec", "cons", "ce"}
    assert all(math.isfinite(v) for v in losses.values()), losses
    assert losses["rec"] > 0 and losses["cons"] > 0  # the real masks give edge and background blocks
    a, b, g = config().mrife_weights
    assert losses["loss"] == pytest.approx(
        a * losses["rec"] + b * losses["cons"] + g * losses["ce"], rel=1e-5
    )
    # the optimiser step leaves the teacher alone; after_step applies Eq. 1 exactly
    assert all(torch.equal(p, q) for p, q in zip(model.teacher.parameters(), teacher_before, strict=True))
    student = [p.detach().clone() for p in model.student.parameters()]
    m.after_step()
    lam = model.ema_decay
    assert lam == 0.996
    largest_move = 0.0
    for t, t0, s in zip(model.teacher.parameters(), teacher_before, student, strict=True):
        want = lam * t0.double() + (1 - lam) * s.double()  # float64 reference; float32 rounds at ~1e-7
        assert torch.allclose(t.double(), want, rtol=1e-6, atol=1e-9)
        largest_move = max(largest_move, (want - t0.double()).abs().max().item())
    assert largest_move > 2e-5  # the teacher did move, by far more than the tolerance


def test_samples_without_masked_blocks_give_zero_feature_losses(base_model: MRIFE, batch: Batch) -> None:
    m = method(base_model)
    background = torch.zeros_like(batch.mask)
    background[:, :8] = IGNORE  # ignored pixels neither count as landslide nor in the cross-entropy
    losses = m.losses(Batch(batch.image, background))
    assert losses["rec"].item() == 0.0 and losses["cons"].item() == 0.0
    losses["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in m.trainable if p.grad is not None)


def test_total_loss_falls_when_overfitting_two_pairs(base_model: MRIFE, batch: Batch) -> None:
    torch.manual_seed(0)
    m = method(base_model, lr=0.05)  # the masks are redrawn every step, so L_cons is noisy at 0.007
    steps = []
    for _ in range(20):
        steps.append(m.train_step(batch))
        m.after_step()
    totals, ce = [s["loss"] for s in steps], [s["ce"] for s in steps]
    assert all(math.isfinite(v) for v in totals)
    assert np.mean(totals[-3:]) < 0.85 * np.mean(totals[:3]), totals
    assert np.mean(ce[-3:]) < 0.85 * np.mean(ce[:3]), ce
