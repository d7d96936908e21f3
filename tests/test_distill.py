"""KDA phase 1 on real Bijie images: teachers, the two players' updates, KL fitting, resume state."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from engine.errors import InputError
from engine.models import build_model
from engine.models.checkpoint import save_model
from engine.models.teachers import RegistryTeacher, dinov2_architecture
from engine.training.config import TrainConfig
from engine.training.distill import DistillMethod, build_teacher, channel_kl, sample_at_cells
from engine.training.method import Batch

CPU = torch.device("cpu")
SIZE = 64
MEAN, STD = (0.45, 0.45, 0.40), (0.22, 0.20, 0.20)  # rough Bijie RGB statistics in [0, 1]


@pytest.fixture(scope="module", autouse=True)
def _threads():
    saved = torch.get_num_threads()
    torch.set_num_threads(min(saved, 2))
    torch.manual_seed(0)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def batch(data_dir: Path) -> Batch:
    images, masks = [], []
    for name in ("ls_0000", "ls_0002", "ls_0005", "ls_0010"):
        image = Image.open(data_dir / "bijie" / "images" / f"{name}.png").convert("RGB")
        mask = Image.open(data_dir / "bijie" / "masks" / f"{name}.png")
        images.append(np.asarray(image.resize((SIZE, SIZE), Image.BILINEAR), dtype=np.float32) / 255)
        masks.append(np.asarray(mask.resize((SIZE, SIZE), Image.NEAREST)) > 127)
    image = (torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2) - torch.tensor(MEAN)[:, None, None]) / (
        torch.tensor(STD)[:, None, None]
    )
    return Batch(image.contiguous(), torch.from_numpy(np.stack(masks)).long())


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    return save_model(build_model("kda_student", 3, 2), path)


def config(teacher: Path | str, mode: str = "kda", **changes) -> TrainConfig:
    return TrainConfig(
        model="kda_student", distill=mode, teacher=str(teacher), batch_size=4, size=SIZE, distill_epochs=2,
        **changes,
    )  # fmt: skip


def student(width: int = 256) -> nn.Module:
    return build_model("kda_student", 3, 2, teacher_channels=width)


def method(teacher_file: Path, mode: str = "kda", **kwargs) -> DistillMethod:
    return DistillMethod(student(), config(teacher_file, mode), CPU, torch.float32, 10, **kwargs)


def snapshot(*modules: nn.Module) -> list[dict[str, torch.Tensor]]:
    return [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in modules]


def changed(before: dict[str, torch.Tensor], module: nn.Module, params_only: bool = True) -> set[str]:
    now = dict(module.named_parameters()) if params_only else module.state_dict()
    return {k for k, v in now.items() if not torch.equal(before[k], v.detach())}


# --- teachers ----------------------------------------------------------------------------------------


def test_checkpoint_teacher_is_frozen_registry_model(teacher_file: Path) -> None:
    teacher = build_teacher(config(teacher_file), 3)
    assert isinstance(teacher, RegistryTeacher)
    assert teacher.channels == 256
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training


def test_teacher_errors_say_what_to_do(teacher_file: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="RGB"):
        build_teacher(config("dinov2_vits14"), 4)
    with pytest.raises(InputError, match="dinov2_vitl14"):
        build_teacher(config("dinov2_vitg14"), 3)
    with pytest.raises(InputError, match="bands"):
        build_teacher(config(teacher_file), 4)
    segformer = save_model(build_model("segformer_b0", 3, 2), tmp_path / "segformer.safetensors")
    with pytest.raises(InputError, match="encoder_features"):
        build_teacher(config(segformer), 3)
    with pytest.raises(InputError, match="teacher_channels=256"):
        DistillMethod(student(384), config(teacher_file), CPU, torch.float32, 10)
    with pytest.raises(InputError, match="kd or kda"):
        DistillMethod(student(), config(teacher_file), CPU, torch.float32, 10, mode="none")


# --- pieces ------------------------------------------------------------------------------------------


def test_sampling_aligns_grids_in_pixel_space() -> None:
    same = torch.randn(2, 5, 3, 4)
    assert torch.allclose(sample_at_cells(same, 32, (3, 4)), same, atol=1e-6)
    # a 14 px grid whose value is each cell's centre x-coordinate, read at 32 px cell centres
    xs = (torch.arange(10, dtype=torch.float32) + 0.5) * 14
    ramp = xs.expand(1, 1, 2, 10).contiguous()
    got = sample_at_cells(ramp, 14, (1, 4))[0, 0, 0]
    assert torch.allclose(got, torch.tensor([16.0, 48.0, 80.0, 112.0]), atol=1e-4)


def test_channel_kl_is_zero_only_for_equal_distributions() -> None:
    t = torch.randn(2, 8, 3, 3)
    assert channel_kl(t, t).item() == pytest.approx(0.0, abs=1e-6)
    assert channel_kl(t + 5.0, t).item() == pytest.approx(0.0, abs=1e-5)  # a softmax ignores a shift
    assert channel_kl(torch.randn(2, 8, 3, 3), t).item() > 0


# --- steps -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["kd", "kda"])
def test_steps_give_finite_losses(teacher_file: Path, batch: Batch, mode: str) -> None:
    m = method(teacher_file, mode)
    keys = {"loss", "kl"} | ({"adv", "disc"} if mode == "kda" else set())
    assert set(m.optimizers) == ({"student", "discriminator"} if mode == "kda" else {"student"})
    assert set(m.extra_modules) == ({"discriminator"} if mode == "kda" else set())
    for _ in range(3):
        losses = m.train_step(batch)
        assert set(losses) == keys
        assert all(math.isfinite(v) for v in losses.values()), losses
    assert m.schedulers["student"].get_last_lr()[0] < 5e-5


def test_each_player_changes_only_its_own_parameters(teacher_file: Path, batch: Batch) -> None:
    m = method(teacher_file)
    head, teacher = m.discriminator.head, m.teacher
    model_before, head_before, teacher_before = snapshot(m.model, head, teacher)

    m.discriminator_step(batch)
    assert changed(model_before, m.model) == set()
    assert changed(teacher_before, teacher, params_only=False) == set()
    assert changed(head_before, head) == {k for k, _ in head.named_parameters()}

    model_before, head_before = snapshot(m.model, head)
    head.zero_grad(set_to_none=True)
    m.student_step(batch)
    moved = changed(model_before, m.model)
    assert changed(head_before, head) == set()
    assert all(p.grad is None for p in head.parameters())  # gradients passed through, none were kept
    assert changed(teacher_before, teacher, params_only=False) == set()
    assert any(k.startswith("encoder.") for k in moved) and any(k.startswith("to_teacher.") for k in moved)
    assert not any(k.startswith("decoder.") for k in moved)


def test_kl_falls_when_overfitting_four_images(teacher_file: Path, batch: Batch) -> None:
    torch.manual_seed(0)
    m = method(teacher_file, "kd", lr=1e-3, lr_end=1e-3)
    teacher_before = snapshot(m.teacher)[0]
    kls = [m.train_step(batch)["kl"] for _ in range(30)]
    assert all(math.isfinite(v) for v in kls)
    assert np.mean(kls[-3:]) < 0.5 * np.mean(kls[:3]), kls
    assert changed(teacher_before, m.teacher, params_only=False) == set()


def test_state_round_trip_resumes_identically(teacher_file: Path, batch: Batch) -> None:
    torch.manual_seed(0)
    first = method(teacher_file)
    for _ in range(2):
        first.train_step(batch)
    buffer = io.BytesIO()  # through bytes as a resume file goes, so no tensor is shared with `first`
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert set(state["modules"]) == {"discriminator"}
    assert not any(k.startswith("backbone") for k in state["modules"]["discriminator"])  # no teacher copy

    second = method(teacher_file)
    second.model.load_state_dict(first.model.state_dict())
    second.load_state_dict(state)
    assert second.schedulers["student"].last_epoch == first.schedulers["student"].last_epoch == 2
    for k, v in first.discriminator.head.state_dict().items():
        assert torch.equal(v, second.discriminator.head.state_dict()[k])
    a, b = first.train_step(batch), second.train_step(batch)
    assert a == pytest.approx(b, rel=1e-4)
    for (name, p), q in zip(first.model.named_parameters(), second.model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), name


# --- DINOv2 ------------------------------------------------------------------------------------------


def test_dinov2_teacher_kda_steps(tmp_path: Path, batch: Batch) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    weights = tmp_path / "vits14.safetensors"
    save_file(
        {k: v.contiguous() for k, v in dinov2_architecture("dinov2_vits14").state_dict().items()}, weights
    )
    cfg = config("dinov2_vits14", teacher_weights=str(weights))
    teacher = build_teacher(cfg, 3)
    m = DistillMethod(student(teacher.channels), cfg, CPU, torch.float32, 10, teacher=teacher)
    before = snapshot(m.teacher)[0]
    o_s, o_t = m.outputs(batch, grad=False)
    assert o_s.shape == o_t.shape == (4, 384, 2, 2)  # the 5×5 patch grid sampled at the 2×2 student grid
    for _ in range(2):
        losses = m.train_step(batch)
        assert all(math.isfinite(v) for v in losses.values()), losses
    assert changed(before, m.teacher, params_only=False) == set()
