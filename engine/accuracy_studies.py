"""The report's sections that render stored study summaries (docs/results/) and the multispectral
models' k-fold cards: nothing here trains or scores a model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.models.checkpoint import ModelCard
from engine.models.shipped import ASSETS, shipped_names
from engine.training.config import DISTILL_MODES, PSEUDO_MODES

SHORT_METRICS = ("miou", "iou", "f1", "precision", "recall")


def _provenance(summary: dict[str, Any]) -> list[str]:
    return [
        "",
        f"Command: `{summary['command']}` (commit {str(summary.get('commit'))[:10]}, {summary['machine']}, "
        f"{summary['date']}).",
    ]


def _summary(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _not_run(command: str, path: Path) -> str:
    return f"Not run yet: `{command}` writes {path.name} in docs/results/."


def ablation_section(path: Path) -> list[str]:
    lines = [
        "## KDA ablation (KDA paper, Table III, our version)",
        "",
        "The KDA student trained three times with the same budget and hyper-parameters, differing only",
        "in phase 1: no distillation, plain KD (logits) and KDA (logits + adversarial feature alignment),",
        "both from the same teacher. Bijie val, %.",
        "",
    ]
    summary = _summary(path)
    if summary is None:
        return [*lines, _not_run("python -m engine bench ablation --teacher T --out DIR", path)]
    lines += [
        f"Teacher: `{Path(summary['teacher']).name}`" + _teacher_scores(summary) + ".",
        "",
        "| phase 1 | mIoU | IoU | F1 | P | R | best epoch / run | wall time (see notes) |",
        "|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for row in summary["rows"]:
        scores = " | ".join(f"{100 * row[f'val_{k}']:.2f}" for k in SHORT_METRICS)
        lines.append(
            f"| {row['distill']} | {scores} | {row['best_epoch']} / {row['epochs_run']} "
            f"| {row['wall_time_s'] / 60:.0f} min |"
        )
    notes = [f"- {row['distill']}: {row['note']}." for row in summary["rows"] if row.get("note")]
    missing = [mode for mode in DISTILL_MODES if mode not in {row["distill"] for row in summary["rows"]}]
    if missing:
        notes.append(
            f"- Not finished yet: {', '.join(missing)} (their rows come when `bench ablation` is run "
            "again with the same options; finished arms are kept)."
        )
    return [*lines, *(["", *notes] if notes else []), *_provenance(summary)]


def _teacher_scores(summary: dict[str, Any]) -> str:
    if summary.get("teacher_miou") is None:
        return ""
    return f" ({summary['teacher_architecture']}, val mIoU {100 * summary['teacher_miou']:.2f})"


def semi_supervised_section(path: Path, ablation: Path) -> list[str]:
    """The pseudo-label table, the share of pool pixels each round kept, and the full-label reference
    (the ablation's run without distillation: the same student and recipe with every train label)."""
    lines = [
        "## Semi-supervised pseudo-label benchmark",
        "",
        "Labels on 25 % of the Bijie `train` ids (seeded draw); the other 75 % are an unlabelled pool.",
        "Round 0 trains on the labelled quarter; each later round labels the pool with the previous",
        "round's model (threshold, top-λ % or MC-dropout selection), then fine-tunes on both. Bijie val",
        "mIoU, %.",
        "",
    ]
    summary = _summary(path)
    if summary is None:
        return [*lines, _not_run("python -m engine bench semisup --out DIR", path)]
    table = summary["miou"]
    rounds = summary["rounds"]
    lines += [
        f"{summary['labelled_images']} labelled images; round 0: {summary['initial_epochs']} epochs, "
        f"each pseudo-label round: {summary['round_epochs']} epochs" + _round_rate(summary) + ".",
        "",
        "| mode | " + " | ".join(f"round {i}" for i in range(rounds + 1)) + " |",
        "|---|" + "---:|" * (rounds + 1),
    ]
    for mode, values in table.items():
        if mode == "round_0":
            continue
        cells = [f"{100 * table['round_0']:.2f}", *(f"{100 * v:.2f}" for v in values)]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    lines += _best_round(table)
    reference = _full_label_miou(ablation)
    if reference is not None:
        lines += [
            "",
            "For comparison, all train labels, same student and recipe (KDA ablation, no distillation): "
            f"{100 * reference:.2f}.",
        ]
    records = summary.get("records", {})
    if records:
        lines += [
            "",
            "Share of the unlabelled pool's pixels each round kept as pseudo-labels, %:",
            "",
            "| mode | " + " | ".join(f"round {i}" for i in range(1, rounds + 1)) + " |",
            "|---|" + "---:|" * rounds,
        ]
        for mode, rows in records.items():
            lines.append(f"| {mode} | " + " | ".join(f"{100 * r['selected']:.1f}" for r in rows) + " |")
    missing = [mode for mode in PSEUDO_MODES if mode not in table]
    if missing:
        lines += [
            "",
            f"Not finished yet: {', '.join(missing)} (their rows come when `bench semisup` is run again "
            "with the same options; finished rounds are kept).",
        ]
    return lines + _provenance(summary)


def _best_round(table: dict[str, Any]) -> list[str]:
    """The best pseudo-label round of any mode, against round 0."""
    rounds = [
        (value, mode, index)
        for mode, values in table.items()
        if mode != "round_0"
        for index, value in enumerate(values, start=1)
    ]
    if not rounds:
        return []
    best, mode, index = max(rounds)
    gap = 100 * (best - table["round_0"])
    side = "above" if gap >= 0 else "below"
    best_line = f"Best pseudo-label round: {mode} round {index}, {100 * best:.2f}"
    return ["", f"{best_line} ({abs(gap):.2f} {side} round 0)."]


def _round_rate(summary: dict[str, Any]) -> str:
    lr = summary.get("round_lr")
    if lr is None:
        return ""
    return f", fine-tuned from the previous round at a learning rate of {lr:g} → {lr / 100:g}"


def _full_label_miou(ablation: Path) -> float | None:
    summary = _summary(ablation)
    rows = [] if summary is None else [row for row in summary["rows"] if row["distill"] == "none"]
    return rows[0]["val_miou"] if rows else None


def multispectral_section() -> list[str]:
    """14-band models, scored by k-fold cross-validation (21 labelled patches are too few for a split)."""
    lines = [
        "## Multispectral path (Landslide4Sense, 14 bands, 5-fold cross-validation)",
        "",
        "The 21 labelled Landslide4Sense patches are split into 5 folds by sorted id; each fold's model",
        "trains on the other four and is scored on its own fold; the pooled row sums the five folds'",
        "confusion matrices, so every patch is scored once, by a model that did not see it. The shipped",
        "model is the fold whose own score is closest to the pooled one (chosen by that rule, not by score).",
        "",
        "| model | pooled mIoU | pooled IoU | pooled F1 | all-background mIoU | shipped fold "
        "| its fold mIoU | its best epoch | wall time to it | device |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name in shipped_names():
        card = ModelCard.from_file(ASSETS / f"{name}.json")
        pooled = card.metrics.get("kfold_pooled")
        if card.in_channels == 3 or pooled is None:
            continue
        background = card.metrics["kfold_all_background"]
        p = card.provenance
        fold = f"{p.get('fold')} | {100 * card.metrics['miou']:.2f}"
        wall = f"{p['wall_time_s'] / 60:.0f} min" if "wall_time_s" in p else "?"
        run = (
            f"{p.get('epoch', '?')} / {p.get('config', {}).get('epochs', '?')} "
            f"| {wall} | {p.get('device', '?')} ({p.get('precision', '?')})"
        )
        lines.append(
            f"| {name} | {100 * pooled['miou']:.2f} | {100 * pooled['iou']:.2f} | {100 * pooled['f1']:.2f} "
            f"| {100 * background['miou']:.2f} | {fold} | {run} |"
        )
        lines += ["", f"Command: `{p.get('command')}`"]
    return lines
