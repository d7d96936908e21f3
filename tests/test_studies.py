"""The accuracy studies: the semi-supervised split, resumable runs, and both studies end to end (tiny)."""

from __future__ import annotations

import argparse
import json

import pytest

from engine.models import build_model
from engine.models.checkpoint import save_model
from engine.training import studies
from engine.training.config import TrainConfig


def tiny(**changes) -> TrainConfig:
    base = {"model": "kda_student", "epochs": 1, "batch_size": 4, "size": 64, "precision": "fp32", "seed": 3}
    return TrainConfig(**{**base, **changes})


def test_the_split_is_disjoint_seeded_and_keeps_val(tiny_bijie, tmp_path):
    labeled, unlabeled = studies.split_for_semi_supervised(tiny_bijie, tmp_path / "a", 0.25, seed=1)
    splits = json.loads((labeled / "splits.json").read_text())
    source = json.loads((tiny_bijie / "splits.json").read_text())
    pool = sorted(p.stem for p in unlabeled.iterdir())
    assert len(splits["train"]) == round(0.25 * len(source["train"]))
    assert sorted(splits["train"] + pool) == sorted(source["train"]) and not set(splits["train"]) & set(pool)
    assert splits["val"] == sorted(source["val"]) and all(p.is_file() for p in unlabeled.iterdir())
    assert {p.stem for p in (labeled / "masks").iterdir()} == set(splits["train"] + splits["val"])
    again, _ = studies.split_for_semi_supervised(tiny_bijie, tmp_path / "b", 0.25, seed=1)
    assert json.loads((again / "splits.json").read_text()) == splits
    with pytest.raises(Exception, match="between 0 and 1"):
        studies.split_for_semi_supervised(tiny_bijie, tmp_path / "c", 1.0, seed=1)


def test_a_finished_run_is_skipped_and_an_interrupted_one_resumes(tmp_path):
    checkpoint = tmp_path / "run.safetensors"
    calls = []

    class Result:
        best_miou, best_epoch, epochs_run, history = 0.5, 2, 3, [{"seconds": 1.0}]

    def fake_train(resume: bool):
        calls.append(resume)
        checkpoint.write_bytes(b"weights")
        return Result()

    checkpoint.with_suffix(".resume.pt").write_bytes(b"state")  # left by an interrupted run
    record = studies.run_once(checkpoint, fake_train, extra={"selected": 0.4})
    assert calls == [True] and record["miou"] == 0.5 and record["selected"] == 0.4
    assert studies.run_once(checkpoint, fake_train) == record and calls == [True]  # skipped


def test_kda_ablation_trains_one_student_per_mode_from_one_teacher(tiny_bijie, tmp_path):
    teacher = save_model(build_model("kda_student", 3, 2), tmp_path / "teacher.safetensors")
    summary = studies.kda_ablation(
        tiny(distill_epochs=1), tiny_bijie, tmp_path / "ablation", teacher, modes=("none", "kd")
    )
    assert [row["distill"] for row in summary["rows"]] == ["none", "kd"]
    assert summary["teacher_architecture"] == "kda_student" and "teacher_miou" in summary
    assert all(0 <= row["val_miou"] <= 1 and row["miou"] == row["val_miou"] for row in summary["rows"])
    studies.write_summary(summary, tmp_path / "ablation.json", "python -m engine bench ablation ...")
    written = json.loads((tmp_path / "ablation.json").read_text())
    assert written["command"].startswith("python -m engine") and written["machine"]


def test_semi_supervised_rounds_then_a_rerun_trains_nothing(tiny_bijie, tmp_path, monkeypatch):
    args = argparse.Namespace(
        epochs=1, batch=4, size=64, optimizer=None, lr=2e-4, lr_end=2e-6, backbone_lr=2e-4,
        backbone_lr_end=2e-6, loss=None, option=[], distill_epochs=1, teacher=None,
        teacher_weights=None, normalisation="dataset", mixup=0.0, centerrep=0.0, ohem=0.0, patience=10,
        seed=0, device="cpu", precision="fp32", workers=0,
    )  # fmt: skip
    run = dict(fraction=0.5, rounds=2, initial_epochs=1, round_args=args, modes=("threshold",))
    summary = studies.semi_supervised(tiny(), tiny_bijie, tmp_path / "semi", **run)
    assert list(summary["miou"]) == ["round_0", "threshold"] and len(summary["miou"]["threshold"]) == 2
    assert summary["labelled_images"] == 5 and summary["round_lr"] == 2e-4  # the rounds' own rate

    import engine.training.train as train_module

    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(train_module, "train", no_training)
    assert studies.semi_supervised(tiny(), tiny_bijie, tmp_path / "semi", **run)["miou"] == summary["miou"]


def test_the_report_renders_the_study_summaries(tmp_path):
    from engine.accuracy_studies import ablation_section, semi_supervised_section

    assert "Not run yet" in ablation_section(tmp_path / "missing.json")[-1]
    meta = {"command": "python -m engine bench x", "commit": "abc", "machine": "cpu", "date": "2026-11-21"}
    row = {"best_epoch": 3, "epochs_run": 5, "wall_time_s": 120.0, "miou": 0.7}
    scores = {"val_miou": 0.7, "val_iou": 0.5, "val_f1": 0.6, "val_precision": 0.6, "val_recall": 0.6}
    ablation = {
        "teacher": "/x/emr.safetensors", "teacher_architecture": "emr_hrnet", "teacher_miou": 0.7424,
        "rows": [{"distill": "kda", **row, **scores}], **meta,
    }  # fmt: skip
    (tmp_path / "a.json").write_text(json.dumps(ablation))
    text = "\n".join(ablation_section(tmp_path / "a.json"))
    assert "| kda | 70.00 | 50.00 |" in text and "`python -m engine bench x`" in text
    assert "Not finished yet: none, kd (their rows come" in text  # a partial table says what it lacks
    assert "Teacher: `emr.safetensors` (emr_hrnet, val mIoU 74.24)." in text
    kept = [{"round": 1, "selected": 0.9}, {"round": 2, "selected": 0.925}]
    semi = {
        "miou": {"round_0": 0.6, "threshold": [0.61, 0.62]}, "rounds": 2, "labelled_images": 5,
        "initial_epochs": 4, "round_epochs": 2, "records": {"threshold": kept}, **meta,
    }  # fmt: skip
    (tmp_path / "s.json").write_text(json.dumps(semi))
    text = "\n".join(semi_supervised_section(tmp_path / "s.json", ablation=tmp_path / "a.json"))
    assert "| threshold | 60.00 | 61.00 | 62.00 |" in text and "round 2" in text
    assert "each pseudo-label round: 2 epochs." in text  # a summary from before rounds had their own rate
    assert "| threshold | 90.0 | 92.5 |" in text  # share of the pool's pixels each round kept
    assert "Best pseudo-label round: threshold round 2, 62.00 (2.00 above round 0)." in text
    assert "all train labels" not in text  # the ablation has no arm without distillation to compare with
    ablation["rows"].append({"distill": "none", **row, **scores, "val_miou": 0.75})
    (tmp_path / "a.json").write_text(json.dumps(ablation))
    text = "\n".join(semi_supervised_section(tmp_path / "s.json", ablation=tmp_path / "a.json"))
    assert "all train labels, same student and recipe (KDA ablation, no distillation): 75.00" in text
    (tmp_path / "s.json").write_text(json.dumps({**semi, "round_lr": 1e-4}))
    text = "\n".join(semi_supervised_section(tmp_path / "s.json", ablation=tmp_path / "a.json"))
    assert "2 epochs, fine-tuned from the previous round at a learning rate of 0.0001 → 1e-06." in text
    assert "Not finished yet: top_percent, mc_dropout" in text
    worse = {**semi, "miou": {"round_0": 0.7, "threshold": [0.65, 0.66], "top_percent": [0.68, 0.67]}}
    (tmp_path / "s.json").write_text(json.dumps(worse))
    text = "\n".join(semi_supervised_section(tmp_path / "s.json", ablation=tmp_path / "a.json"))
    assert "Best pseudo-label round: top_percent round 1, 68.00 (2.00 below round 0)." in text


def test_bench_ablation_can_train_only_some_arms(monkeypatch, tmp_path):
    from engine import cli

    seen = {}

    def fake_ablation(config, data, out, teacher, progress=None, modes=studies.DISTILL_MODES):
        seen["modes"], seen["distill_epochs"] = modes, config.distill_epochs
        return {"study": "kda_ablation", "rows": []}

    monkeypatch.setattr(studies, "kda_ablation", fake_ablation)
    argv = ["bench", "ablation", "--teacher", "t.safetensors", "--out", str(tmp_path), "--modes", "kd", "kda"]
    assert cli.main([*argv, "--summary", str(tmp_path / "s.json"), "--distill-epochs", "2"]) == 0
    assert seen == {"modes": ("kd", "kda"), "distill_epochs": 2}
    with pytest.raises(SystemExit):
        cli.main(["bench", "ablation", "--teacher", "t", "--out", str(tmp_path), "--modes", "dino"])


def test_bench_semisup_can_run_only_some_modes(monkeypatch, tmp_path):
    from engine import cli

    seen = {}

    def fake_semi_supervised(config, data, out, **kwargs):
        seen["modes"], seen["lr"], seen["round"] = kwargs["modes"], config.lr, kwargs["round_args"]
        return {"study": "semi_supervised", "miou": {"round_0": 0.5}}

    monkeypatch.setattr(studies, "semi_supervised", fake_semi_supervised)
    argv = ["bench", "semisup", "--out", str(tmp_path), "--summary", str(tmp_path / "s.json")]
    assert cli.main([*argv, "--modes", "mc_dropout", "--lr", "6e-4"]) == 0
    assert seen["modes"] == ("mc_dropout",)
    # round 0 trains at --lr; the rounds fine-tune at the app's fine-tune rate, head and encoder alike
    rounds = seen["round"]
    assert seen["lr"] == 6e-4 and rounds.lr == rounds.backbone_lr == 1e-4
    assert rounds.lr_end == rounds.backbone_lr_end == pytest.approx(1e-6)
    assert cli.main([*argv, "--round-lr", "3e-5"]) == 0 and seen["round"].lr == 3e-5
    assert cli.main(argv) == 0 and seen["modes"] == studies.PSEUDO_MODES
    with pytest.raises(SystemExit):
        cli.main([*argv, "--modes", "entropy"])


def test_the_report_checks_the_goals_on_its_own_rows():
    from types import SimpleNamespace

    from engine.accuracy import goal_lines

    def row(name, architecture, miou, ms):
        return {"name": name, "card": SimpleNamespace(architecture=architecture), "miou": miou, "ms": ms}

    kda, emr = row("kda", "kda_student", 0.758, 171), row("emr", "emr_hrnet", 0.790, 1016)
    unet = {**row("unet", "unet_r34", 0.80, 90), "shipped": False}  # a baseline: not a goal candidate
    text = "\n".join(goal_lines([kda, emr, unet]))
    assert "**79.00** mIoU (emr)" in text and "not met, 3.00 points short" in text
    assert "the fastest of the research models" in text  # the baseline is not a research model
    assert "4.20 mIoU below the best of ours (goal: within 2, not met)" in text
    text = "\n".join(goal_lines([row("kda", "kda_student", 0.825, 2000), emr]))
    assert "Goal ≥ 82.00: met." in text and "not the fastest (emr is)" in text
    assert "0.00 mIoU below the best of ours (goal: within 2, met)" in text
    assert goal_lines([]) == ["No shipped RGB model yet."]


def test_a_missing_teacher_stops_the_ablation_before_any_training(tiny_bijie, tmp_path):
    from engine.errors import InputError

    with pytest.raises(InputError, match=r"nope\.json"):
        studies.kda_ablation(tiny(), tiny_bijie, tmp_path / "ablation", tmp_path / "nope.safetensors")
    assert not (tmp_path / "ablation").exists()  # the "none" arm, which needs no teacher, never ran


def test_a_recorded_checkpoint_gets_a_row_without_its_weights(tiny_bijie, tmp_path):
    from engine.accuracy import record, recorded_rows

    model = build_model("segformer_b0", 3, 2)
    checkpoint = save_model(model, tmp_path / "seg.safetensors", provenance={"epoch": 4})
    into = tmp_path / "trained.json"
    entry = record(checkpoint, tiny_bijie, into)
    assert 0.0 <= entry["metrics"]["miou"] <= 1.0 and entry["card"]["architecture"] == "segformer_b0"
    checkpoint.unlink()  # the row needs only the record: costs come from the architecture
    (row,) = recorded_rows(shipped={"kda_student_bijie"}, path=into)
    assert row["name"] == "seg" and not row["shipped"] and row["miou"] == entry["metrics"]["miou"]
    assert row["card"].provenance == {"epoch": 4} and 3.0 < row["params_m"] < 4.5 and row["ms"] > 0
    assert recorded_rows(shipped={"seg"}, path=into) == []  # a shipped model is scored from its weights


def test_the_gap_section_states_what_each_step_gave(tmp_path):
    from types import SimpleNamespace

    from engine.accuracy import gap_section

    card = SimpleNamespace(provenance={"epoch": 20, "config": {"epochs": 32}})
    rows = [{"name": "kda", "card": card, "miou": 0.7684}]
    ablation = tmp_path / "ablation.json"
    summary = {"teacher_architecture": "emr_hrnet", "rows": [{"distill": "none", "val_miou": 0.7582}]}
    summary["rows"].append({"distill": "kda", "val_miou": 0.7684})
    ablation.write_text(json.dumps(summary))
    post = {(False, False): {"miou": 0.7684}, (True, False): {"miou": 0.7700}}
    post |= {(False, True): {"miou": 0.7737}, (True, True): {"miou": 0.7750}}
    text = "\n".join(gap_section(rows, ablation, post))
    assert "kda 76.84 (best epoch 20 of 32)" in text
    assert "from the emr_hrnet teacher, against none: kda +1.02" in text
    assert "flip TTA +0.16, DenseCRF +0.53, both +0.66" in text
    assert gap_section([{**rows[0], "miou": 0.825}], ablation, post) == []  # the goal is met: no gap


def test_the_multispectral_section_has_a_row_per_shipped_14_band_model():
    from engine.accuracy_studies import multispectral_section
    from engine.models.shipped import ASSETS, shipped_names

    text = "\n".join(multispectral_section())
    cards = [json.loads((ASSETS / f"{name}.json").read_text()) | {"name": name} for name in shipped_names()]
    multispectral = [card for card in cards if card["in_channels"] != 3]
    assert multispectral, "kda_student_l4s is shipped, so the section has a row to check"
    for card in multispectral:
        pooled = 100 * card["metrics"]["kfold_pooled"]["miou"]
        assert f"| {card['name']} | {pooled:.2f} |" in text
        wall = f"{card['provenance']['wall_time_s'] / 60:.0f} min"
        assert f"| {wall} | {card['provenance']['device']} (" in text  # the run's wall time and device
