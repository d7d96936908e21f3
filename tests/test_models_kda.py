"""KDA student, teachers and discriminator: shapes, parameter budget, gradients, safe weight loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from engine.errors import InputError
from engine.models import build_model
from engine.models.kda import GSoftmax, KDAStudent, build_kda_student
from engine.models.teachers import (
    DINOv2Teacher,
    Discriminator,
    RegistryTeacher,
    build_dinov2_teacher,
    dinov2_architecture,
)


@pytest.fixture(scope="module", autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def students() -> dict[int, KDAStudent]:
    return {c: build_model("kda_student", c, 2).eval() for c in (3, 14)}


@pytest.fixture(scope="module")
def vits14_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("dinov2") / "vits14.safetensors"
    save_file({k: v.contiguous() for k, v in dinov2_architecture("dinov2_vits14").state_dict().items()}, path)
    return path


@pytest.fixture(scope="module")
def vits14(vits14_file: Path) -> DINOv2Teacher:
    return build_dinov2_teacher("dinov2_vits14", vits14_file)


# --- student ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("in_channels", [3, 14])
@pytest.mark.parametrize("size", [(64, 64), (128, 128), (75, 93)])
def test_forward_gives_full_size_logits(students, in_channels: int, size: tuple[int, int]) -> None:
    with torch.no_grad():
        logits = students[in_channels](torch.randn(2, in_channels, *size))
    assert logits.shape == (2, 2, *size)
    assert torch.isfinite(logits).all()


def test_encoder_features_and_projection(students) -> None:
    model = students[3]
    with torch.no_grad():
        feats = model.encoder_features(torch.randn(1, 3, 75, 93))  # padded to 96 × 96
        projected = model.project_to_teacher(feats[-1])
        aux = model.auxiliary_outputs(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape[-2:]) for f in feats] == [(24, 24), (12, 12), (6, 6), (3, 3)]
    assert [f.shape[1] for f in feats] == model.encoder_channels == [32, 64, 160, 256]
    assert [f.shape for f in model.stage_features(torch.zeros(1, 3, 64, 64))][-1] == (1, 256, 2, 2)
    assert projected.shape == (1, 384, 3, 3)
    assert [a.shape for a in aux] == [(1, 384, 2, 2)]


def test_decoder_parameter_budget() -> None:
    model = build_kda_student(3, 2)
    decoder = model.decoder_parameter_count()
    total = sum(p.numel() for p in model.parameters())
    print(f"\nKDA student pvt_v2_b0: total {total / 1e6:.3f} M, DCF decoder {decoder / 1e6:.3f} M")
    assert 150_000 <= decoder <= 600_000
    for backbone, channels in (("pvt_v2_b1", [64, 128, 320, 512]), ("pvt_v2_b2", [64, 128, 320, 512])):
        other = build_kda_student(3, 2, backbone=backbone, teacher_channels=768)
        assert other.encoder_channels == channels
        assert other.project_to_teacher(torch.zeros(1, 512, 2, 2)).shape == (1, 768, 2, 2)
        print(f"{backbone}: total {sum(p.numel() for p in other.parameters()) / 1e6:.3f} M")


@pytest.mark.parametrize(
    "options",
    [{"backbone": "resnet50"}, {"decoder_channels": 0}, {"teacher_channels": "384"}, {"widht": 32}],
)
def test_unknown_options_are_value_errors(options: dict) -> None:
    with pytest.raises(ValueError, match="KDA"):
        build_model("kda_student", 3, 2, **options)


def test_gsoftmax_is_shared_and_normalised(students) -> None:
    model = students[3]
    instances = [m for m in model.modules() if isinstance(m, GSoftmax)]
    assert instances == [model.decoder.gsoftmax]
    calls: list[torch.Tensor] = []
    handle = model.decoder.gsoftmax.register_forward_hook(lambda _m, _i, out: calls.append(out))
    try:
        with torch.no_grad():
            model(torch.randn(2, 3, 64, 64))
    finally:
        handle.remove()
    assert len(calls) == 4  # one shared gate serves all four stages
    width = model.decoder.gsoftmax.channels
    for weights in calls:
        assert weights.shape == (2, width)
        assert (weights > 0).all()
        torch.testing.assert_close(weights.sum(dim=1), torch.full((2,), float(width)))
    # uniform scores leave a feature map unchanged: the weights average to one
    gate = GSoftmax(8)
    nn.init.zeros_(gate.gate.weight)
    nn.init.zeros_(gate.gate.bias)
    torch.testing.assert_close(gate(torch.randn(3, 8, 1, 1)), torch.ones(3, 8))


def test_every_trainable_parameter_gets_a_gradient() -> None:
    model = build_kda_student(3, 2).train()
    x = torch.randn(2, 3, 64, 64)
    loss = model(x).sum() + sum(t.sum() for t in model.auxiliary_outputs(x))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing


def test_eval_is_deterministic(students) -> None:
    x = torch.randn(1, 14, 75, 93)
    with torch.no_grad():
        a, b = students[14](x), students[14](x)
    assert torch.equal(a, b)


# --- DINOv2 teacher --------------------------------------------------------------------------------


def test_dinov2_without_weights_explains_how_to_provide_them() -> None:
    with pytest.raises(InputError) as info:
        build_dinov2_teacher("dinov2_vits14", None)
    message = str(info.value)
    assert "cannot be downloaded" in message
    assert "dinov2_vits14_pretrain.pth" in message
    assert "--teacher-weights" in message


def test_dinov2_unknown_name() -> None:
    with pytest.raises(ValueError, match="dinov2_vits14"):
        build_dinov2_teacher("dinov2_vitg14", None)


def test_dinov2_loads_local_safetensors(vits14: DINOv2Teacher) -> None:
    assert vits14.channels == 384
    assert not any(p.requires_grad for p in vits14.parameters())
    vits14.train()
    assert not vits14.training and not vits14.vit.training
    assert vits14.features(torch.randn(1, 3, 56, 56)).shape == (1, 384, 4, 4)
    assert vits14.features(torch.randn(2, 3, 60, 50)).shape == (2, 384, 5, 4)  # padded to 70 × 56
    with pytest.raises(ValueError, match="3 bands"):
        vits14.features(torch.randn(1, 4, 56, 56))


def test_dinov2_loads_original_key_layout(vits14_file: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(vits14_file))
    state["mask_token"] = torch.zeros(1, 384)  # only the original DINOv2 release has it
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(state, path)
    teacher = build_dinov2_teacher("dinov2_vits14", path)
    torch.testing.assert_close(teacher.vit.blocks[0].attn.qkv.weight, state["blocks.0.attn.qkv.weight"])


def test_dinov2_wrong_keys_are_named(vits14_file: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(vits14_file))
    del state["blocks.3.norm1.weight"]
    state["extra.weight"] = torch.zeros(2)
    path = tmp_path / "broken.safetensors"
    save_file(state, path)
    with pytest.raises(InputError, match=r"blocks\.3\.norm1\.weight.*extra\.weight"):
        build_dinov2_teacher("dinov2_vits14", path)
    state = load_file(str(vits14_file))
    state["norm.weight"] = torch.ones(10)  # e.g. weights of another model size
    save_file(state, path)
    with pytest.raises(InputError, match=r"do not fit dinov2_vits14.*norm\.weight"):
        build_dinov2_teacher("dinov2_vits14", path)
    with pytest.raises(InputError, match="not found"):
        build_dinov2_teacher("dinov2_vits14", tmp_path / "absent.pth")
    (tmp_path / "weights.bin").write_bytes(b"\0")
    with pytest.raises(InputError, match="unsupported"):
        build_dinov2_teacher("dinov2_vits14", tmp_path / "weights.bin")


class _Payload:
    """Unpickling this creates a file: the kind of checkpoint that must never be executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_dinov2_refuses_pickled_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"pos_embed": torch.zeros(1), "payload": _Payload(marker)}, path)
    assert not marker.exists()
    with pytest.raises(InputError, match="refused"):
        build_dinov2_teacher("dinov2_vits14", path)
    assert not marker.exists()


# --- registry teacher and discriminator ------------------------------------------------------------


def test_registry_teacher_over_student() -> None:
    student = build_model("kda_student", 4, 2)
    teacher = RegistryTeacher(student)
    assert teacher.channels == 256
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not student.training
    assert teacher.features(torch.randn(1, 4, 64, 64)).shape == (1, 256, 2, 2)

    class Plain(nn.Module):  # no encoder_channels: the width comes from one dummy forward
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(5, 7, 3, stride=4, padding=1)

        def encoder_features(self, x: torch.Tensor) -> list[torch.Tensor]:
            return [self.conv(x)]

    assert RegistryTeacher(Plain()).channels == 7
    with pytest.raises(ValueError, match="encoder_features"):
        RegistryTeacher(nn.Conv2d(3, 3, 1))


@pytest.mark.parametrize("kind", ["registry", "dinov2"])
def test_discriminator_trains_only_its_head(kind: str, vits14: DINOv2Teacher) -> None:
    teacher = vits14 if kind == "dinov2" else RegistryTeacher(build_kda_student(3, 2))
    disc = Discriminator(teacher, levels=3)
    trainable = {id(p) for p in disc.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in disc.head.parameters()}
    assert trainable == {id(p) for p in disc.trainable_parameters()}

    c = teacher.channels
    real, fake = torch.randn(2, c, 5, 4), torch.randn(2, c, 5, 4, requires_grad=True)
    assert disc(real).shape == (2, 1, 5, 4)
    assert disc(torch.randn(1, c, 1, 1)).shape == (1, 1, 1, 1)

    frozen = {n: p.detach().clone() for n, p in disc.backbone.named_parameters()}
    head = {n: p.detach().clone() for n, p in disc.head.named_parameters()}
    opt = torch.optim.SGD(disc.trainable_parameters(), lr=0.1)
    disc.train()
    assert not teacher.training
    loss = ((disc(real) - 1) ** 2).mean() + (disc(fake) ** 2).mean()
    loss.backward()
    opt.step()
    assert fake.grad is not None and fake.grad.abs().sum() > 0  # the student's step needs this path
    assert all(torch.equal(frozen[n], p) for n, p in disc.backbone.named_parameters())
    assert any(not torch.equal(head[n], p) for n, p in disc.head.named_parameters())
    with pytest.raises(ValueError, match="channels"):
        disc(torch.randn(1, c + 1, 2, 2))
