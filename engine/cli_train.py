"""The training commands of `python -m engine`: train, pseudo-label, and evaluate --model."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from engine.errors import InputError
from engine.training.config import DISTILL_MODES, FINETUNE_LR, PSEUDO_MODES, finetune_rates


def add_commands(commands) -> None:
    train = commands.add_parser("train", help="train or fine-tune a model on a labelled folder")
    train.add_argument("--model", required=True, help="architecture (see `models`)")
    train.add_argument(
        "--data", type=Path, required=True, help="images/ + masks/ [+ splits.json], or L4S img/ + mask/"
    )
    train.add_argument("--split", default="val", help="the validation split in splits.json (default val)")
    train.add_argument(
        "--out", type=Path, required=True, help="checkpoint to write (.safetensors + .json card)"
    )
    train.add_argument(
        "--resume", action="store_true", help="continue from <out>.resume.pt after an interruption"
    )
    train.add_argument("--init", type=Path, help="fine-tune from this checkpoint's weights")
    train.add_argument(
        "--folds", type=int, default=0, help="k-fold cross-validation: --out names a folder for the folds"
    )
    _training_options(train)
    train.set_defaults(run=_train)

    pseudo = commands.add_parser("pseudo-label", help="self-training rounds on an unlabelled pool")
    pseudo.add_argument("--model", type=Path, required=True, help="the teacher checkpoint of round 1")
    pseudo.add_argument("--labeled", type=Path, required=True, help="labelled training folder")
    pseudo.add_argument("--unlabeled", type=Path, required=True, help="folder of unlabelled images")
    pseudo.add_argument("--mode", choices=("threshold", "top_percent", "mc_dropout"), default="threshold")
    pseudo.add_argument("--threshold", type=float, default=0.7, help="threshold mode: p ≥ t is landslide")
    pseudo.add_argument("--percent", type=float, default=50.0, help="top_percent mode: λ %% most confident")
    pseudo.add_argument("--rounds", type=int, default=1)
    pseudo.add_argument("--out", type=Path, required=True, help="folder for each round's checkpoint")
    pseudo.add_argument("--split", default="val")
    pseudo.add_argument("--workspace", type=Path, help="register each round here (default: $SCARP_WORKSPACE)")
    _training_options(pseudo, epochs=3)
    pseudo.set_defaults(run=_pseudo_label)


def add_study_commands(bench_kinds) -> None:
    """`bench ablation` and `bench semisup`: resumable series of training runs for docs/ACCURACY.md."""
    ablation = bench_kinds.add_parser("ablation", help="KDA student: no distillation vs KD vs KDA")
    ablation.add_argument("--data", type=Path, default=Path("../shared/data/bijie"))
    ablation.add_argument("--teacher", required=True, type=Path, help="the trained teacher checkpoint")
    ablation.add_argument("--out", type=Path, required=True, help="folder for the runs")
    ablation.add_argument("--summary", type=Path, default=Path("docs/results/kda_ablation.json"))
    ablation.add_argument(
        "--modes", nargs="+", choices=DISTILL_MODES, default=list(DISTILL_MODES),
        help="only these arms (to train them as separate processes; the full table needs all three)",
    )  # fmt: skip
    _training_options(ablation, epochs=32, teacher=False)
    ablation.set_defaults(run=_ablation, model="kda_student")
    semisup = bench_kinds.add_parser("semisup", help="pseudo-label rounds with labels on a fraction of train")
    semisup.add_argument("--data", type=Path, default=Path("../shared/data/bijie"))
    semisup.add_argument("--model", default="kda_student", help="architecture")
    semisup.add_argument("--out", type=Path, required=True, help="folder for the split copies and the runs")
    semisup.add_argument("--fraction", type=float, default=0.25, help="labelled share of the train ids")
    semisup.add_argument("--rounds", type=int, default=3)
    semisup.add_argument("--initial-epochs", type=int, default=40, help="round 0's epochs")
    semisup.add_argument("--summary", type=Path, default=Path("docs/results/semi_supervised.json"))
    semisup.add_argument(
        "--modes", nargs="+", choices=PSEUDO_MODES, default=list(PSEUDO_MODES),
        help="only these pseudo-label modes (separate processes, once round 0 exists; the table needs all)",
    )  # fmt: skip
    semisup.add_argument(
        "--round-lr", type=float, default=FINETUNE_LR,
        help="the pseudo-label rounds' fine-tuning rate, head and encoder, decaying to 1/100 of it "
        "(default: the app's fine-tune rate; --lr and its kin set round 0's)",
    )  # fmt: skip
    _training_options(semisup, epochs=8)
    semisup.set_defaults(run=_semisup)


def _ablation(args: argparse.Namespace) -> int:
    from engine.training.studies import kda_ablation, write_summary

    config = config_from_args(args, 3, "kda_student").replace(distill_epochs=args.distill_epochs)
    summary = kda_ablation(
        config, args.data, args.out, args.teacher, progress=EpochPrinter(), modes=tuple(args.modes)
    )
    write_summary(summary, args.summary, _command_line())
    for row in summary["rows"]:
        print(f"{row['distill']}: val mIoU {row['miou']:.4f} (epoch {row['best_epoch']})")
    return 0


def _semisup(args: argparse.Namespace) -> int:
    from engine.training.studies import semi_supervised, write_summary

    config = config_from_args(args, 3, args.model)
    round_args = argparse.Namespace(**{**vars(args), **finetune_rates(args.round_lr)})
    summary = semi_supervised(
        config, args.data, args.out, fraction=args.fraction, rounds=args.rounds,
        initial_epochs=args.initial_epochs, round_args=round_args, seed=args.seed,
        modes=tuple(args.modes), progress=EpochPrinter(),
    )  # fmt: skip
    write_summary(summary, args.summary, _command_line())
    print(json.dumps(summary["miou"], indent=2))
    return 0


def _command_line() -> str:
    from engine.training.train import _command_line as command

    return command()


def _training_options(parser: argparse.ArgumentParser, epochs: int = 10, teacher: bool = True) -> None:
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256, help="training crop size in px")
    parser.add_argument("--optimizer", choices=("sgd", "adamw"), help="default: the model's paper optimiser")
    parser.add_argument("--lr", type=float, help="learning rate (default: the model's paper value)")
    parser.add_argument("--lr-end", type=float, help="learning rate at the end of the cosine decay")
    parser.add_argument("--backbone-lr", type=float, help="KDA: the encoder's learning rate (paper: 5e-6)")
    parser.add_argument("--backbone-lr-end", type=float, help="KDA: the encoder's final learning rate")
    parser.add_argument(
        "--loss", help="weighted losses, e.g. ce=0.4,focal=0.6 (ce wce focal dice lovasz jaccard)"
    )
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="model option")
    parser.add_argument("--distill-epochs", type=int, default=5)
    if teacher:
        parser.add_argument("--distill", choices=("none", "kd", "kda"), default="none")
        parser.add_argument("--teacher", help="dinov2_vits14|vitb14|vitl14 or a checkpoint")
    parser.add_argument("--teacher-weights", type=Path, help="local DINOv2 weights (.safetensors or .pth)")
    parser.add_argument("--normalisation", choices=("dataset", "per_image"), default="dataset")
    parser.add_argument("--mixup", type=float, default=0.0, help="mix-up Beta(α, α); 0 = off")
    parser.add_argument("--centerrep", type=float, default=0.0, help="CenterRep probability")
    parser.add_argument("--ohem", type=float, default=0.0, help="keep the hardest fraction of pixels")
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    parser.add_argument("--workers", type=int, default=0)


def config_from_args(args: argparse.Namespace, in_channels: int, model: str):
    from engine.training.config import TrainConfig

    return TrainConfig(
        model=model,
        in_channels=in_channels,
        options=_options(args.option),
        epochs=args.epochs,
        batch_size=args.batch,
        size=args.size,
        optimizer=args.optimizer,
        lr=args.lr,
        lr_end=args.lr_end,
        backbone_lr=args.backbone_lr,
        backbone_lr_end=args.backbone_lr_end,
        loss=_losses(args.loss),
        distill=getattr(args, "distill", "none"),
        distill_epochs=args.distill_epochs if getattr(args, "distill", "none") != "none" else 0,
        teacher=str(args.teacher) if args.teacher else None,
        teacher_weights=str(args.teacher_weights) if args.teacher_weights else None,
        normalisation=args.normalisation,
        mixup_alpha=args.mixup,
        centerrep=args.centerrep,
        ohem=args.ohem,
        patience=args.patience,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        workers=args.workers,
    )


def _train(args: argparse.Namespace) -> int:
    from engine.training.train import open_datasets, train

    datasets = open_datasets(args.data, args.split)
    in_channels = int(datasets[0][0][0].shape[0])
    config = config_from_args(args, in_channels, args.model)
    if args.folds:
        from engine.training.kfold import kfold

        result = kfold(config, args.data, args.out, args.folds, progress=EpochPrinter())
        summary = {"folds": result.folds, "pooled": result.pooled, "all_background": result.all_background}
        text = json.dumps(summary, indent=2)
        (Path(args.out) / "kfold.json").write_text(text)
        print(text)
        return 0
    result = train(
        config, args.data, args.out, split=args.split, datasets=datasets, resume=args.resume, init=args.init,
        progress=EpochPrinter(),
    )  # fmt: skip
    if result.resumed_from:
        print(f"resumed after epoch {result.resumed_from}", file=sys.stderr)
    print(
        f"wrote {result.checkpoint}: best validation mIoU {result.best_miou:.4f} at epoch "
        f"{result.best_epoch} ({result.epochs_run} epochs run)"
    )
    return 0


def _pseudo_label(args: argparse.Namespace) -> int:
    from engine import api
    from engine.training.pseudo_label import PseudoLabelRound, run_rounds

    with api.open_workspace(args.workspace) as workspace:
        rounds = run_rounds(
            PseudoLabelRound(
                teacher=args.model, labeled=args.labeled, unlabeled=args.unlabeled, mode=args.mode,
                threshold=args.threshold, percent=args.percent, split=args.split,
            ),
            rounds=args.rounds, out_dir=args.out, workspace=workspace, args=args, progress=EpochPrinter(),
        )  # fmt: skip
    for r in rounds:
        print(f"round {r.index}: {r.checkpoint} mIoU {r.miou:.4f} ({r.selected:.1%} of pool pixels used)")
    return 0


def evaluate_model(args: argparse.Namespace) -> int:
    from engine.crf import CrfParams
    from engine.training.evaluate import evaluate_checkpoint

    metrics = evaluate_checkpoint(
        args.model, data=args.data, split=args.split, images=args.images, masks=args.masks,
        device=args.device, precision=args.precision, crf=CrfParams() if args.crf else None, tta=args.tta,
    )  # fmt: skip
    print(json.dumps(metrics, indent=2))
    return 0


class EpochPrinter:
    """One stderr line per epoch (with validation metrics), plus a live step counter on a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()

    def __call__(self, p) -> None:
        if p.metrics is not None:
            val = p.metrics.get("val_miou")
            shown = f", val mIoU {val:.4f}" if val is not None else ""
            print(
                f"\r{p.phase} epoch {p.epoch}/{p.epochs}: loss {p.losses.get('loss', math.nan):.4f}{shown}, "
                f"ETA {p.eta_s:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        elif self.tty:
            print(
                f"\r{p.phase} epoch {p.epoch}/{p.epochs} step {p.step}/{p.steps} loss {p.losses['loss']:.4f}",
                end="",
                file=sys.stderr,
                flush=True,
            )


def _options(pairs: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--option {pair}", "use KEY=VALUE, e.g. --option backbone=resnet34")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _losses(spec: str | None) -> dict[str, float] | None:
    if not spec:
        return None
    losses = {}
    for part in spec.split(","):
        name, sep, weight = part.partition("=")
        try:
            losses[name.strip()] = float(weight) if sep else 1.0
        except ValueError as exc:
            raise InputError(f"--loss {spec}", f"weight of {name!r} is not a number") from exc
    return losses
