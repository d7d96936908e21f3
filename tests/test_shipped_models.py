"""Every shipped checkpoint loads and scores on Bijie val as its card says: a broken export fails here."""

from __future__ import annotations

import json

import pytest

from engine.errors import InputError
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


def test_shipping_stores_big_weights_in_fp16_and_scores_the_stored_file(tmp_path, monkeypatch, data_dir):
    import safetensors.torch
    import torch

    from engine.models import shipped
    from engine.models.checkpoint import load_model

    source = ASSETS / f"{default_name()}.safetensors"
    monkeypatch.setattr(shipped, "ASSETS", tmp_path / "assets")
    monkeypatch.setattr(shipped, "INDEX", tmp_path / "assets" / "index.json")
    size = source.stat().st_size
    target = shipped.ship(source, "small", data_dir / "bijie", max_bytes=int(0.9 * size))
    card = ModelCard.from_file(target.with_suffix(".json"))
    assert card.provenance["stored_as"] == "fp16" and target.stat().st_size < 0.6 * size
    assert card.provenance["left_out"] == ["to_teacher."]  # the distillation adapter
    assert target.stat().st_mode & 0o777 == 0o644
    assert {t.dtype for t in safetensors.torch.load_file(str(target)).values()} <= {
        torch.float16,
        torch.int64,
    }
    original = ModelCard.from_file(source.with_suffix(".json")).metrics["val20_miou"]
    assert abs(card.metrics["val20_miou"] - original) < 0.005  # fp16 storage costs no accuracy
    model, _ = load_model(target)
    assert next(model.parameters()).dtype == torch.float32  # cast back on loading
    with pytest.raises(InputError, match="even in fp16"):
        shipped.ship(source, "tiny", data_dir / "bijie", max_bytes=1000)
    assert sorted(p.name for p in (tmp_path / "assets").iterdir()) == ["small.json", "small.safetensors"]


def test_shipping_leaves_out_mrifes_student_and_loading_restarts_it_from_the_teacher(
    tmp_path, monkeypatch, data_dir
):
    import safetensors.torch
    import torch

    from engine.models import build_model, shipped
    from engine.models.checkpoint import load_model, save_model

    monkeypatch.setattr(shipped, "ASSETS", tmp_path / "assets")
    torch.manual_seed(0)
    trained = build_model("mrife", backbone="resnet10t", channels=16).eval()
    trained.update_teacher()  # teacher and student differ from here on
    source = save_model(trained, tmp_path / "mrife.safetensors")
    target = shipped.ship(source, "mrife_small", data_dir / "bijie")
    keys = safetensors.torch.load_file(str(target)).keys()
    assert (
        keys
        and not any(k.startswith("student.") for k in keys)
        and any(k.startswith("teacher.") for k in keys)
    )
    assert target.stat().st_size < 0.75 * source.stat().st_size
    assert ModelCard.from_file(target.with_suffix(".json")).provenance["left_out"] == ["student."]
    model, _ = load_model(target)
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(image), trained(image), atol=1e-3, rtol=1e-3)  # no student needed
    for restored, teacher in zip(model.student.parameters(), model.teacher.parameters(), strict=True):
        assert torch.equal(restored, teacher)  # fine-tuning starts the student from the EMA teacher
