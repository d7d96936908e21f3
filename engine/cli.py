"""`python -m engine ...`: the engine facade from a shell.

Expected failures (bad files, missing records, conflicts) print one line on stderr and exit with code 2;
only a bug shows a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from engine import api
from engine.errors import ScarpError

EXIT_USER_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ScarpError as exc:
        print(f"error: {exc}", file=sys.stderr)
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

    evaluate = commands.add_parser("evaluate", help="score predicted masks against true masks")
    evaluate.add_argument("--pred", type=Path, required=True, help="a mask file or a folder of masks")
    evaluate.add_argument("--truth", type=Path, required=True, help="same-named true masks (file or folder)")
    evaluate.set_defaults(run=_evaluate)
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
                print(f"skipped: {result}", file=sys.stderr)
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
    print(json.dumps(api.evaluate_masks(args.pred, args.truth), indent=2))
    return 0


def _shape(descriptor: dict) -> str:
    crs = descriptor.get("crs") or "no CRS"
    size = f"{descriptor['width']}×{descriptor['height']} px"
    return f"{size}, {descriptor['count']} bands, {descriptor['dtype']}, {crs}"
