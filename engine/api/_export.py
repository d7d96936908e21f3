"""Export of a scene's mapping for the app: files written to a folder or a path, or bytes for a download."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from engine.errors import InputError
from engine.export import FORMATS, ExportSource, export, scene_source
from engine.store import Workspace, safe_filename

EXPORT_FORMATS = FORMATS
_MIME = {
    ".gpkg": "application/geopackage+sqlite3",
    ".geojson": "application/geo+json",
    ".csv": "text/csv",
    ".png": "image/png",
    ".tif": "image/tiff",
}


@dataclass(frozen=True)
class Download:
    """What a download button needs."""

    filename: str
    data: bytes
    mime: str


def export_scene(
    workspace: Workspace, scene_id: int, fmt: str, out: str | Path, *, mask_version_id: int | None = None
) -> Path:
    """Write a scene's mask version (the latest unless given) as `fmt` ("gpkg", "geojson", "csv", "png",
    "tif") to `out`: a file path with that extension, or an existing folder for a default name."""
    suffix = _suffix(fmt)
    source = scene_source(workspace, scene_id, mask_version_id)
    out = Path(out)
    if out.is_dir():
        out = out / export_filename(source, suffix)
    elif out.suffix.lower() != suffix:
        raise InputError(out, f"does not end in {suffix}, the extension of the {FORMATS[suffix]}")
    return export(source, out)[0]


def export_scene_bytes(
    workspace: Workspace, scene_id: int, fmt: str, *, mask_version_id: int | None = None
) -> Download:
    suffix = _suffix(fmt)
    source = scene_source(workspace, scene_id, mask_version_id)
    name = export_filename(source, suffix)
    with tempfile.TemporaryDirectory(prefix="scarp-export-") as folder:
        path, _ = export(source, Path(folder) / name)
        return Download(name, path.read_bytes(), _MIME[suffix])


def export_filename(source: ExportSource, suffix: str) -> str:
    """e.g. `post_event_mask3_landslides.gpkg`: names the scene and the mask version it came from."""
    version = f"_mask{source.mask.id}" if source.mask is not None else ""
    kind = {".tif": "", ".png": "_map"}.get(suffix, "_landslides")
    return safe_filename(f"{source.title}{version}{kind}{suffix}", fallback=f"export{suffix}")


def _suffix(fmt: str) -> str:
    suffix = "." + fmt.lower().lstrip(".")
    if suffix not in FORMATS:
        raise InputError(f"format {fmt!r}", f"is not one of {', '.join(s[1:] for s in FORMATS)}")
    return suffix
