"""Map overlays: small RGBA PNGs of a scene, its probability raster and terrain layers, with their bounds.

Overlays are always downsampled (longest side ≤ `max_side`) so a page never ships a full-resolution
image to the browser. Georeferenced rasters are warped to Web Mercator (EPSG:3857), the plane Leaflet
stretches an image overlay in, so the overlay lines up with polygons and base maps over whole degrees
of latitude; their bounds are given in lon/lat (crs "EPSG:4326"). Non-georeferenced rasters stay as
they are, with pixel bounds for Leaflet's CRS.Simple: top-left (0, 0), lat = -row, lng = column.
Colour ramps are small numpy lookup tables: no matplotlib.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.warp import reproject, transform_bounds

from engine.io.bands import apply_stretch, resolve_bands, stretch_limits
from engine.io.raster import open_scene
from engine.io.scene import SceneDescriptor

DEFAULT_MAX_SIDE = 1024
PROBABILITY_FLOOR = 0.1
SLOPE_RANGE = (0.0, 60.0)  # degrees; steeper than 60° is rare and all red anyway

Bounds = tuple[tuple[float, float], tuple[float, float]]  # ((south, west), (north, east)), Leaflet order


@dataclass(frozen=True)
class Overlay:
    """A PNG with its corner bounds; `crs` says whether the bounds are lon/lat or pixel coordinates."""

    png: bytes
    bounds: Bounds
    crs: str  # "EPSG:4326" or "pixel"
    width: int
    height: int

    @property
    def data_url(self) -> str:
        """Inline form for an image overlay: the page needs no file route for it."""
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def _ramp(anchors: Sequence[tuple[float, tuple[int, int, int]]]) -> np.ndarray:
    """A 256 × 3 uint8 lookup table interpolated between (position 0–1, colour) anchors."""
    positions = np.array([a[0] for a in anchors])
    colours = np.array([a[1] for a in anchors], dtype=np.float64)
    x = np.linspace(0.0, 1.0, 256)
    return (
        np.stack([np.interp(x, positions, colours[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)
    )


PROBABILITY_RAMP = _ramp(
    [(0.0, (255, 255, 178)), (0.35, (254, 178, 76)), (0.7, (240, 59, 32)), (1.0, (128, 0, 38))]
)
SLOPE_RAMP = _ramp(
    [(0.0, (26, 152, 80)), (0.25, (166, 217, 106)), (0.5, (254, 224, 139)), (1.0, (215, 48, 39))]
)
GRAY_RAMP = _ramp([(0.0, (0, 0, 0)), (1.0, (255, 255, 255))])
RAMPS = {"gray": GRAY_RAMP, "slope": SLOPE_RAMP, "probability": PROBABILITY_RAMP}


def scene_overlay(
    scene_path: str | Path,
    bands: str | Sequence[int] = "rgb",
    low: float = 2.0,
    high: float = 98.0,
    max_side: int = DEFAULT_MAX_SIDE,
) -> Overlay:
    """The scene as stretched colour, invalid (nodata) pixels transparent."""
    with open_scene(scene_path) as scene:
        chosen = list(resolve_bands(scene.descriptor, bands))
    data, bounds, crs = _display_grid(scene_path, chosen, max_side)
    valid = np.isfinite(data).all(axis=0)
    rgb = apply_stretch(data, stretch_limits(data, valid, low, high), valid)
    return _encode(np.moveaxis(rgb, 0, -1), valid, bounds, crs)


def probability_overlay(
    prob_path: str | Path, *, floor: float = PROBABILITY_FLOOR, max_side: int = DEFAULT_MAX_SIDE
) -> Overlay:
    """Landslide probability on a fixed 0–1 ramp; below `floor` (and NaN) fully transparent."""
    data, bounds, crs = _display_grid(prob_path, [0], max_side)
    prob = data[0]
    shown = np.isfinite(prob) & (prob >= floor)
    index = (np.clip(np.nan_to_num(prob), 0.0, 1.0) * 255).round().astype(np.uint8)
    return _encode(PROBABILITY_RAMP[index], shown, bounds, crs)


def single_band_overlay(
    path: str | Path,
    cmap: str = "gray",
    *,
    value_range: tuple[float, float] | None = None,
    max_side: int = DEFAULT_MAX_SIDE,
) -> Overlay:
    """Hillshade, DEM or slope; `slope` maps 0–60° by default, `gray` stretches the 2–98 % percentiles."""
    if cmap not in RAMPS:
        raise ValueError(f"unknown colour map {cmap!r}; use one of {', '.join(RAMPS)}")
    data, bounds, crs = _display_grid(path, [0], max_side)
    band = data[0]
    valid = np.isfinite(band)
    if value_range is None:
        value_range = SLOPE_RANGE if cmap == "slope" else tuple(stretch_limits(data, valid)[0])
    lo, hi = value_range
    scaled = (np.nan_to_num(band, nan=lo) - lo) / max(hi - lo, 1e-12)
    index = (np.clip(scaled, 0.0, 1.0) * 255).round().astype(np.uint8)
    return _encode(RAMPS[cmap][index], valid, bounds, crs)


def legend_html(floor: float = PROBABILITY_FLOOR, title: str = "Landslide probability") -> str:
    """A self-contained legend (inline styles) for the probability ramp, to sit in a map control."""
    stops = ", ".join(
        f"rgb{tuple(int(v) for v in PROBABILITY_RAMP[round(p * 255)])} {p * 100:.0f}%"
        for p in (0, 0.35, 0.7, 1)
    )
    return (
        '<div class="scarp-legend" style="background:rgba(255,255,255,0.9);padding:6px 8px;'
        "border-radius:4px;font:12px sans-serif;"
        'box-shadow:0 1px 4px rgba(0,0,0,0.3)">'
        f"<div><b>{title}</b></div>"
        '<div style="width:160px;height:10px;margin:4px 0;'
        f'background:linear-gradient(to right, {stops})"></div>'
        '<div style="display:flex;justify-content:space-between;width:160px">'
        "<span>0</span><span>0.5</span><span>1</span></div>"
        f'<div style="color:#555">transparent below {floor:g}</div></div>'
    )


def category_overlay(
    path: str | Path, colours: dict[int, tuple[int, int, int]], *, max_side: int = DEFAULT_MAX_SIDE
) -> Overlay:
    """A class raster (e.g. where two predictions disagree): each listed code in its colour, every other
    code and nodata transparent. Reprojected with nearest-neighbour, so codes are never blended."""
    data, bounds, crs = _display_grid(path, [0], max_side, Resampling.nearest)
    band = data[0]
    rgb = np.zeros((*band.shape, 3), np.uint8)
    shown = np.zeros(band.shape, bool)
    for code, colour in colours.items():
        hit = band == code
        rgb[hit] = colour
        shown |= hit
    return _encode(rgb, shown, bounds, crs)


def _display_grid(
    path: str | Path, bands: list[int], max_side: int, resampling: Resampling = Resampling.bilinear
) -> tuple[np.ndarray, Bounds, str]:
    """float32 (bands, h, w) with NaN where invalid, on the display grid, and that grid's bounds."""
    with open_scene(path) as scene:
        d = scene.descriptor
        scale = min(1.0, max_side / max(d.width, d.height))
        out_h, out_w = max(1, round(d.height * scale)), max(1, round(d.width * scale))
        everything = scene.read_decimated(out_h, out_w)
        valid = scene.valid(everything)
    data = everything[bands].astype(np.float32)
    data[:, ~valid] = np.nan
    if not d.georeferenced:
        return data, ((-float(d.height), 0.0), (0.0, float(d.width))), "pixel"
    return _to_web_mercator(data, d, max_side, resampling)


def _to_web_mercator(
    data: np.ndarray, d: SceneDescriptor, max_side: int, resampling: Resampling = Resampling.bilinear
) -> tuple[np.ndarray, Bounds, str]:
    _, src_h, src_w = data.shape
    src_transform = d.affine @ Affine.scale(d.width / src_w, d.height / src_h)
    x0, y0, x1, y1 = transform_bounds(d.crs, "EPSG:3857", *d.bounds, densify_pts=21)
    side = min(max_side, max(src_w, src_h))
    aspect = (x1 - x0) / (y1 - y0)
    dst_w, dst_h = (
        (side, max(1, round(side / aspect))) if aspect >= 1 else (max(1, round(side * aspect)), side)
    )
    dst_transform = Affine.translation(x0, y1) @ Affine.scale((x1 - x0) / dst_w, (y0 - y1) / dst_h)
    out = np.full((data.shape[0], dst_h, dst_w), np.nan, dtype=np.float32)
    for i in range(data.shape[0]):
        reproject(
            source=data[i],
            destination=out[i],
            src_transform=src_transform,
            src_crs=d.crs,
            src_nodata=np.nan,
            dst_transform=dst_transform,
            dst_crs="EPSG:3857",
            dst_nodata=np.nan,
            resampling=resampling,
        )
    west, south, east, north = transform_bounds("EPSG:3857", "EPSG:4326", x0, y0, x1, y1)
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        raise ValueError(f"{d.path}: bounds do not map to lon/lat")
    return out, ((south, west), (north, east)), "EPSG:4326"


def _encode(rgb: np.ndarray, shown: np.ndarray, bounds: Bounds, crs: str) -> Overlay:
    rgba = np.dstack([rgb, np.where(shown, 255, 0).astype(np.uint8)])
    buffer = io.BytesIO()
    Image.fromarray(rgba).save(buffer, format="PNG")
    return Overlay(buffer.getvalue(), bounds, crs, rgba.shape[1], rgba.shape[0])
