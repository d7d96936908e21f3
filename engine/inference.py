"""Tiled prediction over a whole scene, streamed to GeoTIFFs that keep the scene's CRS and transform.

Tiles are read window by window by a reader thread that stays a few batches ahead of the model, run
through the model(s) in batches (channels_last, bf16 autocast where the hardware has it), blended by
the Stitcher and written row band by row band. No array spans the scene: memory depends on the tile
size and the scene width, never on the scene area. A scene that fits in one tile is one padded
forward pass. An ensemble averages the landslide probabilities of its members, as the Landslide4Sense
winners did.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import torch
from torch import nn

from engine.crf import refine
from engine.devices import autocast, pick_device, resolve_precision
from engine.errors import InputError
from engine.io.bands import band_statistics, resolve_bands
from engine.io.raster import open_scene
from engine.io.scene import Scene, SceneDescriptor
from engine.io.writers import BLOCK, raster_writer
from engine.models import ARCHITECTURES, build_model
from engine.models.checkpoint import ModelCard, load_model
from engine.models.shipped import resolve_checkpoint
from engine.tiling import Stitcher, TileGrid, iter_batches, pad_tile

Progress = Callable[[int, int], None]
SINK_COLUMNS = 2048


@dataclass
class PredictOptions:
    tile: int = 512
    overlap: int = 64
    batch: int = 4
    device: str = "auto"
    precision: str = "auto"
    tta: bool = False
    threshold: float = 0.5
    crf: bool = False  # DenseCRF on each tile's probability, over the scene's true-colour bands
    threads: int | None = None  # torch's intra-op threads on a CPU; None keeps torch's default
    prefetch: int = 2  # batches the reader thread keeps ready ahead of the model


@dataclass
class Member:
    """One model of a prediction, with the bands it reads and the statistics it normalises with."""

    label: str
    model: nn.Module
    card: ModelCard
    bands: tuple[int, ...] = ()
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    std: np.ndarray = field(default_factory=lambda: np.ones(0))


@dataclass(frozen=True)
class PredictionSummary:
    tiles: int
    seconds: float
    device: str
    precision: str
    landslide_fraction: float
    models: tuple[str, ...]


def resolve_models(spec: str, in_channels: int) -> list[Member]:
    """Models from a comma-separated list of checkpoint paths, shipped model names or architecture names.

    An architecture name builds a randomly initialised model with the scene's band count: useful to
    check the pipeline, useless for mapping (the label says so).
    """
    members = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        path = resolve_checkpoint(item)
        if path.suffix or path.exists():
            model, card = load_model(path)
            members.append(Member(path.stem, model, card))
        elif item in ARCHITECTURES:
            model = build_model(item, in_channels).eval()
            card = ModelCard(architecture=item, in_channels=in_channels, provenance={"weights": "random"})
            members.append(Member(f"{item} (random weights)", model, card))
        else:
            names = ", ".join(ARCHITECTURES)
            raise InputError(item, f"is neither a checkpoint file, a shipped model nor one of {names}")
    if not members:
        raise InputError(spec, "names no model")
    return members


def prepare(member: Member, scene: Scene) -> None:
    """Choose the member's bands for this scene and the statistics to normalise them with."""
    d = scene.descriptor
    wanted = member.card.in_channels
    if wanted == d.count:
        member.bands = tuple(range(d.count))
    elif wanted == 3:
        member.bands = resolve_bands(d, "rgb")  # an RGB model sees multispectral scenes in true colour
    else:
        raise InputError(d.path, f"has {d.count} bands but model {member.label} expects {wanted}")
    if member.card.mean is not None and member.card.std is not None:
        member.mean = np.asarray(member.card.mean, np.float32)
        member.std = np.asarray(member.card.std, np.float32)
    else:  # separate normalisation: the scene's own statistics
        mean, std = band_statistics(scene)
        member.mean = mean[list(member.bands)].astype(np.float32)
        member.std = std[list(member.bands)].astype(np.float32)
    member.std = np.where(member.std > 0, member.std, 1.0).astype(np.float32)


def predict_scene(
    spec: str | list[Member],
    scene_path: str | Path,
    mask_out: str | Path,
    probabilities_out: str | Path | None = None,
    options: PredictOptions | None = None,
    progress: Progress | None = None,
) -> PredictionSummary:
    options = options or PredictOptions()
    started = time.perf_counter()
    device = pick_device(options.device)
    dtype = resolve_precision(device, options.precision)
    with open_scene(scene_path) as scene:
        d = scene.descriptor
        members = resolve_models(spec, d.count) if isinstance(spec, str) else spec
        for member in members:
            prepare(member, scene)
            member.model.to(device, memory_format=torch.channels_last).eval()
        grid = scene_grid(d, options)
        landslide = 0
        valid_total = 0

        def sink(y0: int, rows: np.ndarray) -> None:
            nonlocal landslide, valid_total
            for x0 in range(0, rows.shape[2], SINK_COLUMNS):  # keeps temporaries small on wide scenes
                probability = rows[0, :, x0 : x0 + SINK_COLUMNS]
                valid = np.isfinite(probability)
                mask = (probability >= options.threshold).astype(np.uint8)  # NaN compares False
                masks.write(y0, x0, mask)
                if probs is not None:
                    probs.write(y0, x0, probability)
                landslide += int(mask.sum())
                valid_total += int(valid.sum())

        # GDAL would otherwise keep up to 5 % of RAM of decoded and written blocks: whole outputs.
        with (
            rasterio.Env(GDAL_CACHEMAX=io_cache_bytes(scene, grid)),
            raster_writer(mask_out, d, 1, "uint8") as masks,
            _probability_writer(probabilities_out, d) as probs,
            _with_threads(options.threads),
            TileReader(scene, grid, options.batch, options.prefetch) as reader,
        ):
            # A pixel's validity is the same in every tile that covers it, so NaN carries it through
            # the blend: one channel, and the band across the scene stays as small as it can.
            stitcher = Stitcher(grid, 1, sink)
            done = 0
            for batch, stacked in reader:
                probability = _ensemble(members, stacked, device, dtype, options.tta)
                if options.crf:
                    colour = list(resolve_bands(d, "rgb"))
                    for i in range(len(batch)):
                        probability[i] = refine(probability[i], stacked[i, colour])
                probability[~np.isfinite(stacked).all(axis=1)] = np.nan
                for i, tile in enumerate(batch):
                    stitcher.add(tile, probability[i : i + 1])
                done += len(batch)
                if progress is not None:
                    progress(done, len(grid))
            stitcher.close()
    return PredictionSummary(
        tiles=len(grid),
        seconds=time.perf_counter() - started,
        device=str(device),
        precision=str(dtype).removeprefix("torch."),
        landslide_fraction=landslide / valid_total if valid_total else 0.0,
        models=tuple(m.label for m in members),
    )


def io_cache_bytes(scene: Scene, grid: TileGrid) -> int:
    """GDAL's block cache for one prediction: the input blocks around the tile being read, and the
    output block rows still being filled. Less would decode input blocks again for the next tile or
    flush half-written output blocks; more would only hold rows that are done. It grows with the
    width (output rows, and input rows for striped files), never with the height."""
    d = scene.descriptor
    block_h, block_w = scene.block_shape
    pixel = d.count * np.dtype(d.dtype).itemsize
    reading = (grid.tile + block_h) * min(d.width, grid.tile + block_w) * pixel
    writing = 2 * BLOCK * d.width * (1 + 4)  # the uint8 mask and the float32 probabilities
    return int(min(max(reading + writing, 16 * 2**20), 1024 * 2**20))


_END = object()


class TileReader:
    """Reads, pads and stacks the grid's tiles batch by batch in a thread, while the model runs.

    Iterating yields (tiles, (N, bands, tile, tile) float32 with NaN where invalid) in row-major order.
    At most `depth` batches wait in the queue, so memory stays bounded however slow the model is. An
    error while reading is raised in the consuming thread; leaving the `with` block stops the thread.
    """

    def __init__(self, scene: Scene, grid: TileGrid, batch: int, depth: int = 2) -> None:
        self._scene = scene
        self._grid = grid
        self._batch = max(1, batch)
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read_all, name="scarp-tile-reader", daemon=True)

    def __enter__(self) -> TileReader:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _read_all(self) -> None:
        grid, scene = self._grid, self._scene
        try:
            for batch in iter_batches(grid.tiles(), self._batch):
                tiles = [pad_tile(scene.read_float(grid.source_window(t)), grid.tile) for t in batch]
                if not self._put((batch, np.stack(tiles))):
                    return
            self._put(_END)
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(exc)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


@contextmanager
def _with_threads(threads: int | None):
    """torch's intra-op thread count for the block, restored afterwards (it is process-wide)."""
    if not threads:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def scene_grid(d: SceneDescriptor, options: PredictOptions) -> TileGrid:
    """A scene that fits in one tile is run as one tile just big enough (a multiple of 32)."""
    tile = min(options.tile, 32 * math.ceil(max(d.height, d.width) / 32))
    overlap = min(options.overlap, tile // 2)
    return TileGrid(d.height, d.width, tile, overlap)


def _probability_writer(path: str | Path | None, d: SceneDescriptor):
    return nullcontext(None) if path is None else raster_writer(path, d, 1, "float32", nodata=float("nan"))


@torch.inference_mode()
def _ensemble(members: list[Member], tiles: np.ndarray, device, dtype, tta: bool) -> np.ndarray:
    """Mean landslide probability of all members for a batch of (N, bands, h, w) raw tiles."""
    total = None
    for member in members:
        x = tiles[:, list(member.bands)]
        x = (x - member.mean[None, :, None, None]) / member.std[None, :, None, None]
        x = (
            torch.from_numpy(np.nan_to_num(x, nan=0.0))
            .to(device)
            .contiguous(memory_format=torch.channels_last)
        )
        p = landslide_probability(member.model, x, device, dtype, tta)
        total = p if total is None else total + p
    return (total / len(members)).float().cpu().numpy()


def landslide_probability(model: nn.Module, x: torch.Tensor, device, dtype, tta: bool) -> torch.Tensor:
    """(N, H, W) landslide probability; with `tta`, the mean over the four flips of the input."""
    flips = [(), (-1,), (-2,), (-2, -1)] if tta else [()]
    total = 0
    for dims in flips:
        xi = torch.flip(x, dims) if dims else x
        with autocast(device, dtype):
            logits = model(xi)
        p = torch.softmax(logits.float(), dim=1)[:, 1]
        total = total + (torch.flip(p, dims) if dims else p)
    return total / len(flips)
