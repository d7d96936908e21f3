"""The bad-input corpus's parts: the real files each case starts from, helpers that break them, and the
case registry (`case`, CORPUS) with the messages several cases share.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import rasterio
from PIL import Image

from engine.io.raster import open_scene

# --- the real files the corpus is made from ------------------------------------------------------------


@dataclass(frozen=True)
class Real:
    data: Path

    @property
    def iburi(self) -> Path:  # 3-band uint16 GeoTIFF, EPSG:4326, nodata 0
        return self.data / "iburi_s2" / "post_event_S2_RGB_B4B3B2.tif"

    @property
    def cas(self) -> Path:  # RGB uint8 TIFF, no CRS
        return sorted((self.data / "cas_unlabeled" / "satellite").glob("*.tif*"))[0]

    def bijie(self, stem: str = "ls_0000") -> tuple[Path, Path]:  # RGB PNG and its {0,255} mask
        return self.data / "bijie" / "images" / f"{stem}.png", self.data / "bijie" / "masks" / f"{stem}.png"

    @property
    def l4s(self) -> Path:  # HDF5, `img` (128, 128, 14) float64
        return self.data / "landslide4sense" / "train" / "img" / "image_1.h5"

    @property
    def l4s_mask(self) -> Path:  # HDF5 with only `mask`
        return self.data / "landslide4sense" / "train" / "mask" / "mask_1.h5"

    @property
    def readme(self) -> Path:  # a text file outside any workspace
        return self.data / "README.md"

    def l4s_img(self) -> np.ndarray:
        with h5py.File(self.l4s) as f:
            return f["img"][()]

    def cas_block(self, side: int = 64) -> np.ndarray:
        with open_scene(self.cas) as scene:
            return scene.read((0, 0, side, side))


# --- building bad files ---------------------------------------------------------------------------------


def write_tif(path: Path, data: np.ndarray, **profile) -> Path:
    count, height, width = data.shape
    base = {"driver": "GTiff", "width": width, "height": height, "count": count, "dtype": data.dtype.name}
    with rasterio.open(path, "w", **{**base, **profile}) as ds:
        ds.write(data)
    return path


def write_h5(path: Path, **datasets) -> Path:
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f[key] = value
    return path


def cut(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def png_with_size(src: Path, width: int, height: int) -> bytes:
    """The PNG with its IHDR declaring another size (CRC fixed, so only the size is wrong)."""
    data = bytearray(src.read_bytes())
    at = data.index(b"IHDR")
    data[at + 4 : at + 12] = struct.pack(">II", width, height)
    data[at + 17 : at + 21] = struct.pack(">I", zlib.crc32(bytes(data[at : at + 17])))
    return bytes(data)


def tiff_with_tag(src: Path, tag: int, value: int) -> bytes:
    """A little-endian classic TIFF with one SHORT tag of its first IFD overwritten."""
    data = bytearray(src.read_bytes())
    assert data[:4] == b"II*\x00"
    ifd = struct.unpack("<I", data[4:8])[0]
    for i in range(struct.unpack("<H", data[ifd : ifd + 2])[0]):
        entry = ifd + 2 + 12 * i
        if struct.unpack("<H", data[entry : entry + 2])[0] == tag:
            data[entry + 8 : entry + 10] = struct.pack("<H", value)
            return bytes(data)
    raise AssertionError(f"tag {tag} not in {src}")


def l4s_with_mask(real: Real, path: Path, mask: np.ndarray | Callable[[h5py.File], object]) -> Path:
    """A Landslide4Sense patch (the real `img`) with the embedded `mask` given, or that `mask(file)` makes."""
    with h5py.File(path, "w") as f:
        f["img"] = real.l4s_img()
        if callable(mask):
            mask(f)
        else:
            f["mask"] = mask
    return path


def bijie_mask(real: Real) -> np.ndarray:
    return np.asarray(Image.open(real.bijie()[1])).copy()


# --- the corpus ------------------------------------------------------------------------------------------


@dataclass
class Bad:
    path: Path  # what the CLI and engine.api are given
    problem: str  # regex the message must match
    mask: Path | None = None  # given as --mask / mask=
    upload: tuple[str, bytes] | None = None  # name and bytes a browser sends; default: path's own
    upload_problem: str | None = None  # when the upload's carrier fails in other words
    model: str | None = None  # predict the (valid) image with this model instead of importing it
    env: dict[str, str] = field(default_factory=dict)


Builder = Callable[[Real, Path], Bad]
CORPUS: dict[str, Builder] = {}


def case(build: Builder) -> Builder:
    CORPUS[build.__name__] = build
    return build


NOT_IMAGE = r"not a readable image"
DAMAGED = r"cannot read pixels \(file damaged or truncated\?\)"
TOO_BIG = r"over the limit of [\d,]+ px \(raise SCARP_MAX_PIXELS"
