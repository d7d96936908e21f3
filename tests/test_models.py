"""Every registry model, as the registry builds it: any size, any band count, gradients, determinism."""

from __future__ import annotations

import pytest
import torch

from engine.models import ARCHITECTURES, build_model

SIZES = [(64, 64), (128, 128), (75, 93)]


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def name(request):
    return request.param


@pytest.mark.parametrize("channels", [3, 14])
def test_forward_shapes(name, channels):
    torch.manual_seed(0)
    model = build_model(name, in_channels=channels).eval()
    with torch.no_grad():
        for h, w in SIZES:
            logits = model(torch.randn(1, channels, h, w))
            assert logits.shape == (1, 2, h, w), (name, channels, h, w)
            assert torch.isfinite(logits).all()


def test_every_trainable_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = build_model(name, in_channels=3).train()
    x = torch.randn(2, 3, 64, 64)
    loss = model(x).sum()
    for extra in getattr(model, "auxiliary_outputs", lambda _: [])(x):
        loss = loss + extra.sum()
    loss.backward()
    # timm's ResNets zero-initialise each block's last BN scale, so some gradients are exactly 0 at
    # step 0; what matters is that every trainable tensor is on the graph and gets a finite gradient.
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_eval_mode_is_deterministic(name):
    model = build_model(name, in_channels=3).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_unknown_names_and_options_are_refused():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("pspnet")
    with pytest.raises(ValueError, match="in_channels"):
        build_model("unet_r34", in_channels=0)
