"""Where training samples come from: folders of image/mask pairs, Landslide4Sense HDF5, a workspace's
latest masks, and unlabelled imagery for pseudo-labelling.

A sample is (image float32 (C, H, W) in raw units with NaN where invalid, mask uint8 (H, W) in
{0, 1, IGNORE}) at its native size; invalid image pixels are always IGNORE in the mask. Cropping,
augmentation and normalisation belong to `TrainingView` (engine/training/data_loader.py), so the same
datasets feed training, validation and statistics. Files are opened per sample, never held open, so
datasets can be handed to DataLoader workers, and large scenes are only read window by window.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from torch.utils.data import Dataset

from engine.errors import InputError
from engine.io.backends import Box
from engine.io.masks import open_mask, read_mask
from engine.io.raster import SCENE_SUFFIXES, describe, open_scene
from engine.io.scene import SceneDescriptor
from engine.store import Workspace
from engine.store.records import MASK_SOURCES
from engine.tiling import TileGrid
from engine.training.data_loader import TrainingView, collate, make_loader
from engine.training.data_normalise import Normaliser, compute_statistics
from engine.training.method import IGNORE

__all__ = [
    "FolderDataset",
    "L4SDataset",
    "Labeled",
    "Normaliser",
    "PairedDataset",
    "PoolItem",
    "TrainingView",
    "UnlabeledPool",
    "WorkspaceTiles",
    "collate",
    "compute_statistics",
    "make_loader",
    "optical_bands",
]

Sample = tuple[np.ndarray, np.ndarray]
# bands that record terrain, not reflectance: colour jitter must leave them alone
NON_OPTICAL = ("slope", "dem", "dsm", "dtm", "elevation", "height", "aspect", "hillshade", "curvature")


def optical_bands(band_names: Sequence[str]) -> list[int]:
    """Indices of reflectance bands, recognised by the first word of each band name."""
    words = [name.split()[0].lower() if name.split() else "" for name in band_names]
    return [i for i, word in enumerate(words) if word not in NON_OPTICAL]


def ignore_invalid(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A label under a nodata pixel cannot be learned from, so it must not count."""
    mask = np.array(mask, dtype=np.uint8)
    mask[~np.isfinite(image).all(axis=0)] = IGNORE
    return mask


def _scene_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(folder, "folder not found")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in SCENE_SUFFIXES:
            continue
        if path.stem in files:
            raise InputError(
                folder, f"holds two files named {path.stem} ({files[path.stem].name}, {path.name})"
            )
        files[path.stem] = path
    return files


def _select(available: Iterable[str], wanted: Sequence[str] | None, where: Path, what: str) -> list[str]:
    names = list(available)
    if wanted is None:
        return names
    known = set(names)
    missing = [w for w in wanted if w not in known]
    if missing:
        raise InputError(where, f"has no {what} for ids {missing[:5]}{' …' if len(missing) > 5 else ''}")
    return list(dict.fromkeys(wanted))


class PairedDataset(Dataset):
    """Whole image/mask file pairs, read when asked for; for patches that fit in memory."""

    def __init__(self, pairs: Sequence[tuple[str, Path, Path]]):
        self.ids = [p[0] for p in pairs]
        self.image_paths = [Path(p[1]) for p in pairs]
        self.mask_paths = [Path(p[2]) for p in pairs]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Sample:
        with open_scene(self.image_paths[index]) as scene:
            image = scene.read_float()
            descriptor = scene.descriptor
        mask = read_mask(self.mask_paths[index], like=descriptor)
        return image, ignore_invalid(image, mask)

    @cached_property
    def band_names(self) -> tuple[str, ...]:
        return describe(self.image_paths[0]).band_names if self.image_paths else ()

    @property
    def optical_bands(self) -> list[int]:
        return optical_bands(self.band_names)


class FolderDataset(PairedDataset):
    """root/images/* and root/masks/* paired by file stem, optionally restricted to a split of
    root/splits.json ({"train": [stems], "val": [stems]}) and/or to explicit ids."""

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        ids: Sequence[str] | None = None,
        *,
        images: str | Path | None = None,
        masks: str | Path | None = None,
    ):
        root = Path(root)
        image_dir = Path(images) if images is not None else root / "images"
        mask_dir = Path(masks) if masks is not None else root / "masks"
        image_files, mask_files = _scene_files(image_dir), _scene_files(mask_dir)
        names: list[str] = list(image_files)
        if split is not None:
            names = _select(image_files, self._split_ids(root, split), image_dir, "image")
        if ids is not None:
            names = _select(names, ids, image_dir, f"image{' in split ' + split if split else ''}")
        missing = [name for name in names if name not in mask_files]
        if missing:
            raise InputError(
                mask_dir, f"has no mask for images {missing[:5]}{' …' if len(missing) > 5 else ''}"
            )
        super().__init__([(name, image_files[name], mask_files[name]) for name in names])
        self.root = root
        self.split = split

    @classmethod
    def from_folders(
        cls, images: str | Path, masks: str | Path, ids: Sequence[str] | None = None
    ) -> FolderDataset:
        """Images and masks in two folders of their own (no splits.json), e.g. for evaluation."""
        return cls(Path(images).parent, ids=ids, images=images, masks=masks)

    @staticmethod
    def _split_ids(root: Path, split: str) -> list[str]:
        path = root / "splits.json"
        if not path.is_file():
            raise InputError(path, f"not found; split {split!r} cannot be chosen without it")
        try:
            splits = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(path, f"is not readable JSON ({exc})") from exc
        if not isinstance(splits, dict) or split not in splits:
            names = ", ".join(sorted(splits)) if isinstance(splits, dict) else "none"
            raise InputError(path, f"has no split {split!r}; its splits: {names}")
        return [str(s) for s in splits[split]]


def _number(stem: str) -> int:
    found = re.search(r"(\d+)$", stem)
    return int(found.group(1)) if found else -1


class L4SDataset(PairedDataset):
    """Landslide4Sense: root/img/image_N.h5 with root/mask/mask_N.h5; ids are image stems ("image_N")."""

    def __init__(self, root: str | Path, ids: Sequence[str] | None = None):
        root = Path(root)
        images = _scene_files(root / "img")
        masks = _scene_files(root / "mask")
        names = _select(sorted(images, key=lambda s: (_number(s), s)), ids, root / "img", "image")
        pairs = []
        for name in names:
            mask_name = "mask_" + name.removeprefix("image_")
            if mask_name not in masks:
                raise InputError(root / "mask", f"has no {mask_name}.h5 for {images[name].name}")
            pairs.append((name, images[name], masks[mask_name]))
        super().__init__(pairs)
        self.root = root


@dataclass(frozen=True)
class TileRef:
    scene_id: int
    image_path: Path
    mask_path: Path
    window: Box  # y, x, h, w inside the scene


class WorkspaceTiles(Dataset):
    """Tiles of the workspace scenes' latest mask versions: what the user corrected is what retrains.

    Only scenes whose latest version comes from one of `sources` take part; an older correction under
    a newer prediction does not, because the newer version is what the user now sees as the truth.
    `mask_version_ids` (scene id → mask version id) is the data snapshot a trained model records.
    """

    def __init__(
        self,
        workspace: Workspace,
        scene_ids: Sequence[int] | None = None,
        tile: int = 512,
        sources: Sequence[str] = ("correction", "import", "prediction"),
    ):
        unknown = [s for s in sources if s not in MASK_SOURCES]
        if unknown:
            raise InputError("mask sources", f"unknown {unknown}; use {', '.join(MASK_SOURCES)}")
        scenes = workspace.list_scenes() if scene_ids is None else [workspace.get_scene(i) for i in scene_ids]
        self.tile = int(tile)
        self.tiles: list[TileRef] = []
        self.mask_version_ids: dict[int, int] = {}
        self.skipped: dict[int, str] = {}  # scene id → why it is not used
        self.descriptors: dict[int, SceneDescriptor] = {}
        for scene in scenes:
            latest = workspace.latest_mask_version(scene.id)
            if latest is None:
                self.skipped[scene.id] = "has no mask"
                continue
            if latest.source not in sources:
                self.skipped[scene.id] = f"its latest mask is a {latest.source}"
                continue
            descriptor = SceneDescriptor.from_dict(scene.descriptor)
            if self.descriptors and descriptor.count != self.band_count:
                raise InputError(
                    scene.name, f"has {descriptor.count} bands, the other training scenes {self.band_count}"
                )
            self.descriptors[scene.id] = descriptor
            self.mask_version_ids[scene.id] = latest.id
            grid = TileGrid(descriptor.height, descriptor.width, self.tile, 0)
            self.tiles += [
                TileRef(scene.id, scene.path, latest.raster_path, grid.source_window(t)) for t in grid.tiles()
            ]

    @property
    def band_count(self) -> int:
        return next(iter(self.descriptors.values())).count if self.descriptors else 0

    @property
    def optical_bands(self) -> list[int]:
        first = next(iter(self.descriptors.values()), None)
        return optical_bands(first.band_names) if first is not None else []

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, index: int) -> Sample:
        ref = self.tiles[index]
        with open_scene(ref.image_path) as scene:
            image = scene.read_float(ref.window)
            descriptor = scene.descriptor
        with open_mask(ref.mask_path, like=descriptor) as mask:
            labels = mask.read(ref.window)
        return image, ignore_invalid(image, labels)


class PoolItem(NamedTuple):
    key: str  # stable across runs, so pseudo-labels can be stored and found again per tile
    image: np.ndarray


@dataclass(frozen=True)
class _PoolSource:
    name: str
    path: Path
    height: int
    width: int
    band_names: tuple[str, ...]


class UnlabeledPool(Dataset):
    """Tiles of images without masks, for pseudo-labelling. Keys read "<source>/<y>_<x>_<h>_<w>" where
    the source is the file name (folders) or the scene checksum (workspaces), so a key names the same
    pixels even after the workspace is rebuilt."""

    def __init__(self, sources: Sequence[_PoolSource], tile: int = 512):
        self.tile = int(tile)
        self.sources = list(sources)
        self.entries: list[tuple[str, int, Box]] = []
        for number, source in enumerate(self.sources):
            grid = TileGrid(source.height, source.width, self.tile, 0)
            for t in grid.tiles():
                y, x, h, w = grid.source_window(t)
                self.entries.append((f"{source.name}/{y}_{x}_{h}_{w}", number, (y, x, h, w)))
        self.keys = [entry[0] for entry in self.entries]
        self._index = {key: i for i, key in enumerate(self.keys)}
        if len(self._index) != len(self.keys):
            raise InputError("unlabelled pool", "two sources share a name; their tile keys would collide")

    @classmethod
    def from_folder(cls, folder: str | Path, tile: int = 512) -> UnlabeledPool:
        files = _scene_files(Path(folder))
        if not files:
            raise InputError(folder, f"holds no images ({', '.join(SCENE_SUFFIXES)})")
        sources = []
        for path in files.values():
            d = describe(path)
            sources.append(_PoolSource(path.name, path, d.height, d.width, d.band_names))
        return cls(sources, tile)

    @classmethod
    def from_workspace(
        cls, workspace: Workspace, scene_ids: Sequence[int] | None = None, tile: int = 512
    ) -> UnlabeledPool:
        scenes = workspace.list_scenes() if scene_ids is None else [workspace.get_scene(i) for i in scene_ids]
        sources = []
        for scene in scenes:
            d = SceneDescriptor.from_dict(scene.descriptor)
            sources.append(_PoolSource(scene.checksum[:16], scene.path, d.height, d.width, d.band_names))
        return cls(sources, tile)

    @property
    def optical_bands(self) -> list[int]:
        return optical_bands(self.sources[0].band_names) if self.sources else []

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def index_of(self, key: str) -> int:
        try:
            return self._index[key]
        except KeyError:
            raise InputError(key, "is not a tile of this unlabelled pool") from None

    def __len__(self) -> int:
        return len(self.entries)

    def items(self) -> Iterator[PoolItem]:
        """(key, image) for every tile in order, reading one tile at a time."""
        for index in range(len(self)):
            yield self[index]

    def __getitem__(self, index: int) -> PoolItem:
        key, number, window = self.entries[index]
        with open_scene(self.sources[number].path) as scene:
            return PoolItem(key, scene.read_float(window))


class Labeled(Dataset):
    """The pool tiles that have a label, as ordinary samples: pseudo-labels join training like masks.

    A label is an (h, w) uint8 array in {0, 1, IGNORE} (IGNORE where the teacher was unsure), or the
    path of a .npy file holding one, so large pools need not keep every label in memory.
    """

    def __init__(self, pool: UnlabeledPool, labels: Mapping[str, Any]):
        unknown = [key for key in labels if key not in pool]
        if unknown:
            raise InputError("pseudo-labels", f"name tiles that are not in the pool: {unknown[:3]}")
        self.pool = pool
        self.labels = labels
        self.indices = [i for i, key in enumerate(pool.keys) if key in labels]

    @property
    def optical_bands(self) -> list[int]:
        return self.pool.optical_bands

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Sample:
        key, image = self.pool[self.indices[index]]
        label = self.labels[key]
        mask = np.load(label) if isinstance(label, str | Path) else np.asarray(label)
        if mask.shape != image.shape[1:]:
            raise InputError(key, f"label is {mask.shape}, the tile {image.shape[1:]}")
        if not np.isin(mask, (0, 1, IGNORE)).all():
            raise InputError(key, f"label values must be 0, 1 or {IGNORE}")
        return image, ignore_invalid(image, mask)
