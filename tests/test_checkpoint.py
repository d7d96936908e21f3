"""Checkpoints: safetensors + card rebuild the model exactly; pickles are refused without being opened."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from engine.errors import InputError
from engine.models import build_model
from engine.models.checkpoint import load_model, save_model


def test_round_trip_rebuilds_the_model_exactly(tmp_path):
    torch.manual_seed(1)
    model = build_model("segformer_b0", in_channels=14).eval()
    path = save_model(
        model,
        tmp_path / "l4s.safetensors",
        mean=tuple(float(i) for i in range(14)),
        std=(1.0,) * 14,
        provenance={"data": "landslide4sense/train", "command": "test"},
    )
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["architecture"] == "segformer_b0" and card["in_channels"] == 14
    assert card["class_names"] == ["background", "landslide"]
    again, loaded_card = load_model(path)
    assert loaded_card.mean == tuple(float(i) for i in range(14))
    x = torch.randn(1, 14, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    # the card may be given instead of the weights
    assert load_model(path.with_suffix(".json"))[1] == loaded_card
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_options_survive_the_round_trip(tmp_path):
    model = build_model("kda_student", backbone="pvt_v2_b1")
    again, card = load_model(save_model(model, tmp_path / "b1.safetensors"))
    assert card.options == {"backbone": "pvt_v2_b1"}
    assert sum(p.numel() for p in again.parameters()) == sum(p.numel() for p in model.parameters())


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt", ".bin"])
def test_pickle_checkpoint_is_refused_and_never_opened(tmp_path, suffix):
    marker = tmp_path / "pwned"
    path = tmp_path / f"model{suffix}"
    path.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}))
    with pytest.raises(InputError, match=r"pickle-based checkpoint.*safetensors"):
        load_model(path)
    assert not marker.exists()


def test_broken_and_mismatched_checkpoints(tmp_path):
    model = build_model("segformer_b0")
    path = save_model(model, tmp_path / "m.safetensors")
    card = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**card, "in_channels": 4}))
    with pytest.raises(InputError, match="do not fit a segformer_b0"):
        load_model(path)
    path.with_suffix(".json").write_text(json.dumps({**card, "surprise": 1}))
    with pytest.raises(InputError, match="unknown fields"):
        load_model(path)
    path.with_suffix(".json").write_text(json.dumps(card))
    path.write_bytes(b"garbage")
    with pytest.raises(InputError, match="not readable"):
        load_model(path)
    with pytest.raises(InputError, match="checkpoint not found"):
        load_model(tmp_path / "none.safetensors")
    (tmp_path / "alone.safetensors").write_bytes(b"")
    with pytest.raises(InputError, match="no model card"):
        load_model(tmp_path / "alone.safetensors")
