"""Landslide polygons from a mask: one polygon per connected region, with area and per-region statistics.

Regions are 4-connected (pixels touching only at a corner are two landslides), which keeps every polygon
valid. The mask is read whole up to `MAX_VECTOR_PIXELS`; a larger mask is vectorised on a grid decimated
by an integer factor (any landslide pixel marks its coarse cell, so thin slides survive) and pixel
counts are scaled back up: outlines and counts of such scenes are approximate at that resolution.
File writers (GeoPackage, GeoJSON files) will build on `landslide_polygons` and `to_geojson`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.features
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.warp import reproject, transform_geom
from shapely import affinity
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry

from engine.io.masks import read_mask
from engine.io.raster import describe
from engine.io.scene import SceneDescriptor

MAX_VECTOR_PIXELS = 64_000_000  # about 8000 × 8000: a uint8 mask plus an int32 label image stay < 400 MB


@dataclass(frozen=True)
class Landslide:
    """One mapped landslide; `polygon` is in the scene CRS (pixel x, y for non-georeferenced scenes)."""

    id: int
    polygon: BaseGeometry
    pixels: int
    area_m2: float | None
    mean_probability: float | None = None
    max_probability: float | None = None
    mean_slope: float | None = None

    def properties(self) -> dict[str, Any]:
        """JSON-friendly attributes, rounded to what a reviewer can use."""

        def r(value: float | None, digits: int) -> float | None:
            return None if value is None else round(float(value), digits)

        return {
            "id": self.id,
            "pixels": self.pixels,
            "area_m2": r(self.area_m2, 1),
            "mean_probability": r(self.mean_probability, 3),
            "max_probability": r(self.max_probability, 3),
            "mean_slope": r(self.mean_slope, 1),
        }


def landslide_polygons(
    mask_path: str | Path,
    *,
    probability_path: str | Path | None = None,
    slope_path: str | Path | None = None,
    min_pixels: int = 4,
    max_pixels: int = MAX_VECTOR_PIXELS,
) -> list[Landslide]:
    """Connected landslide regions of a {0,1}/{0,255} mask, with ids 1, 2, ... in raster-scan order.

    The probability raster must be on the mask's grid (as predictions are); the slope raster only needs
    the same CRS and is resampled (bilinear) onto the mask's grid, so a coarser DEM product works.
    """
    descriptor = describe(mask_path)
    factor = max(1, math.ceil(math.sqrt(descriptor.pixels / max_pixels)))
    mask, grid = _read_mask(Path(mask_path), descriptor, factor)
    labels, polygons = _label_regions(mask, min_pixels)
    if not polygons:
        return []
    count = len(polygons)
    flat = labels.ravel()
    pixels = np.bincount(flat, minlength=count + 1)[1:] * factor * factor
    mean_p = max_p = mean_s = [None] * count
    if probability_path is not None:
        prob = _read_on_grid(Path(probability_path), descriptor, grid, labels.shape, Resampling.average)
        mean_p = _region_means(flat, prob.ravel(), count)
        max_p = _region_max(flat, prob.ravel(), count)
    if slope_path is not None:
        slope = _read_on_grid(Path(slope_path), descriptor, grid, labels.shape, Resampling.bilinear)
        mean_s = _region_means(flat, slope.ravel(), count)
    crs = CRS.from_string(descriptor.crs) if descriptor.georeferenced else None
    out = []
    for i, pixel_polygon in enumerate(polygons):
        polygon = _to_grid_coords(pixel_polygon, grid)
        out.append(
            Landslide(
                id=i + 1,
                polygon=polygon,
                pixels=int(pixels[i]),
                area_m2=_area_m2(polygon, crs),
                mean_probability=mean_p[i],
                max_probability=max_p[i],
                mean_slope=mean_s[i],
            )
        )
    return out


def to_geojson(landslides: list[Landslide], descriptor: SceneDescriptor) -> dict[str, Any]:
    """A FeatureCollection in lon/lat (EPSG:4326), or in pixel space for a non-georeferenced scene.

    Pixel space follows Leaflet's CRS.Simple with the image's top-left corner at (0, 0): a point is
    [x, -y] (x = column, y = row), so the image lies at lat ∈ [-height, 0], lng ∈ [0, width].
    """
    features = []
    for slide in landslides:
        if descriptor.georeferenced:
            geometry = transform_geom(descriptor.crs, "EPSG:4326", mapping(slide.polygon))
        else:
            geometry = mapping(affinity.scale(slide.polygon, xfact=1.0, yfact=-1.0, origin=(0, 0)))
        features.append(
            {"type": "Feature", "id": slide.id, "geometry": geometry, "properties": slide.properties()}
        )
    crs = "EPSG:4326" if descriptor.georeferenced else "pixel"
    return {"type": "FeatureCollection", "features": features, "scarp_crs": crs}


def _read_mask(path: Path, descriptor: SceneDescriptor, factor: int) -> tuple[np.ndarray, Affine]:
    """The mask as {0,1} uint8 and the grid it is on (the scene transform, scaled when decimated)."""
    if factor == 1:
        return read_mask(path, like=descriptor), descriptor.affine
    height, width = math.ceil(descriptor.height / factor), math.ceil(descriptor.width / factor)
    with rasterio.open(path) as ds:
        data = ds.read(1, out_shape=(height, width), out_dtype="float32", resampling=Resampling.average)
    grid = descriptor.affine @ Affine.scale(descriptor.width / width, descriptor.height / height)
    return (data != 0).astype(np.uint8), grid


def _label_regions(mask: np.ndarray, min_pixels: int) -> tuple[np.ndarray, list[BaseGeometry]]:
    """Polygons in pixel coordinates and a label image (0 = background, i + 1 = polygons[i])."""
    found = [
        shape(geom)
        for geom, value in rasterio.features.shapes(mask, mask=mask == 1, connectivity=4)
        if value == 1
    ]
    found = [p for p in found if p.area >= min_pixels]  # a pixel-space polygon's area is its pixel count
    if not found:
        return np.zeros(mask.shape, dtype=np.int32), []
    labels = rasterio.features.rasterize(
        ((p, i + 1) for i, p in enumerate(found)), out_shape=mask.shape, fill=0, dtype="int32"
    )
    return labels, found


def _to_grid_coords(polygon: BaseGeometry, grid: Affine) -> BaseGeometry:
    return affinity.affine_transform(polygon, [grid.a, grid.b, grid.d, grid.e, grid.c, grid.f])


def _area_m2(polygon: BaseGeometry, crs: CRS | None) -> float | None:
    """Projected CRS: planar area in metres; geographic: area after reprojecting to the local UTM zone."""
    if crs is None:
        return None
    if crs.is_projected:
        factor = crs.linear_units_factor[1]
        return float(polygon.area * factor * factor)
    centre = transform_geom(crs, "EPSG:4326", mapping(polygon.centroid))["coordinates"]
    lon, lat = centre
    zone = min(60, max(1, int((lon + 180) // 6) + 1))
    utm = f"EPSG:{32600 + zone if lat >= 0 else 32700 + zone}"
    return float(shape(transform_geom(crs, utm, mapping(polygon))).area)


def _read_on_grid(
    path: Path, descriptor: SceneDescriptor, grid: Affine, shape_hw: tuple[int, int], resampling: Resampling
) -> np.ndarray:
    """A float32 band resampled onto the mask grid; nodata and pixels outside the raster become NaN."""
    out = np.full(shape_hw, np.nan, dtype=np.float32)
    with rasterio.open(path) as ds:
        same_grid = (ds.height, ds.width) == (descriptor.height, descriptor.width)
        if same_grid and (ds.crs is None or ds.transform.almost_equals(descriptor.affine)):
            data = ds.read(1, out_shape=shape_hw, resampling=resampling).astype(np.float32)
            if ds.nodata is not None and not math.isnan(ds.nodata):
                data[data == ds.nodata] = np.nan
            return data
        if not descriptor.georeferenced or ds.crs is None:
            raise ValueError(f"{path}: neither on the mask's grid nor georeferenced; cannot align it")
        reproject(
            source=rasterio.band(ds, 1),
            destination=out,
            src_nodata=ds.nodata,
            dst_transform=grid,
            dst_crs=descriptor.crs,
            dst_nodata=np.nan,
            resampling=resampling,
        )
    return out


def _region_means(labels: np.ndarray, values: np.ndarray, count: int) -> list[float | None]:
    ok = (labels > 0) & np.isfinite(values)
    sums = np.bincount(labels[ok], weights=values[ok], minlength=count + 1)[1:]
    counts = np.bincount(labels[ok], minlength=count + 1)[1:]
    return [float(s / n) if n else None for s, n in zip(sums, counts, strict=True)]


def _region_max(labels: np.ndarray, values: np.ndarray, count: int) -> list[float | None]:
    ok = (labels > 0) & np.isfinite(values)
    best = np.full(count + 1, -np.inf)
    np.maximum.at(best, labels[ok], values[ok])
    return [float(v) if np.isfinite(v) else None for v in best[1:]]
