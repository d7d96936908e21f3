"""`python -m engine export`: a mask or landslide inventory as a file whose extension picks the format."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.errors import ScarpError


def add_commands(commands) -> None:
    export = commands.add_parser(
        "export",
        help="write a mask (.tif COG) or landslide inventory (.gpkg, .geojson, .csv, .png map)",
    )
    what = export.add_mutually_exclusive_group(required=True)
    what.add_argument("--scene", type=int, help="a workspace scene id")
    what.add_argument("--mask", type=Path, help="a mask file ({0,1} or {0,255})")
    export.add_argument("--mask-version", type=int, help="with --scene: this mask version (default: latest)")
    export.add_argument(
        "--workspace",
        type=Path,
        help="with --scene: workspace folder (default: $SCARP_WORKSPACE or ./workspace)",
    )
    export.add_argument("--probabilities", type=Path, help="with --mask: probability raster on its grid")
    export.add_argument("--slope", type=Path, help="with --mask: slope raster (degrees) in its CRS")
    export.add_argument("--image", type=Path, help="with --mask: the image drawn under a .png map")
    export.add_argument(
        "--out", type=Path, required=True, help="file to write: .gpkg, .geojson, .csv, .png or .tif"
    )
    export.set_defaults(run=_export)


def _export(args: argparse.Namespace) -> int:
    from engine import api
    from engine.export import ExportSource, export, scene_source

    if args.scene is not None:
        if any(v is not None for v in (args.probabilities, args.slope, args.image)):
            raise ScarpError("--probabilities, --slope and --image go with --mask; a scene brings its own")
        with api.open_workspace(args.workspace) as workspace:
            source = scene_source(workspace, args.scene, args.mask_version)
    else:
        if args.mask_version is not None or args.workspace is not None:
            raise ScarpError("--mask-version and --workspace go with --scene")
        source = ExportSource(args.mask, args.probabilities, args.slope, args.image, title=args.mask.stem)
    path, inventory = export(source, args.out)
    if inventory is None:
        print(f"wrote {path}: the mask as a Cloud-Optimized GeoTIFF")
        return 0
    totals = inventory.totals()
    area = "" if totals["area_m2"] is None else f", {totals['area_m2']:,.0f} m²"
    print(f"wrote {path}: {totals['landslides']} landslides{area} ({totals['coordinates']})")
    return 0
