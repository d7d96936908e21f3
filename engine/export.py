"""Export of a landslide mapping: the mask as a COG, the inventory as GeoPackage, GeoJSON or CSV, a map.

An `Inventory` is built once (one polygon and one attribute row per landslide) and every format is
written from it, so the files of one export agree. Every file appears atomically (`atomic_write`).
Coordinates: the GeoPackage keeps the scene's CRS (an EPSG:4326 scene stays EPSG:4326), the GeoJSON is
EPSG:4326 (RFC 7946). A non-georeferenced scene is written in pixel coordinates (x = column, y = row
from the top-left corner) with no CRS and null areas and perimeters, and the layer description says so.
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyogrio.raw
import shapely
from rasterio.crs import CRS
from rasterio.warp import transform_geom
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry

from engine.errors import InputError, ScarpError
from engine.io.raster import describe
from engine.io.scene import SceneDescriptor
from engine.io.vector import Landslide, landslide_polygons
from engine.io.writers import export_cog
from engine.store import MaskVersion, Prediction, Workspace
from engine.store.files import atomic_write

FORMATS = {
    ".gpkg": "GeoPackage inventory",
    ".geojson": "GeoJSON inventory (EPSG:4326)",
    ".csv": "CSV summary",
    ".png": "map figure",
    ".tif": "mask (Cloud-Optimized GeoTIFF)",
}
LAYER = "landslides"
# Attribute name → column type; the order is the files' column order.
FIELDS = {
    "id": "int64",
    "area_m2": "float64",
    "perimeter_m": "float64",
    "pixels": "int64",
    "mean_probability": "float64",
    "max_probability": "float64",
    "mean_slope": "float64",
    "model_version": "object",
    "mask_version": "int64",
    "reviewer": "object",
    "status": "object",
    "created": "object",
    "exported_at": "object",
}
_STATUS_OF_SOURCE = {"prediction": "predicted", "correction": "corrected", "import": "imported"}
OUTLINE = "#ffd400"


class Review(NamedTuple):
    status: str | None
    reviewer: str | None


def landslide_review(mask: MaskVersion | None, landslide: Landslide) -> Review:
    """Status and reviewer of one landslide: the one place to swap in the review-status table.

    Until then every landslide shares its mask version's state, and only a person's version has a
    reviewer (a predicted mask's author is the job that wrote it).
    """
    if mask is None:
        return Review(None, None)
    reviewer = None if mask.source == "prediction" else mask.author or None
    return Review(_STATUS_OF_SOURCE.get(mask.source, mask.source), reviewer)


@dataclass(frozen=True)
class ExportSource:
    """What an export reads: a mask and, when known, its probabilities, slope, image and provenance."""

    mask_path: Path
    probability_path: Path | None = None
    slope_path: Path | None = None
    image_path: Path | None = None
    mask: MaskVersion | None = None
    model_version: str | None = None
    title: str = ""


@dataclass(frozen=True)
class Inventory:
    """One polygon (mask grid CRS, or pixel x/y) and one attribute row per landslide."""

    source: ExportSource
    descriptor: SceneDescriptor
    polygons: tuple[BaseGeometry, ...]
    rows: tuple[dict[str, Any], ...]

    @property
    def coordinates(self) -> str:
        """The CRS of `polygons`, or "pixel"."""
        return self.descriptor.crs if self.descriptor.georeferenced else "pixel"

    def totals(self) -> dict[str, Any]:
        areas = [row["area_m2"] for row in self.rows if row["area_m2"] is not None]
        return {
            "landslides": len(self.rows),
            "pixels": sum(row["pixels"] for row in self.rows),
            "area_m2": round(sum(areas), 1) if self.descriptor.georeferenced else None,
            "coordinates": self.coordinates,
        }

    def description(self) -> str:
        where = (
            f"coordinates in {self.coordinates}"
            if self.descriptor.georeferenced
            else "pixel coordinates (x = column, y = row from the top-left corner), no CRS; "
            "area_m2 and perimeter_m are null"
        )
        return f"Scarp landslide inventory of {self.source.title}: {len(self.rows)} landslides; {where}"


def scene_source(workspace: Workspace, scene_id: int, mask_version_id: int | None = None) -> ExportSource:
    """A workspace scene's mask version (the latest unless given), its prediction and linked slope."""
    scene = workspace.get_scene(scene_id)
    if mask_version_id is None:
        mask = workspace.latest_mask_version(scene_id)
        if mask is None:
            raise InputError(f"scene {scene_id}", "has no mask yet; run a prediction or import a mask")
    else:
        mask = workspace.get_mask_version(mask_version_id)
        if mask.scene_id != scene_id:
            raise InputError(
                f"mask version {mask_version_id}", f"belongs to scene {mask.scene_id}, not {scene_id}"
            )
    prediction = _prediction_of(workspace, mask)
    slope = workspace.scene_links(scene_id).get("slope")
    return ExportSource(
        mask_path=mask.raster_path,
        probability_path=prediction.raster_path if prediction else None,
        slope_path=slope.path if slope else None,
        image_path=scene.path,
        mask=mask,
        model_version=prediction.model_version if prediction else None,
        title=Path(scene.name).stem,
    )


def _prediction_of(workspace: Workspace, mask: MaskVersion) -> Prediction | None:
    """The prediction a mask version descends from: its own, else its nearest ancestor's."""
    while mask.prediction_id is None and mask.parent_id is not None:
        mask = workspace.get_mask_version(mask.parent_id)
    return None if mask.prediction_id is None else workspace.get_prediction(mask.prediction_id)


def build_inventory(source: ExportSource) -> Inventory:
    """Polygons and attribute rows; one `exported_at` for the whole export."""
    descriptor = describe(source.mask_path)
    try:
        slides = landslide_polygons(
            source.mask_path, probability_path=source.probability_path, slope_path=source.slope_path
        )
    except ValueError as exc:  # a probability or slope raster that cannot be put on the mask's grid
        raise ScarpError(str(exc)) from exc
    crs = CRS.from_string(descriptor.crs) if descriptor.georeferenced else None
    mask = source.mask
    shared = {
        "model_version": source.model_version,
        "mask_version": mask.id if mask else None,
        "created": mask.created.isoformat(timespec="seconds") if mask else None,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    rows = []
    for slide in slides:
        status, reviewer = landslide_review(mask, slide)
        perimeter = _perimeter_m(slide.polygon, crs)
        perimeter = None if perimeter is None else round(perimeter, 1)
        row = {
            **slide.properties(),
            **shared,
            "perimeter_m": perimeter,
            "reviewer": reviewer,
            "status": status,
        }
        rows.append({name: row[name] for name in FIELDS})
    return Inventory(source, descriptor, tuple(s.polygon for s in slides), tuple(rows))


def _perimeter_m(polygon: BaseGeometry, crs: CRS | None) -> float | None:
    """Projected CRS: planar length in metres; geographic: length in the local UTM zone (as areas are)."""
    if crs is None:
        return None
    if crs.is_projected:
        return float(polygon.length * crs.linear_units_factor[1])
    lon, lat = transform_geom(crs, "EPSG:4326", mapping(polygon.centroid))["coordinates"]
    zone = min(60, max(1, int((lon + 180) // 6) + 1))
    utm = f"EPSG:{32600 + zone if lat >= 0 else 32700 + zone}"
    return float(shape(transform_geom(crs, utm, mapping(polygon))).length)


def export(source: ExportSource, path: str | Path) -> tuple[Path, Inventory | None]:
    """Write `path` in the format its extension names; returns it with the inventory (None for a mask)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise InputError(path, f"unknown export format; use one of {', '.join(FORMATS)}")
    if suffix == ".tif":
        return export_cog(source.mask_path, path), None
    inventory = build_inventory(source)
    writers = {".gpkg": write_gpkg, ".geojson": write_geojson, ".csv": write_csv, ".png": write_figure}
    return writers[suffix](inventory, path), inventory


def write_gpkg(inventory: Inventory, path: str | Path) -> Path:
    """The inventory in the scene's own CRS (none for pixel coordinates)."""
    wkb = [shapely.to_wkb(p) for p in inventory.polygons]
    metadata = {"coordinates": inventory.coordinates, "title": inventory.source.title}
    return _write_vector(inventory, path, "GPKG", wkb, inventory.descriptor.crs, layer_metadata=metadata)


def write_geojson(inventory: Inventory, path: str | Path) -> Path:
    """RFC 7946 GeoJSON in EPSG:4326; a non-georeferenced scene's pixel coordinates are kept as they are."""
    d = inventory.descriptor
    geometries = [mapping(p) for p in inventory.polygons]
    if d.georeferenced and geometries:
        geometries = transform_geom(d.crs, "EPSG:4326", geometries)
    wkb = [shapely.to_wkb(shape(g)) for g in geometries]
    crs, options = ("EPSG:4326", {"RFC7946": "YES"}) if d.georeferenced else (None, {})
    return _write_vector(inventory, path, "GeoJSON", wkb, crs, layer_options=options)


def _write_vector(
    inventory: Inventory,
    path: str | Path,
    driver: str,
    wkb: list[bytes],
    crs: str | None,
    *,
    layer_options: dict[str, str] | None = None,
    layer_metadata: dict[str, str] | None = None,
) -> Path:
    columns, nulls = [], []
    for name, dtype in FIELDS.items():
        values = [row[name] for row in inventory.rows]
        missing = np.array([v is None for v in values], dtype=bool)
        fill = {"int64": 0, "float64": np.nan}.get(dtype)
        columns.append(np.array([fill if v is None else v for v in values], dtype=dtype))
        nulls.append(missing)
    layer_options = {"DESCRIPTION": inventory.description(), **(layer_options or {})}
    with atomic_write(path) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="'crs' was not provided")
        pyogrio.raw.write(
            tmp,
            np.array(wkb, dtype=object),
            columns,
            list(FIELDS),
            field_mask=nulls,
            layer=LAYER,
            driver=driver,
            geometry_type="Polygon",
            crs=crs,
            layer_options=layer_options,
            layer_metadata=layer_metadata,
        )
    return Path(path)


def write_csv(inventory: Inventory, path: str | Path) -> Path:
    """One row per landslide, the inventory's attributes without geometry; empty cells are nulls."""
    with atomic_write(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=list(FIELDS))
        writer.writeheader()
        writer.writerows(inventory.rows)
    return Path(path)


def write_figure(inventory: Inventory, path: str | Path, max_side: int = 1600) -> Path:
    """A report figure: the image in true colour (a decimated read), outlines, legend, scale bar, north."""
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    d = inventory.descriptor
    x0, y0, x1, y1 = _extent(d)
    aspect = _aspect(d)
    height_in = float(np.clip(9.0 * abs(y1 - y0) * aspect / abs(x1 - x0), 3.0, 12.0))
    fig = Figure(figsize=(9.0, height_in + 0.8), dpi=150)
    ax = fig.add_subplot()
    ax.set_facecolor("#e8e8e8")
    image = _background(inventory, max_side)
    if image is not None:
        ax.imshow(image[0], extent=image[1], origin="upper")
    rings = [np.asarray(ring.coords) for p in inventory.polygons for ring in (p.exterior, *p.interiors)]
    ax.add_collection(LineCollection(rings, colors=OUTLINE, linewidths=1.0))
    ax.set_xlim(x0, x1)
    ax.set_ylim(y1, y0)
    ax.set_aspect(aspect)
    ax.set_xticks([])
    ax.set_yticks([])

    totals = inventory.totals()
    count = totals["landslides"]
    label = f"Landslide outline ({count})"
    ax.legend(handles=[Line2D([], [], color=OUTLINE, lw=2, label=label)], loc="upper left", framealpha=0.9)
    per_unit, unit = (d.pixel_size_m[0] / abs(d.affine.a), "m") if d.georeferenced else (1.0, "px")
    length = _nice_length(abs(x1 - x0) * per_unit / 5)
    bar = AnchoredSizeBar(
        ax.transData, length / per_unit, _length_label(length, unit), loc="lower left",
        size_vertical=abs(y1 - y0) / 150, frameon=True, pad=0.4, borderpad=0.8,
    )  # fmt: skip
    ax.add_artist(bar)
    if d.georeferenced:  # open_scene only accepts north-up transforms
        box = {"boxstyle": "round", "fc": "white", "alpha": 0.9}
        ax.text(0.97, 0.97, "▲\nN", transform=ax.transAxes, ha="center", va="top", fontsize=11,
                fontweight="bold", linespacing=0.9, bbox=box)  # fmt: skip

    summary = f"{count} landslide{'' if count == 1 else 's'}"
    if totals["area_m2"] is not None:
        summary += f", {_area_label(totals['area_m2'])}"
    ax.set_title(f"{inventory.source.title}: {summary}", fontsize=12)
    ax.annotate(_footer(inventory), xy=(0, 0), xycoords="axes fraction", xytext=(0, -4),
                textcoords="offset points", va="top", fontsize=7, color="#444")  # fmt: skip
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight", pad_inches=0.1)
    return Path(path)


def _extent(d: SceneDescriptor) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the grid in its own coordinates (pixel x/y when not georeferenced)."""
    a = d.affine
    return a.c, a.f, a.c + a.a * d.width, a.f + a.e * d.height


def _aspect(d: SceneDescriptor) -> float:
    """y/x display ratio: degrees of longitude shrink with latitude, so lon/lat grids are stretched back."""
    if not d.georeferenced or CRS.from_string(d.crs).is_projected:
        return 1.0
    lat = (d.lonlat_bounds[1] + d.lonlat_bounds[3]) / 2
    return 1.0 / max(np.cos(np.radians(lat)), 0.01)


def _background(inventory: Inventory, max_side: int) -> tuple[np.ndarray, tuple] | None:
    """The image's true colour, read decimated, with its imshow extent; None without a matching image."""
    from engine.io.bands import thumbnail
    from engine.io.raster import open_scene

    path = inventory.source.image_path
    if path is None:
        return None
    with open_scene(path) as scene:
        d = scene.descriptor
        if d.crs != inventory.descriptor.crs:
            return None
        rgb = thumbnail(scene, max_side=max_side)
    left, top, right, bottom = _extent(d)
    return rgb, (left, right, bottom, top)


def _nice_length(target: float) -> float:
    """The largest 1, 2 or 5 × 10^k not above `target` (at least 1)."""
    if target < 1:
        return 1.0
    power = 10 ** np.floor(np.log10(target))
    return float(max(step * power for step in (1, 2, 5) if step * power <= target))


def _length_label(length: float, unit: str) -> str:
    if unit == "m" and length >= 1000:
        return f"{length / 1000:g} km"
    return f"{length:g} {unit}"


def _area_label(area_m2: float) -> str:
    return f"{area_m2 / 1e6:.3f} km²" if area_m2 >= 1e5 else f"{area_m2:,.0f} m²"


def _footer(inventory: Inventory) -> str:
    source = inventory.source
    parts = [inventory.coordinates if inventory.descriptor.georeferenced else "pixel coordinates, no CRS"]
    if source.mask is not None:
        parts.append(f"mask version {source.mask.id} ({source.mask.source})")
    if source.model_version:
        parts.append(f"model {source.model_version}")
    parts.append(f"exported {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    return " · ".join(parts)
