"""Every shipped checkpoint loads and scores on Bijie val as its card says: a broken export fails here."""

from __future__ import annotations

import json

import pytest

from engine.models.checkpoint import ModelCard
from engine.models.shipped import (
    ASSETS,
    INDEX,
    check_dataset,
    default_name,
    resolve_checkpoint,
    shipped_names,
)
from engine.training.evaluate import evaluate_checkpoint

SHIPPED = shipped_names()


def test_a_default_model_is_shipped():
    assert SHIPPED, f"no checkpoint in {ASSETS}"
    assert default_name() in SHIPPED, f"{INDEX} must name one of {SHIPPED}"
    assert resolve_checkpoint("default") == ASSETS / f"{default_name()}.safetensors"


@pytest.mark.parametrize("name", SHIPPED)
def test_card_is_complete_and_file_is_small(name):
    card = ModelCard.from_file(ASSETS / f"{name}.json")
    for key in ("data", "split", "command", "commit", "device", "epoch", "wall_time_s"):
        assert card.provenance.get(key) is not None, key
    assert "miou" in card.metrics
    if card.in_channels == 3:
        assert "val20_miou" in card.metrics
    assert (ASSETS / f"{name}.safetensors").stat().st_size < 25 * 2**20


@pytest.mark.parametrize(
    "name", [n for n in SHIPPED if json.loads((ASSETS / f"{n}.json").read_text())["in_channels"] == 3]
)
def test_val_miou_on_20_images_matches_the_card(name, data_dir):
    card = ModelCard.from_file(ASSETS / f"{name}.json")
    metrics = evaluate_checkpoint(ASSETS / f"{name}.safetensors", dataset=check_dataset(data_dir / "bijie"))
    assert metrics["images"] == 20
    assert abs(metrics["miou"] - card.metrics["val20_miou"]) <= 0.03
