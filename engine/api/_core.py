"""The facade the app and the CLI call: workspaces, scene import, evaluation.

Heavier pieces (models, inference, training) join here as they are built; the app never reaches past
this module into the engine's internals.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.errors import InputError, ScarpError
from engine.io.masks import open_mask, read_mask
from engine.io.raster import HDF5_SUFFIXES, SCENE_SUFFIXES, open_scene
from engine.io.writers import write_raster
from engine.metrics import ConfusionMatrix
from engine.store import MaskVersion, Scene, Workspace


def default_workspace_path() -> Path:
    """`$SCARP_WORKSPACE`, or `./workspace` in the current folder."""
    return Path(os.environ.get("SCARP_WORKSPACE") or "workspace").expanduser()


def open_workspace(path: str | Path | None = None) -> Workspace:
    return Workspace.open(Path(path) if path is not None else default_workspace_path())


@dataclass(frozen=True)
class ImportResult:
    scene: Scene
    mask_version: MaskVersion | None
    already_present: bool


def import_scene(
    workspace: Workspace, path: str | Path, *, mask: str | Path | None = None, copy: bool = True
) -> ImportResult:
    """Check a scene (and its mask) completely, then record it; nothing is recorded if any check fails.

    A Landslide4Sense HDF5 file that carries a `mask` brings it along as the first mask version. A file
    that is already in the workspace (same checksum) is not imported twice.
    """
    path = Path(path)
    with open_scene(path) as scene:
        scene.check_has_data()
        descriptor = scene.descriptor
    mask_path = Path(mask) if mask is not None else _embedded_mask(path)
    mask_array = read_mask(mask_path, like=descriptor) if mask_path is not None else None
    before = {s.id for s in workspace.list_scenes()}
    record = workspace.add_scene(path, descriptor.to_dict(), copy=copy)
    if record.id in before:
        return ImportResult(record, workspace.latest_mask_version(record.id), already_present=True)
    version = None
    if mask_array is not None:
        version = workspace.save_mask_version(
            record.id,
            lambda target: write_raster(target, mask_array, descriptor),
            parent_id=None,
            source="import",
            note=f"imported from {mask_path.name}",
        )
    return ImportResult(record, version, already_present=False)


def _embedded_mask(path: Path) -> Path | None:
    if path.suffix.lower() not in HDF5_SUFFIXES:
        return None
    import h5py

    with h5py.File(path, "r") as file:
        return path if "mask" in file else None


def import_path(
    workspace: Workspace,
    path: str | Path,
    *,
    mask: str | Path | None = None,
    copy: bool = True,
    roots: Sequence[str | Path] | None = None,
) -> Iterator[ImportResult | ScarpError]:
    """Import one file, or every supported file of a folder; a bad file is reported and the rest go on.

    With `roots` (the folders a shared server lets its users import from), every file read must lie
    inside one of them once links and `..` are resolved; `None` lets the caller read anything.
    """
    path = Path(path)
    _check_inside(path, roots)
    if mask is not None:
        _check_inside(Path(mask), roots)
    try:
        folder = path.is_dir()
    except OSError:  # e.g. a name too long for the file system: import_scene says what is wrong
        folder = False
    if not folder:
        yield import_scene(workspace, path, mask=mask, copy=copy)
        return
    if mask is not None:
        raise InputError(path, "--mask goes with a single image, not a folder")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SCENE_SUFFIXES)
    if not files:
        raise InputError(path, f"holds no images ({', '.join(SCENE_SUFFIXES)})")
    for file in files:
        try:
            _check_inside(file, roots)  # a link in the folder may point anywhere
            yield import_scene(workspace, file, copy=copy)
        except ScarpError as exc:
            yield exc


def _check_inside(path: Path, roots: Sequence[str | Path] | None) -> None:
    if roots is None:
        return
    if not roots:
        raise InputError(path, "not imported: this server imports no files from its own disk")
    if not path.is_absolute():
        raise InputError(path, "give the full path, starting with /")
    real = Path(os.path.realpath(path))
    if not any(real.is_relative_to(os.path.realpath(root)) for root in roots):
        allowed = ", ".join(str(root) for root in roots)
        raise InputError(path, f"is outside the folders this server imports from ({allowed})")


def evaluate_masks(pred: str | Path, truth: str | Path) -> dict:
    """Metrics of predicted masks against true ones: two files, or two folders of same-named masks.

    Files pair up by name without extension, so `ls_0001.tif` is scored against `ls_0001.png`. Masks are
    read block by block, so large scenes are scored in bounded memory.
    """
    pairs = _mask_pairs(Path(pred), Path(truth))
    matrix = ConfusionMatrix()
    for pred_path, truth_path in pairs:
        with open_mask(truth_path) as truth_mask, open_mask(pred_path) as pred_mask:
            if (pred_mask.height, pred_mask.width) != (truth_mask.height, truth_mask.width):
                raise InputError(
                    pred_path,
                    f"is {pred_mask.width}×{pred_mask.height} px but {truth_path.name} is "
                    f"{truth_mask.width}×{truth_mask.height} px",
                )
            for box in truth_mask.blocks():
                matrix.update(pred_mask.read(box), truth_mask.read(box))
    return {"images": len(pairs), **matrix.to_json_dict()}


def _mask_pairs(pred: Path, truth: Path) -> list[tuple[Path, Path]]:
    for path in (pred, truth):
        if not path.exists():
            raise InputError(path, "not found")
    if pred.is_dir() != truth.is_dir():
        raise InputError(pred, "give two files or two folders, not one of each")
    if not pred.is_dir():
        return [(pred, truth)]
    preds, truths = _masks_by_stem(pred), _masks_by_stem(truth)
    missing = sorted(set(truths) - set(preds))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise InputError(pred, f"has no prediction for {len(missing)} of {len(truths)} true masks: {shown}")
    if not truths:
        raise InputError(truth, "holds no masks")
    return [(preds[stem], truths[stem]) for stem in sorted(truths)]


def _masks_by_stem(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in SCENE_SUFFIXES:
            if path.stem in found:
                raise InputError(path, f"two masks share the name {path.stem!r} ({found[path.stem].name})")
            found[path.stem] = path
    return found
