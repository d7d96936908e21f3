"""The bad-input corpus: each case breaks a real file from ../shared/data in a test's folder.

`tests/test_bad_input.py` runs every case in CORPUS through the CLI, engine.api and the upload.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import rasterio
from PIL import Image
from rasterio.transform import Affine

from engine.io.raster import open_scene
from engine.io.writers import export_cog

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


# Truncated and corrupted headers, wrong content for the extension


@case
def zero_byte_file(real, d):
    (d / "empty.tif").write_bytes(b"")
    return Bad(d / "empty.tif", r"empty \(0 bytes\)")


@case
def geotiff_header_cut(real, d):
    return Bad(cut(real.iburi, d / "head.tif", 0.00001), NOT_IMAGE + r" \(TIFFReadDirectory")


@case
def geotiff_cut_in_half(real, d):
    return Bad(cut(real.iburi, d / "half.tif", 0.5), NOT_IMAGE + r" \(TIFFReadDirectory")


@case
def geotiff_magic_corrupted(real, d):
    data = bytearray(real.iburi.read_bytes())
    data[2:4] = b"\x00\x00"
    (d / "magic.tif").write_bytes(data)
    return Bad(d / "magic.tif", NOT_IMAGE + r": not a GeoTIFF, PNG or JPEG file")


@case
def geotiff_directory_offset_past_the_end(real, d):
    data = bytearray(real.iburi.read_bytes())
    data[4:8] = struct.pack("<I", len(data) + 4096)
    (d / "ifd.tif").write_bytes(data)
    return Bad(d / "ifd.tif", NOT_IMAGE + r" \(TIFFReadDirectory:Failed to read directory")


@case
def cog_pixels_cut(real, d):
    """A COG keeps its header first, so the cut file opens; the probe read of the last block fails."""
    export_cog(real.iburi, d / "cog.tif")
    return Bad(cut(d / "cog.tif", d / "cut_cog.tif", 0.6), DAMAGED)


@case
def geotiff_zero_bands(real, d):
    one = write_tif(d / "one.tif", real.cas_block()[:1])
    (d / "no_bands.tif").write_bytes(tiff_with_tag(one, 277, 0))  # SamplesPerPixel = 0
    one.unlink()
    return Bad(d / "no_bands.tif", NOT_IMAGE + r".*SamplesPerPixel")


@case
def text_named_tif(real, d):
    shutil.copyfile(real.readme, d / "notes.tif")
    return Bad(d / "notes.tif", r"not a GeoTIFF, PNG or JPEG file \(it starts with '# Real l'\)")


@case
def vrt_disguised_as_tif(real, d):
    """GDAL would open this by content and read the server file it names: refused before GDAL sees it."""
    (d / "scene.tif").write_text(
        '<VRTDataset rasterXSize="1533" rasterYSize="970"><VRTRasterBand dataType="UInt16" band="1">'
        f"<SimpleSource><SourceFilename>{real.iburi}</SourceFilename><SourceBand>1</SourceBand>"
        "</SimpleSource></VRTRasterBand></VRTDataset>"
    )
    return Bad(d / "scene.tif", r"not a GeoTIFF, PNG or JPEG file \(it starts with '<VRTData'\)")


@case
def hdf5_named_tif(real, d):
    shutil.copyfile(real.l4s, d / "patch.tif")
    return Bad(d / "patch.tif", r"is an HDF5 file; give it the extension \.h5")


@case
def wrong_extension(real, d):
    shutil.copyfile(real.bijie()[0], d / "image.bmp")
    return Bad(d / "image.bmp", r"unsupported file type \.bmp")


@case
def no_extension(real, d):
    shutil.copyfile(real.bijie()[0], d / "image")
    return Bad(d / "image", r"unsupported file type \(none\)")


@case
def png_garbage_after_signature(real, d):
    data = real.bijie()[0].read_bytes()
    (d / "garbage.png").write_bytes(data[:8] + bytes(reversed(data[8:600])))
    return Bad(d / "garbage.png", NOT_IMAGE + r" \(libpng")


@case
def png_pixel_data_scrambled(real, d):
    data = bytearray(real.bijie()[0].read_bytes())
    for i in range(data.index(b"IDAT") + 40, len(data) - 20, 7):
        data[i] ^= 0x5A
    (d / "scrambled.png").write_bytes(data)
    return Bad(d / "scrambled.png", DAMAGED)


@case
def png_truncated(real, d):
    return Bad(cut(real.bijie()[0], d / "cut.png", 0.5), DAMAGED)


@case
def jpeg_truncated(real, d):
    buffer = io.BytesIO()
    Image.open(real.bijie()[0]).convert("RGB").save(buffer, "JPEG", quality=90)
    (d / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return Bad(d / "cut.jpg", DAMAGED + r": libjpeg: Premature end of JPEG file$")


# Sizes: 0×N, too small, declared over the pixel limit (decompression bombs)


@case
def png_zero_by_n(real, d):
    (d / "flat.png").write_bytes(png_with_size(real.bijie()[0], 0, 94))
    return Bad(d / "flat.png", NOT_IMAGE + r" \(libpng: Invalid IHDR data\)")


@case
def hdf5_zero_by_n(real, d):
    return Bad(write_h5(d / "flat.h5", img=real.l4s_img()[:0]), r"has no pixels \(128×0\)")


@case
def one_by_one_png(real, d):
    Image.open(real.bijie()[0]).crop((0, 0, 1, 1)).save(d / "dot.png")
    return Bad(d / "dot.png", r"is only 1×1 px; Scarp needs at least 16×16 px")


@case
def geotiff_declared_over_limit(real, d):
    """70 000 × 70 000 px declared in a 1 MB sparse GeoTIFF holding one real block."""
    profile = {"driver": "GTiff", "width": 70_000, "height": 70_000, "count": 3, "dtype": "uint8"}
    tiles = {"tiled": True, "blockxsize": 256, "blockysize": 256, "SPARSE_OK": True}
    with rasterio.open(d / "huge.tif", "w", **profile, **tiles) as ds:
        ds.write(real.cas_block(256), window=((0, 256), (0, 256)))
    return Bad(d / "huge.tif", r"declares 70000×70000 = 4,900,000,000 px, " + TOO_BIG)


@case
def png_decompression_bomb(real, d):
    (d / "bomb.png").write_bytes(png_with_size(real.bijie()[0], 100_000, 100_000))
    return Bad(d / "bomb.png", r"declares 100000×100000 = 10,000,000,000 px, " + TOO_BIG)


@case
def over_scarp_max_pixels(real, d):
    shutil.copyfile(real.iburi, d / "iburi.tif")
    problem = r"1533×970 = 1,487,010 px, over the limit of 1,000,000 px"
    return Bad(d / "iburi.tif", problem, env={"SCARP_MAX_PIXELS": "1000000"})


@case
def hdf5_mask_bomb(real, d):
    """The image is fine; its embedded mask declares 4.9 billion px (chunked, so the file stays small)."""

    def huge(f):
        return f.create_dataset("mask", shape=(70_000, 70_000), dtype="uint8", chunks=(256, 256))

    return Bad(l4s_with_mask(real, d / "bomb.h5", huge), r"'mask' declares 70000×70000 = .* " + TOO_BIG)


# Pixel types and values


@case
def complex_dtype(real, d):
    data = real.cas_block().astype(np.complex64)
    return Bad(write_tif(d / "complex.tif", data), r"has data type complex64, which Scarp does not read")


@case
def int64_dtype(real, d):
    return Bad(write_tif(d / "wide.tif", real.cas_block().astype(np.int64)), r"has data type int64")


@case
def all_nan_and_inf(real, d):
    data = real.cas_block().astype(np.float32)
    data[:, :32] = np.nan
    data[:, 32:] = np.inf
    data[1, 40:] = -np.inf
    return Bad(write_tif(d / "holes.tif", data), r"has no valid pixels: every pixel is nodata, NaN or inf")


@case
def all_nodata_scene(real, d):
    with open_scene(real.iburi) as scene:
        data = scene.read((0, 0, 300, 400))
        profile = {"crs": scene.descriptor.crs, "transform": scene.descriptor.affine, "nodata": 0}
    return Bad(write_tif(d / "blank.tif", np.zeros_like(data), **profile), r"has no valid pixels")


@case
def hdf5_all_nan_and_inf(real, d):
    img = real.l4s_img()
    img[::2] = np.nan
    img[1::2] = np.inf
    return Bad(write_h5(d / "nan.h5", img=img), r"has no valid pixels")


# Georeferencing


@case
def rotated_geotransform(real, d):
    rotated = Affine(10.0, 2.0, 500000.0, 2.0, -10.0, 4700000.0)
    path = write_tif(d / "rot.tif", real.cas_block(), crs="EPSG:32654", transform=rotated)
    return Bad(path, r"has a rotated or sheared geotransform")


@case
def crs_on_mars(real, d):
    path = write_tif(
        d / "mars.tif", real.cas_block(), crs="IAU_2015:49900", transform=Affine(0.01, 0, 10, 0, -0.01, 5)
    )
    return Bad(path, r"its CRS IAU_2015:49900 cannot be converted to longitude/latitude")


@case
def engineering_crs(real, d):
    local = 'LOCAL_CS["site grid",UNIT["metre",1]]'
    path = write_tif(d / "local.tif", real.cas_block(), crs=local, transform=Affine(1, 0, 0, 0, -1, 0))
    return Bad(path, r'its CRS "site grid" cannot be converted to longitude/latitude')


@case
def bounds_off_the_earth(real, d):
    far = Affine(10.0, 0, 5e9, 0, -10.0, 4.7e9)
    path = write_tif(d / "far.tif", real.cas_block(), crs="EPSG:32618", transform=far)
    return Bad(path, r"its bounds do not map to valid longitude/latitude")


# HDF5 (Landslide4Sense): missing keys, wrong layout, data kept in other files


@case
def hdf5_without_img(real, d):
    return Bad(write_h5(d / "nokey.h5", data=real.l4s_img()), r"no 'img' dataset.*; its keys: data")


@case
def hdf5_mask_file_as_scene(real, d):
    shutil.copyfile(real.l4s_mask, d / "mask_1.h5")
    return Bad(d / "mask_1.h5", r"no 'img' dataset \(Landslide4Sense layout\); its keys: mask")


@case
def hdf5_img_wrong_rank(real, d):
    return Bad(write_h5(d / "flat.h5", img=real.l4s_img()[..., 0]), r"'img' must have shape .*\(128, 128\)")


@case
def hdf5_img_is_a_group(real, d):
    with h5py.File(d / "group.h5", "w") as f:
        f.create_group("img")
    return Bad(d / "group.h5", r"'img' must be a dataset, found a group")


@case
def hdf5_truncated(real, d):
    return Bad(cut(real.l4s, d / "cut.h5", 0.5), r"not a readable HDF5 file \(.*truncated file")


@case
def text_named_h5(real, d):
    shutil.copyfile(real.readme, d / "fake.h5")
    return Bad(d / "fake.h5", r"not a readable HDF5 file")


@case
def hdf5_external_link(real, d):
    """`img` is a link to a file on the server (the real patch): an upload must not import it."""
    with h5py.File(d / "link.h5", "w") as f:
        f["img"] = h5py.ExternalLink(str(real.l4s), "/img")
    return Bad(d / "link.h5", r"'img' links to another file")


@case
def hdf5_external_storage(real, d):
    """`img` keeps its bytes in another file on the server (here the Iburi GeoTIFF)."""
    with h5py.File(d / "raw.h5", "w") as f:
        f.create_dataset(
            "img", shape=(64, 64, 3), dtype="uint8", external=[(str(real.iburi), 0, 64 * 64 * 3)]
        )
    return Bad(d / "raw.h5", r"'img' takes its data from other files")


@case
def hdf5_mask_is_a_group(real, d):
    path = l4s_with_mask(real, d / "group.h5", lambda f: f.create_group("mask"))
    return Bad(path, r"'mask' must be a dataset, found a group")


# Masks: given with --mask / mask= on the CLI and engine.api, embedded in a .h5 for the upload


@case
def mask_size_differs_from_image(real, d):
    h5 = l4s_with_mask(real, d / "small_mask.h5", np.zeros((64, 64), np.uint8))
    return Bad(
        real.bijie()[0],
        r"mask is \d+×\d+ px but its image ls_0000\.png is 121×94 px",
        mask=real.bijie("ls_0001")[1],
        upload=(h5.name, h5.read_bytes()),
        upload_problem=r"mask is 64×64 px but its image small_mask\.h5 is 128×128 px",
    )


@case
def mask_values_not_binary(real, d):
    mask = bijie_mask(real)
    mask[0, :10] = 128
    Image.fromarray(mask).save(d / "grey.png")
    h5 = l4s_with_mask(real, d / "sevens.h5", np.full((128, 128), 7, np.uint8))
    return Bad(
        real.bijie()[0],
        r"mask values must be \{0,1\} or \{0,255\}, found \[0, 128, 255\]",
        mask=d / "grey.png",
        upload=(h5.name, h5.read_bytes()),
        upload_problem=r"mask values must be \{0,1\} or \{0,255\}, found \[7\]",
    )


@case
def mask_mixing_1_and_255(real, d):
    mask = bijie_mask(real)
    mask[-1, :5] = 1
    Image.fromarray(mask).save(d / "mixed.png")
    both = np.zeros((128, 128), np.uint8)
    both[0, 0], both[-1, -1] = 1, 255
    h5 = l4s_with_mask(real, d / "mixed.h5", both)
    return Bad(
        real.bijie()[0],
        r"mask values must be \{0,1\} or \{0,255\}, found \[0, 1, 255\]",
        mask=d / "mixed.png",
        upload=(h5.name, h5.read_bytes()),
    )


@case
def mask_with_three_bands(real, d):
    h5 = l4s_with_mask(real, d / "rgb_mask.h5", np.zeros((128, 128, 3), np.uint8))
    return Bad(
        real.bijie()[0],
        r"a mask has one band, this file has 3",
        mask=real.bijie()[0],
        upload=(h5.name, h5.read_bytes()),
        upload_problem=r"'mask' must have shape \(height, width\), found \(128, 128, 3\)",
    )


# A model's band count: the image is fine, the model cannot read it


@case
def wrong_band_count_for_model(real, d):
    return Bad(
        real.bijie()[0],
        r"ls_0000\.png: has 3 bands but model kda_student_l4s expects 14",
        model="kda_student_l4s",
    )


# Not a regular file: folders, pipes, devices and links (the upload gets what a browser could send)


@case
def folder_instead_of_file(real, d):
    (d / "scene.tif").mkdir()
    return Bad(
        d / "scene.tif",
        r"scene\.tif: (is a folder, not an image file|holds no images)",
        upload=("scene.tif", b""),
        upload_problem=r"scene\.tif: file is empty",
    )


@case
def named_pipe(real, d):
    """Opening a FIFO blocks until someone writes to it: it must be refused before it is opened."""
    os.mkfifo(d / "pipe.tif")
    return Bad(d / "pipe.tif", r"is not a regular file", upload=("pipe.tif", b""), upload_problem=r"empty")


@case
def link_to_device(real, d):
    (d / "zero.tif").symlink_to("/dev/zero")
    return Bad(
        d / "zero.tif",
        r"is not a regular file \(a device, pipe or socket\)",
        upload=("zero.tif", bytes(4096)),
        upload_problem=r"zero\.tif: not a readable image",
    )


@case
def link_outside_to_a_text_file(real, d):
    (d / "scene.tif").symlink_to(real.readme)
    return Bad(d / "scene.tif", r"scene\.tif: not a readable image: not a GeoTIFF, PNG or JPEG file")


@case
def dangling_link(real, d):
    (d / "gone.tif").symlink_to(d / "deleted" / "gone.tif")
    return Bad(
        d / "gone.tif",
        r"is a broken link \(it points to .*deleted/gone\.tif\)",
        upload=("gone.tif", b""),
        upload_problem=r"empty",
    )


@case
def link_loop(real, d):
    (d / "loop.tif").symlink_to(d / "loop.tif")
    return Bad(
        d / "loop.tif",
        r"cannot be opened \(Too many levels of symbolic links\)",
        upload=("loop.tif", b""),
        upload_problem=r"empty",
    )


# Hostile names (the bytes are a cut PNG, so every path refuses; the names must not break the message)


@case
def non_utf8_name(real, d):
    raw = os.fsencode(d) + b"/\xff\xfe landslide.png"
    with open(raw, "wb") as out:
        out.write(real.bijie()[0].read_bytes()[:2000])
    path = Path(os.fsdecode(raw))
    return Bad(
        path,
        r"\\udcff\\udcfe landslide\.png: the file name is not valid UTF-8",
        upload=(path.name, path.read_bytes()),
        upload_problem=r"\\udcff\\udcfe landslide\.png: " + DAMAGED,
    )


@case
def nul_in_name(real, d):
    data = real.bijie()[0].read_bytes()[:2000]
    return Bad(
        Path(f"{d}/ls\x00.png"),
        r"ls\\x00\.png: the file name contains a NUL character",
        upload=("ls\x00.png", data),
        upload_problem=r"ls\\x00\.png: " + DAMAGED,
    )


@case
def name_too_long(real, d):
    name = "landslide_" * 40 + ".png"
    return Bad(
        d / name,
        r"landslide_\.png: (cannot be opened \()?File name too long",
        upload=(name, real.bijie()[0].read_bytes()[:2000]),
        upload_problem=DAMAGED,
    )


@case
def path_traversal_name(real, d):
    """A naive join of the upload name would write to tmp_path/escape.png, which the checks watch."""
    (d / "sub").mkdir()
    cut(real.bijie()[0], d / "cut.png", 0.3)
    return Bad(
        d / "sub" / ".." / "cut.png",
        DAMAGED,
        upload=("../../../escape.png", (d / "cut.png").read_bytes()),
        upload_problem=r"^\.\./\.\./\.\./escape\.png: " + DAMAGED,
    )


@case
def name_only_dots(real, d):
    shutil.copyfile(real.bijie()[0], d / "...")
    return Bad(
        d / "...",
        r"\.\.\.: unsupported file type \(none\)",
        upload=("..", d.joinpath("...").read_bytes()),
        upload_problem=r"^\.\.: unsupported file type \(none\)",
    )
