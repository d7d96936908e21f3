"""The training studies of docs/ACCURACY.md, each a resumable series of training runs.

- `kda_ablation`: the KDA student trained without distillation, with plain KD and with KDA, all from
  the same teacher and with the same budget (the KDA paper's Table III, our version).
- `semi_supervised`: labels on a fraction of the Bijie `train` ids, the rest an unlabelled pool; a
  round-0 model on the labelled part, then pseudo-label rounds in each mode, scored on `val`.

Every finished run leaves `<run>.done.json` beside its checkpoint, so a study interrupted anywhere
(SIGKILL included) continues where it stopped: finished runs are skipped, an interrupted one
resumes from its `<run>.resume.pt`. The study's summary goes to a JSON file that `make accuracy`
renders, with the command, commit and machine that produced it.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.errors import InputError
from engine.store.files import atomic_write_text
from engine.training.config import DISTILL_MODES, PSEUDO_MODES, TrainConfig


def finished(checkpoint: Path) -> dict[str, Any] | None:
    """The record of a finished run, or None if it never finished."""
    marker = _marker(checkpoint)
    if not (marker.is_file() and checkpoint.is_file()):
        return None
    return json.loads(marker.read_text())


def run_once(
    checkpoint: Path, train_run: Callable[[bool], Any], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Train unless already finished; `train_run(resume)` returns a TrainResult. `extra` is kept in
    the run's record."""
    from engine.training.loop import resume_path

    done = finished(checkpoint)
    if done is not None:
        return done
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    result = train_run(resume_path(checkpoint).is_file())
    record = {
        "checkpoint": str(checkpoint),
        "miou": result.best_miou,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "wall_time_s": round(sum(r["seconds"] for r in result.history), 1),
        **(extra or {}),
    }
    atomic_write_text(_marker(checkpoint), json.dumps(record, indent=2))
    return record


def kda_ablation(
    config: TrainConfig, data: Path, out: Path, teacher: Path, progress=None, modes=DISTILL_MODES
) -> dict[str, Any]:
    """One KDA student per distillation mode, identical except for `distill`."""
    from engine.models.checkpoint import ModelCard, card_path
    from engine.training.train import train

    if config.model != "kda_student":
        raise InputError("--model", f"the ablation trains kda_student, not {config.model}")
    teacher_card = ModelCard.from_file(card_path(Path(teacher)))  # read first: a bad --teacher fails fast
    rows = []
    for mode in modes:
        run_config = config.replace(
            distill=mode,
            teacher=str(teacher) if mode != "none" else None,
            distill_epochs=config.distill_epochs if mode != "none" else 0,
        )
        checkpoint = Path(out) / f"{mode}.safetensors"
        record = run_once(
            checkpoint,
            lambda resume, c=run_config, ckpt=checkpoint: train(
                c, data, ckpt, resume=resume, progress=progress, provenance={"study": "kda_ablation"}
            ),
        )
        rows.append({"distill": mode, **record, **_scores(checkpoint)})
    return {
        "study": "kda_ablation",
        "teacher": str(teacher),
        "teacher_architecture": teacher_card.architecture,
        "teacher_miou": teacher_card.metrics.get("miou"),
        "config": config.to_dict(),
        "rows": rows,
    }


def split_for_semi_supervised(data: Path, out: Path, fraction: float, seed: int) -> tuple[Path, Path]:
    """`out/labeled` (the labelled ids as `train`, plus `val`, with a splits.json) and `out/unlabeled`
    (the other train images, no masks), as copies of the files."""
    splits = json.loads((Path(data) / "splits.json").read_text())
    train_ids = sorted(splits["train"])
    if not 0 < fraction < 1:
        raise InputError("--fraction", f"must be between 0 and 1, got {fraction}")
    labelled = sorted(random.Random(seed).sample(train_ids, max(1, round(fraction * len(train_ids)))))
    pool = [i for i in train_ids if i not in set(labelled)]
    labeled_dir, unlabeled_dir = Path(out) / "labeled", Path(out) / "unlabeled"
    for folder, ids, with_masks in (
        (labeled_dir, labelled + sorted(splits["val"]), True),
        (unlabeled_dir, pool, False),
    ):
        for kind in ("images", "masks") if with_masks else ("images",):
            target = folder / kind if with_masks else folder
            target.mkdir(parents=True, exist_ok=True)
            for item in ids:
                (source,) = (Path(data) / kind).glob(f"{item}.*")
                if not (target / source.name).exists():
                    shutil.copy2(source, target / source.name)
    atomic_write_text(
        labeled_dir / "splits.json", json.dumps({"train": labelled, "val": sorted(splits["val"])}, indent=1)
    )
    return labeled_dir, unlabeled_dir


def semi_supervised(
    config: TrainConfig,
    data: Path,
    out: Path,
    *,
    fraction: float,
    rounds: int,
    initial_epochs: int,
    round_args,
    seed: int = 0,
    modes=PSEUDO_MODES,
    progress=None,
) -> dict[str, Any]:
    """Round 0 on the labelled fraction, then `rounds` pseudo-label rounds per mode from it."""
    from engine.training.pseudo_label import PseudoLabelRound, run_rounds
    from engine.training.train import train

    out = Path(out)
    labeled, unlabeled = split_for_semi_supervised(data, out, fraction, seed)
    first = out / "round_0.safetensors"
    base = run_once(
        first,
        lambda resume: train(
            config.replace(epochs=initial_epochs), labeled, first, resume=resume, progress=progress,
            provenance={"study": "semi_supervised", "fraction": fraction},
        ),
    )  # fmt: skip
    table = {"round_0": base["miou"]}
    records: dict[str, list[dict[str, Any]]] = {}
    for mode in modes:
        plan = PseudoLabelRound(teacher=first, labeled=labeled, unlabeled=unlabeled, mode=mode)
        results = run_rounds(
            plan, rounds=rounds, out_dir=out / mode, workspace=None, args=round_args, progress=progress
        )
        records[mode] = [
            {"round": r.index, "miou": r.miou, "selected": r.selected, "checkpoint": str(r.checkpoint)}
            for r in results
        ]
        table[mode] = [r.miou for r in results]
    return {
        "study": "semi_supervised",
        "fraction": fraction,
        "labelled_images": len(json.loads((labeled / "splits.json").read_text())["train"]),
        "rounds": rounds,
        "initial_epochs": initial_epochs,
        "round_epochs": round_args.epochs,
        "round_lr": round_args.lr,
        "config": config.to_dict(),
        "miou": table,
        "records": records,
    }


def write_summary(summary: dict[str, Any], path: Path, command: str) -> None:
    from engine.bench import machine
    from engine.training.train import _git_commit

    summary = {
        **summary,
        "command": command,
        "commit": _git_commit(),
        "machine": machine(),
        "date": dt.date.today().isoformat(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(summary, indent=2))


def _scores(checkpoint: Path) -> dict[str, Any]:
    from engine.models.checkpoint import load_model

    _, card = load_model(checkpoint)
    keys = ("miou", "iou", "f1", "precision", "recall", "oa")
    return {f"val_{k}": card.metrics.get(k) for k in keys}


def _marker(checkpoint: Path) -> Path:
    return checkpoint.with_suffix(".done.json")
