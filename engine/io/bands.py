"""Band choice and display: presets, percentile stretch, thumbnails and sampled per-band statistics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.errors import InputError
from engine.io.scene import Scene, SceneDescriptor

PRESETS = ("rgb", "s2_true_colour")


def resolve_bands(descriptor: SceneDescriptor, selection: str | Sequence[int] = "rgb") -> tuple[int, ...]:
    """0-based band indices for a preset name or an explicit list.

    `rgb` shows a scene as it is meant to be seen: its red/green/blue bands, Sentinel-2 B4/B3/B2 when the
    bands are named that way (Landslide4Sense), and a grey image for a single band.
    `s2_true_colour` insists on bands named B4, B3 and B2.
    """
    if not isinstance(selection, str):
        bands = tuple(int(b) for b in selection)
        bad = [b for b in bands if not 0 <= b < descriptor.count]
        if bad or not bands:
            raise InputError(
                descriptor.path, f"has {descriptor.count} bands; cannot select bands {bad or bands}"
            )
        return bands
    if selection == "s2_true_colour":
        found = _find_named(descriptor, ("B4", "B3", "B2"))
        if found is None:
            raise InputError(
                descriptor.path, f"has no bands named B4, B3 and B2 (bands: {descriptor.band_names})"
            )
        return found
    if selection == "rgb":
        found = _find_named(descriptor, ("B4", "B3", "B2")) or _find_named(
            descriptor, ("red", "green", "blue")
        )
        if found is not None:
            return found
        return (0, 0, 0) if descriptor.count < 3 else (0, 1, 2)
    raise ValueError(f"unknown band preset {selection!r}; use one of {PRESETS} or a list of band indices")


def _find_named(descriptor: SceneDescriptor, wanted: tuple[str, ...]) -> tuple[int, ...] | None:
    """Match band names on their first word, case-insensitively ('B4 red' is B4; 'band 4' is nothing)."""
    first_words = [name.split()[0].lower() if name.split() else "" for name in descriptor.band_names]
    try:
        return tuple(first_words.index(w.lower()) for w in wanted)
    except ValueError:
        return None


def stretch_limits(
    data: np.ndarray, valid: np.ndarray | None = None, low: float = 2.0, high: float = 98.0
) -> np.ndarray:
    """Per-band (low, high) percentiles of the valid pixels of a (bands, h, w) array: shape (bands, 2)."""
    if not 0 <= low < high <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {low}, {high}")
    limits = np.zeros((data.shape[0], 2), dtype=np.float64)
    for i, band in enumerate(data):
        values = band[valid] if valid is not None else band.ravel()
        values = values[np.isfinite(values)] if values.dtype.kind == "f" else values
        if values.size:
            limits[i] = np.percentile(values, [low, high])
    return limits


def apply_stretch(data: np.ndarray, limits: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Map each band linearly from its limits to 0–255 (uint8); invalid pixels become 0."""
    lo = limits[:, 0][:, None, None]
    span = np.maximum(limits[:, 1] - limits[:, 0], 1e-12)[:, None, None]
    scaled = (data.astype(np.float64) - lo) / span
    out = np.clip(np.nan_to_num(scaled, nan=0.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if valid is not None:
        out[:, ~valid] = 0
    return out


def percentile_stretch(
    data: np.ndarray, valid: np.ndarray | None = None, low: float = 2.0, high: float = 98.0
) -> np.ndarray:
    return apply_stretch(data, stretch_limits(data, valid, low, high), valid)


def thumbnail(
    scene: Scene,
    max_side: int = 512,
    bands: str | Sequence[int] = "rgb",
    low: float = 2.0,
    high: float = 98.0,
) -> np.ndarray:
    """A stretched (h, w, 3) uint8 preview, read decimated so it costs little on a large scene."""
    d = scene.descriptor
    scale = min(1.0, max_side / max(d.width, d.height))
    out_h, out_w = max(1, round(d.height * scale)), max(1, round(d.width * scale))
    everything = scene.read_decimated(out_h, out_w)
    valid = scene.valid(everything)
    chosen = everything[list(resolve_bands(d, bands))]
    return np.moveaxis(percentile_stretch(chosen, valid, low, high), 0, -1)


def band_statistics(scene: Scene, windows: int = 16, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std of valid pixels, from up to `windows` evenly spread size × size windows.

    Training normalises with these; sampling keeps it cheap on large scenes and exact on small ones.
    """
    d = scene.descriptor
    per_axis = max(1, int(np.ceil(np.sqrt(windows))))
    h, w = min(size, d.height), min(size, d.width)
    ys = np.unique(np.linspace(0, d.height - h, per_axis).round().astype(int))
    xs = np.unique(np.linspace(0, d.width - w, per_axis).round().astype(int))
    total = np.zeros(d.count)
    total_sq = np.zeros(d.count)
    n = 0
    for y in ys:
        for x in xs:
            data = scene.read((int(y), int(x), h, w))
            values = data[:, scene.valid(data)].astype(np.float64)
            total += values.sum(axis=1)
            total_sq += (values**2).sum(axis=1)
            n += values.shape[1]
    if n == 0:
        raise InputError(
            d.path, "has no valid pixels in the sampled windows; cannot estimate band statistics"
        )
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean**2, 0.0))
    return mean, std
