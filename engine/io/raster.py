"""One way in for every image format Scarp reads: GeoTIFF/COG, plain TIFF, PNG/JPG and Landslide4Sense HDF5.

`open_scene` checks the header cheaply (size, dtype, geotransform, CRS, a probe read of the first and
last block) and returns a `Scene` that reads windows on demand, so a large scene is never loaded
whole. Every problem with a file surfaces as `InputError` naming the file and the problem.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path

import rasterio
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.transform import Affine
from rasterio.warp import transform_bounds

from engine.errors import InputError
from engine.io.backends import Backend, HDF5Backend, RasterioBackend
from engine.io.scene import Scene, SceneDescriptor, first_line, gdal_reason

SUPPORTED_DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")
RASTER_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
HDF5_SUFFIXES = (".h5", ".hdf5")
SCENE_SUFFIXES = RASTER_SUFFIXES + HDF5_SUFFIXES
MIN_SIDE = 16
DEFAULT_MAX_PIXELS = 4_294_967_296  # 65 536², far beyond any real scene; guards against decompression bombs
L4S_BAND_NAMES = (*(f"B{i}" for i in range(1, 13)), "slope", "DEM")
_MAGIC = (
    (b"II*\x00", "GTiff"),
    (b"MM\x00*", "GTiff"),
    (b"II+\x00", "GTiff"),  # BigTIFF
    (b"MM\x00+", "GTiff"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
)


def max_pixels_from_env() -> int:
    """The pixel limit, configurable with SCARP_MAX_PIXELS."""
    value = os.environ.get("SCARP_MAX_PIXELS")
    return int(value) if value else DEFAULT_MAX_PIXELS


def open_scene(path: str | Path, *, max_pixels: int | None = None) -> Scene:
    """Open any supported scene after cheap checks; raises InputError naming the file and the problem."""
    path = Path(path)
    check_file(path)
    if path.suffix.lower() in HDF5_SUFFIXES:
        backend, descriptor = _open_hdf5(path)
    else:
        backend, descriptor = _open_rasterio(path)
    scene = Scene(backend, descriptor)
    try:
        _check_descriptor(descriptor, max_pixels if max_pixels is not None else max_pixels_from_env())
        _probe(scene)
    except BaseException:
        scene.close()
        raise
    return scene


def describe(path: str | Path) -> SceneDescriptor:
    with open_scene(path) as scene:
        return scene.descriptor


def check_file(path: Path) -> None:
    """Refuse, with the reason, anything that is not a readable regular file with a supported extension."""
    text = str(path)
    if "\x00" in text:
        raise InputError(path, "the file name contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(path, "the file name is not valid UTF-8; rename the file") from None
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise InputError(path, f"is a broken link (it points to {os.readlink(path)})") from None
        raise InputError(path, "file not found") from None
    except OSError as exc:  # a link loop, a name too long for the file system, no permission...
        raise InputError(path, f"cannot be opened ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(path, "is a folder, not an image file")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(path, "is not a regular file (a device, pipe or socket); give an image file")
    if info.st_size == 0:
        raise InputError(path, "file is empty (0 bytes)")
    if path.suffix.lower() not in SCENE_SUFFIXES:
        raise InputError(
            path, f"unsupported file type {path.suffix or '(none)'}; use {', '.join(SCENE_SUFFIXES)}"
        )


def _driver(path: Path) -> str:
    """The GDAL driver for the file's content, from its first bytes.

    Only GeoTIFF, PNG and JPEG are opened: GDAL would otherwise pick any of its drivers by content, and
    some (VRT, for one) read other files on the server that the file names.
    """
    try:
        with open(path, "rb") as file:
            head = file.read(16)
    except OSError as exc:
        raise InputError(path, f"cannot be opened ({exc.strerror or exc})") from exc
    for magic, driver in _MAGIC:
        if head.startswith(magic):
            return driver
    if head.startswith(b"\x89HDF"):
        raise InputError(path, "is an HDF5 file; give it the extension .h5")
    start = head[:8].decode("ascii", "backslashreplace")
    raise InputError(
        path, f"not a readable image: not a GeoTIFF, PNG or JPEG file (it starts with {start!r})"
    )


def _open_rasterio(path: Path) -> tuple[Backend, SceneDescriptor]:
    try:
        ds = rasterio.open(path, driver=_driver(path))
    except RasterioError as exc:
        raise InputError(path, f"not a readable image ({gdal_reason(exc, path)})") from exc
    try:
        if ds.count < 1:
            raise InputError(path, "has no bands")
        dtypes = set(ds.dtypes)
        if len(dtypes) > 1:
            raise InputError(
                path, f"mixes band data types {sorted(dtypes)}; Scarp needs one type for all bands"
            )
        names = _band_names(ds.count, ds.descriptions, [ci.name for ci in ds.colorinterp])
        crs = ds.crs if ds.crs else None
        transform = ds.transform if crs is not None else Affine.identity()
        descriptor = _descriptor(
            path, ds.driver, ds.width, ds.height, names, ds.dtypes[0], crs, transform, ds.nodata
        )
    except BaseException:
        ds.close()
        raise
    return RasterioBackend(ds), descriptor


def _open_hdf5(path: Path) -> tuple[Backend, SceneDescriptor]:
    import h5py

    try:
        file = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(path, f"not a readable HDF5 file ({first_line(exc)})") from exc
    try:
        ds = hdf5_dataset(file, "img", path, " (Landslide4Sense layout)")
        if len(ds.shape) != 3:
            raise InputError(path, f"'img' must have shape (height, width, bands), found {ds.shape}")
        height, width, count = (int(v) for v in ds.shape)
        names = (
            L4S_BAND_NAMES if count == len(L4S_BAND_NAMES) else tuple(f"band {i + 1}" for i in range(count))
        )
        descriptor = _descriptor(
            path, "HDF5", width, height, names, ds.dtype.name, None, Affine.identity(), None
        )
    except BaseException:
        file.close()
        raise
    return HDF5Backend(file, ds), descriptor


def hdf5_dataset(file, key: str, path: Path, layout: str = ""):
    """Dataset `key` of an open HDF5 file; refuses groups and data kept outside the file.

    HDF5 can link a dataset to another file, or store its bytes in any file on the server (external
    storage, virtual datasets): an uploaded .h5 would then import pixels it does not hold.
    """
    import h5py

    link = file.get(key, getlink=True)
    if link is None:
        keys = ", ".join(sorted(file.keys())) or "none"
        raise InputError(path, f"HDF5 file has no {key!r} dataset{layout}; its keys: {keys}")
    if isinstance(link, h5py.ExternalLink):
        raise InputError(
            path, f"{key!r} links to another file ({link.filename}); Scarp only reads data held in the file"
        )
    try:
        ds = file[key]
    except (KeyError, OSError) as exc:
        raise InputError(path, f"{key!r} is a broken link inside the file ({first_line(exc)})") from exc
    if not isinstance(ds, h5py.Dataset):
        raise InputError(path, f"{key!r} must be a dataset, found a group")
    if ds.file.filename != file.filename or ds.is_virtual or ds.external:
        raise InputError(
            path, f"{key!r} takes its data from other files; Scarp only reads data held in the file"
        )
    return ds


def _band_names(
    count: int, descriptions: Sequence[str | None], colorinterp: Sequence[str]
) -> tuple[str, ...]:
    if all(descriptions):
        return tuple(str(d) for d in descriptions)
    if count >= 3 and list(colorinterp[:3]) == ["red", "green", "blue"]:
        return ("red", "green", "blue", *(f"band {i + 1}" for i in range(3, count)))
    if count == 1:
        return ("gray",)
    return tuple(f"band {i + 1}" for i in range(count))


def _descriptor(
    path, fmt, width, height, names, dtype, crs: CRS | None, transform, nodata
) -> SceneDescriptor:
    if not (transform.b == 0 and transform.d == 0):
        raise InputError(path, "has a rotated or sheared geotransform; warp it to a north-up grid first")
    left, top = transform @ (0, 0)
    right, bottom = transform @ (width, height)
    bounds = (min(left, right), min(top, bottom), max(left, right), max(top, bottom))
    lonlat = None
    pixel_size = None
    if crs is not None:
        try:
            with rasterio.Env():  # GDAL's errors go to logging, not straight to stderr (PROJ's are long)
                lonlat = tuple(float(v) for v in transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21))
        except Exception as exc:  # GDAL raises RasterioError, CRSError or a bare CPLE_* error here
            raise InputError(
                path,
                f"its CRS {_crs_name(crs)} cannot be converted to longitude/latitude; Scarp needs a CRS "
                "on the Earth, such as UTM or EPSG:4326",
            ) from exc
        if not all(math.isfinite(v) for v in lonlat):
            raise InputError(path, "its bounds do not map to valid longitude/latitude; is the CRS right?")
        pixel_size = _pixel_size_m(crs, transform, lonlat)
    return SceneDescriptor(
        path=str(path),
        format=fmt,
        width=int(width),
        height=int(height),
        count=len(names),
        band_names=tuple(names),
        dtype=str(dtype),
        crs=crs.to_string() if crs is not None else None,
        transform=tuple(float(v) for v in transform[:6]),
        bounds=tuple(float(v) for v in bounds),
        lonlat_bounds=lonlat,
        nodata=None if nodata is None else float(nodata),
        pixel_size_m=pixel_size,
    )


def _crs_name(crs: CRS) -> str:
    """An authority code when the CRS has one, else the name its WKT gives it (never the whole WKT)."""
    text = crs.to_string()
    if len(text) <= 40 and "[" not in text:
        return text
    match = re.match(r'\s*\w+\["([^"]{1,80})"', crs.wkt)
    return f'"{match.group(1)}"' if match else "(unnamed)"


def _pixel_size_m(
    crs: CRS, transform: Affine, lonlat: tuple[float, float, float, float]
) -> tuple[float, float]:
    if crs.is_geographic:
        lat = math.radians((lonlat[1] + lonlat[3]) / 2)
        # WGS84 metres per degree at this latitude (series expansion of the meridian and parallel arcs)
        per_deg_lat = 111132.92 - 559.82 * math.cos(2 * lat) + 1.175 * math.cos(4 * lat)
        per_deg_lon = 111412.84 * math.cos(lat) - 93.5 * math.cos(3 * lat)
        return abs(transform.a) * per_deg_lon, abs(transform.e) * per_deg_lat
    _, factor = crs.linear_units_factor
    return abs(transform.a) * factor, abs(transform.e) * factor


def _check_descriptor(d: SceneDescriptor, max_pixels: int) -> None:
    if d.width < 1 or d.height < 1:
        raise InputError(d.path, f"has no pixels ({d.width}×{d.height})")
    if d.width < MIN_SIDE or d.height < MIN_SIDE:
        raise InputError(
            d.path, f"is only {d.width}×{d.height} px; Scarp needs at least {MIN_SIDE}×{MIN_SIDE} px"
        )
    if d.pixels > max_pixels:
        raise InputError(
            d.path,
            f"declares {d.width}×{d.height} = {d.pixels:,} px, over the limit of {max_pixels:,} px "
            "(raise SCARP_MAX_PIXELS to allow it)",
        )
    if d.dtype not in SUPPORTED_DTYPES:
        raise InputError(
            d.path, f"has data type {d.dtype}, which Scarp does not read; use {', '.join(SUPPORTED_DTYPES)}"
        )


def _probe(scene: Scene) -> None:
    """Read the first and last few pixels so a truncated file fails now, not halfway through a job."""
    d = scene.descriptor
    side = min(16, d.height, d.width)
    scene.read((0, 0, side, side))
    scene.read((d.height - side, d.width - side, side, side))
