"""`python -m engine ...`: the engine facade from a shell.

Expected failures (bad files, missing records, conflicts) print one line on stderr and exit with code 2;
only a bug shows a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from engine import api, cli_bench, cli_export, cli_train
from engine.errors import ScarpError, printable

EXIT_USER_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ScarpError as exc:
        print(f"error: {printable(str(exc))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:
        if not isinstance(exc.filename, str | bytes | os.PathLike):  # a bug: keep its traceback
            raise
        # The file system refused a path (name too long, permission denied, ...) before any check could.
        print(f"error: {printable(os.fsdecode(exc.filename))}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="Scarp landslide mapping engine")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="print a scene's descriptor as JSON")
    info.add_argument("path", type=Path)
    info.set_defaults(run=_info)

    imp = commands.add_parser("import", help="import a scene (or a folder of scenes) into the workspace")
    imp.add_argument("path", type=Path)
    imp.add_argument("--mask", type=Path, help="the scene's landslide mask, stored as its first mask version")
    imp.add_argument(
        "--in-place", action="store_true", help="reference the file where it is instead of copying"
    )
    _workspace_option(imp)
    imp.set_defaults(run=_import)

    scenes = commands.add_parser("scenes", help="list the workspace's scenes")
    scenes.add_argument("--json", action="store_true", help="machine-readable output")
    _workspace_option(scenes)
    scenes.set_defaults(run=_scenes)

    evaluate = commands.add_parser("evaluate", help="score masks, or a model, against true masks")
    evaluate.add_argument("--pred", type=Path, help="a mask file or a folder of masks")
    evaluate.add_argument("--truth", type=Path, help="same-named true masks (file or folder)")
    evaluate.add_argument(
        "--model", help="a checkpoint, shipped model or `default` to score instead of --pred"
    )
    evaluate.add_argument("--data", type=Path, help="with --model: a training folder")
    evaluate.add_argument("--split", default="val", help="with --data: the split to score")
    evaluate.add_argument("--images", type=Path, help="with --model: a folder of images")
    evaluate.add_argument("--masks", type=Path, help="with --images: their same-named masks")
    evaluate.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    evaluate.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    evaluate.add_argument("--crf", action="store_true", help="with --model: score after DenseCRF")
    evaluate.add_argument("--tta", action="store_true", help="with --model: average the four flips")
    evaluate.set_defaults(run=_evaluate)
    cli_train.add_commands(commands)
    cli_export.add_commands(commands)

    predict = commands.add_parser("predict", help="map landslides on a scene with a model or an ensemble")
    predict.add_argument(
        "--model", required=True, help="checkpoint, shipped model or architecture; a,b,c = ensemble"
    )
    predict.add_argument("--in", dest="scene", type=Path, required=True, help="the scene to map")
    predict.add_argument("--out", type=Path, required=True, help="landslide mask GeoTIFF to write")
    predict.add_argument("--probabilities", type=Path, help="also write the landslide probability GeoTIFF")
    predict.add_argument("--tile", type=int, default=512)
    predict.add_argument("--overlap", type=int, default=64)
    predict.add_argument("--batch", type=int, default=4)
    predict.add_argument("--threads", type=int, help="torch threads on a CPU (default: torch's choice)")
    predict.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    predict.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    predict.add_argument("--tta", action="store_true", help="average over flips (4× slower)")
    predict.add_argument("--crf", action="store_true", help="refine with DenseCRF (about 2× slower)")
    predict.add_argument("--threshold", type=float, default=0.5, help="landslide probability cut-off")
    predict.set_defaults(run=_predict)

    worker = commands.add_parser("worker", help="run the workspace's background jobs until Ctrl-C or SIGTERM")
    _workspace_option(worker)
    worker.set_defaults(run=_worker)

    models = commands.add_parser("models", help="list the architectures and the checkpoints found")
    _workspace_option(models)
    models.set_defaults(run=_models)

    cli_bench.add_commands(commands)

    ship = commands.add_parser(
        "ship", help="copy a trained checkpoint into assets/models/ with a check score"
    )
    ship.add_argument("checkpoint", type=Path)
    ship.add_argument("--name", required=True, help="the shipped model's name")
    ship.add_argument("--default", action="store_true", help="make it the default model")
    ship.add_argument("--bijie", type=Path, default=Path("../shared/data/bijie"))
    ship.add_argument(
        "--kfold-summary", type=Path, help="kfold.json of a cross-validated run, kept in the card"
    )
    ship.set_defaults(run=_ship)
    return parser


def _workspace_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workspace",
        type=Path,
        default=None,
        help="workspace folder (default: $SCARP_WORKSPACE or ./workspace)",
    )


def _info(args: argparse.Namespace) -> int:
    print(json.dumps(api.describe(args.path).to_dict(), indent=2))
    return 0


def _import(args: argparse.Namespace) -> int:
    failures = 0
    with api.open_workspace(args.workspace) as workspace:
        for result in api.import_path(workspace, args.path, mask=args.mask, copy=not args.in_place):
            if isinstance(result, ScarpError):
                failures += 1
                print(f"skipped: {printable(str(result))}", file=sys.stderr)
                continue
            scene = result.scene
            state = "already in the workspace" if result.already_present else "imported"
            extra = f", mask version {result.mask_version.id}" if result.mask_version else ""
            print(f"{state}: scene {scene.id} {scene.name} ({_shape(scene.descriptor)}){extra}")
    return EXIT_USER_ERROR if failures else 0


def _scenes(args: argparse.Namespace) -> int:
    with api.open_workspace(args.workspace) as workspace:
        scenes = workspace.list_scenes()
        if args.json:
            rows = [
                {
                    "id": s.id,
                    "name": s.name,
                    "path": str(s.path),
                    "checksum": s.checksum,
                    "descriptor": s.descriptor,
                }
                for s in scenes
            ]
            print(json.dumps(rows, indent=2))
            return 0
        if not scenes:
            print(f"no scenes in {workspace.root}; add one with `python -m engine import PATH`")
        for s in scenes:
            print(f"{s.id:>5}  {s.name:<40}  {_shape(s.descriptor)}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    if args.model is not None:
        return cli_train.evaluate_model(args)
    if args.pred is None or args.truth is None:
        raise ScarpError("evaluate needs --pred and --truth, or --model with --data or --images/--masks")
    print(json.dumps(api.evaluate_masks(args.pred, args.truth), indent=2))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from engine.inference import PredictOptions, predict_scene

    if not 0 <= args.overlap < args.tile:
        raise ScarpError(f"--overlap must be between 0 and --tile - 1 ({args.tile - 1}), got {args.overlap}")
    options = PredictOptions(
        tile=args.tile,
        overlap=args.overlap,
        batch=args.batch,
        device=args.device,
        precision=args.precision,
        tta=args.tta,
        threshold=args.threshold,
        crf=args.crf,
        threads=args.threads,
    )
    summary = predict_scene(
        args.model, args.scene, args.out, args.probabilities, options, ProgressLine("predict")
    )
    models = ", ".join(summary.models)
    print(
        f"wrote {args.out}: {summary.landslide_fraction:.2%} landslide, {summary.tiles} tiles in "
        f"{summary.seconds:.1f} s on {summary.device} ({summary.precision}), models: {models}"
    )
    return 0


def _worker(args: argparse.Namespace) -> int:
    import logging

    from engine import jobs

    layout = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=logging.INFO, format=layout, stream=sys.stderr)
    return jobs.run_worker(args.workspace if args.workspace is not None else api.default_workspace_path())


def _models(args: argparse.Namespace) -> int:
    from engine.models import ARCHITECTURES
    from engine.models.checkpoint import ModelCard
    from engine.models.shipped import ASSETS, default_name, shipped_names

    print("architectures:")
    for name, (_, _, about) in ARCHITECTURES.items():
        print(f"  {name:<20} {about}")
    shipped = shipped_names()
    print(
        "shipped checkpoints (--model NAME or --model default):"
        if shipped
        else "shipped checkpoints: none yet"
    )
    for name in shipped:
        card = ModelCard.from_file(ASSETS / f"{name}.json")
        miou = card.metrics.get("miou")
        score = f", val mIoU {miou:.4f}" if miou is not None else ""
        marker = "  (default)" if name == default_name() else ""
        print(f"  {name:<24} {card.architecture}, {card.in_channels} bands{score}{marker}")
    with api.open_workspace(args.workspace) as workspace:
        registered = workspace.list_models()
    print("workspace models:" if registered else "workspace models: none yet")
    for model in registered:
        print(f"  {model.name:<20} {model.architecture}  {model.checkpoint_path}")
    return 0


def _ship(args: argparse.Namespace) -> int:
    from engine.models.shipped import ship

    target = ship(
        args.checkpoint, args.name, args.bijie, make_default=args.default, kfold_summary=args.kfold_summary
    )
    print(f"shipped {target}" + (" as the default model" if args.default else ""))
    return 0


class ProgressLine:
    """A one-line progress bar on stderr with an ETA; on a non-terminal, a line per 10 %."""

    def __init__(self, label: str):
        self.label = label
        self.start = time.perf_counter()
        self.last_decile = -1
        self.tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        elapsed = time.perf_counter() - self.start
        eta = elapsed / done * (total - done) if done else 0.0
        text = f"{self.label}: {done}/{total} ({done / total:.0%}), ETA {eta:.0f} s"
        if self.tty:
            print("\r" + text, end="\n" if done == total else "", file=sys.stderr, flush=True)
        elif (decile := 10 * done // total) > self.last_decile:
            self.last_decile = decile
            print(text, file=sys.stderr, flush=True)


def _shape(descriptor: dict) -> str:
    crs = descriptor.get("crs") or "no CRS"
    size = f"{descriptor['width']}×{descriptor['height']} px"
    return f"{size}, {descriptor['count']} bands, {descriptor['dtype']}, {crs}"
