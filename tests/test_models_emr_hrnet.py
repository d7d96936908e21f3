"""EMR-HRNet and its blocks: shapes at any size, RefConv folding, MDTA/EMA contracts, DEMA placement."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from engine.models import build_model
from engine.models.attention import DEMA, EMA, MDTA, RAD, RefConv
from engine.models.emr_hrnet import HRNET_STAGES, EMRHRNet, build_emr_hrnet


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """HRNet runs ~800 tiny ops per forward; on a shared 2-core box, OpenMP threads spinning against other
    processes make each op 10-50× slower, while one thread keeps a forward near 0.1 s."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model() -> EMRHRNet:
    torch.manual_seed(0)
    return build_emr_hrnet(3, 2)


def _randomise_refconvs(module: nn.Module) -> None:
    """The transform starts at zero; give it real values so folding is actually exercised."""
    for m in module.modules():
        if isinstance(m, RefConv):
            nn.init.normal_(m.transform.weight, std=0.2)


@torch.no_grad()
def test_forward_shapes_any_size(model: EMRHRNet) -> None:
    model.eval()
    for h, w in [(64, 64), (128, 128), (75, 93)]:
        assert model(torch.randn(1, 3, h, w)).shape == (1, 2, h, w)


@torch.no_grad()
def test_forward_shapes_14_bands() -> None:
    net = build_model("emr_hrnet", in_channels=14, num_classes=3).eval()
    assert net.scarp_config["architecture"] == "emr_hrnet"
    for h, w in [(64, 64), (75, 93)]:
        assert net(torch.randn(1, 14, h, w)).shape == (1, 3, h, w)


@torch.no_grad()
def test_protocol_encoder_features_and_aux(model: EMRHRNet) -> None:
    model.eval()
    x = torch.randn(1, 3, 75, 93)  # padded to 96×96 inside
    feats = model.encoder_features(x)
    assert [f.shape[1] for f in feats] == [18, 36, 72, 144]
    assert [f.shape[-1] for f in feats] == [24, 12, 6, 3]
    assert model.auxiliary_outputs(x) == []


def test_bad_options_raise_value_error() -> None:
    with pytest.raises(ValueError, match="unknown emr_hrnet option"):
        build_emr_hrnet(3, 2, nonsense=1)
    with pytest.raises(ValueError, match="backbone"):
        build_emr_hrnet(3, 2, backbone="hrnet_w64")
    with pytest.raises(ValueError, match="dilation"):
        build_emr_hrnet(3, 2, dilation=0)
    with pytest.raises(ValueError, match="heads"):
        build_emr_hrnet(3, 2, pyramid_channels=70, heads=4)


def test_refconv_base_frozen_transform_trainable() -> None:
    conv = RefConv(8, 16, 3)
    assert "base_weight" in dict(conv.named_buffers())
    assert not conv.base_weight.requires_grad
    assert "base_weight" in conv.state_dict()  # a checkpoint must restore the same random base
    params = dict(conv.named_parameters())
    assert set(params) == {"transform.weight"} and params["transform.weight"].requires_grad
    conv(torch.randn(2, 8, 9, 9)).sum().backward()
    assert conv.transform.weight.grad is not None and conv.transform.weight.grad.abs().sum() > 0


@torch.no_grad()
@pytest.mark.parametrize("kwargs", [{}, {"stride": 2, "bias": True}, {"groups": 4, "dilation": 2}])
def test_refconv_reparameterize_single(kwargs: dict) -> None:
    torch.manual_seed(1)
    conv = RefConv(8, 12, 3, **kwargs)
    _randomise_refconvs(conv)
    if conv.bias is not None:
        conv.bias.normal_()
    plain = conv.reparameterize()
    assert type(plain) is nn.Conv2d
    x = torch.randn(2, 8, 17, 13)
    torch.testing.assert_close(plain(x), conv(x), atol=1e-5, rtol=0)
    assert not torch.allclose(conv.effective_weight(), conv.base_weight)  # the transform did something


@torch.no_grad()
def test_model_reparameterize_keeps_outputs(model: EMRHRNet) -> None:
    net = copy.deepcopy(model).eval()
    _randomise_refconvs(net)
    x = torch.randn(1, 3, 75, 93)
    before = net(x)
    n_ref = sum(isinstance(m, RefConv) for m in net.modules())
    assert n_ref == 2 * len(net.rads)
    assert net.reparameterize() is net
    assert not any(isinstance(m, RefConv) for m in net.modules())
    torch.testing.assert_close(net(x), before, atol=1e-5, rtol=0)


def test_mdta_channel_attention_is_independent_of_pixels() -> None:
    mdta = MDTA(32, heads=4)
    assert isinstance(mdta.temperature, nn.Parameter) and mdta.temperature.shape == (4, 1, 1)
    for h, w in [(8, 8), (20, 31)]:
        x = torch.randn(2, 32, h, w)
        assert mdta(x).shape == x.shape
        attn = mdta.attention_map(x)
        assert attn.shape == (2, 4, 8, 8)  # (C/heads)², whatever H·W is
        torch.testing.assert_close(attn.sum(-1), torch.ones(2, 4, 8))
    with pytest.raises(ValueError, match="heads"):
        MDTA(30, heads=4)


def test_rad_keeps_shape() -> None:
    assert RAD(16, 24, heads=4)(torch.randn(2, 16, 10, 12)).shape == (2, 24, 10, 12)


def test_ema_shapes_and_group_check() -> None:
    x = torch.randn(2, 32, 11, 7)
    assert EMA(32, groups=8)(x).shape == x.shape
    assert DEMA(32, dilation=2, groups=8)(x).shape == x.shape
    with pytest.raises(ValueError, match="divide"):
        EMA(18, groups=8)


def test_dema_replaced_basic_block_convs(model: EMRHRNet) -> None:
    from timm.models.resnet import BasicBlock, Bottleneck

    demas = [(n, m) for n, m in model.named_modules() if isinstance(m, DEMA)]
    # w18: stage2 1 module × 2 branches, stage3 4 × 3, stage4 3 × 4; 4 blocks each; conv1 + conv2.
    assert len(demas) == len(model.dema_replaced) == 2 * 4 * (1 * 2 + 4 * 3 + 3 * 4) == 208
    assert all(m.conv.dilation == (2, 2) for _, m in demas)
    blocks = [
        b for s in HRNET_STAGES for b in getattr(model.backbone, s).modules() if isinstance(b, BasicBlock)
    ]
    assert len(blocks) == 104
    assert all(isinstance(b.conv1, DEMA) and isinstance(b.conv2, DEMA) for b in blocks)
    # Documented as left plain: the stage-1 Bottlenecks.
    bottlenecks = [b for b in model.backbone.layer1.modules() if isinstance(b, Bottleneck)]
    assert bottlenecks and all(type(b.conv2) is nn.Conv2d for b in bottlenecks)


def test_every_parameter_gets_a_gradient(model: EMRHRNet) -> None:
    net = copy.deepcopy(model).train()
    net(torch.randn(2, 3, 64, 64)).sum().backward()
    trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    assert [n for n, p in trainable if p.grad is None or not p.grad.abs().sum()] == []
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)


@torch.no_grad()
def test_eval_is_deterministic(model: EMRHRNet) -> None:
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(model(x), model(x))
