"""Broken rasters: truncated and corrupted headers, wrong content for the extension, impossible sizes,
pixel types and values, and georeferencing."""

from __future__ import annotations

import io
import shutil
import struct

import numpy as np
import rasterio
from PIL import Image
from rasterio.transform import Affine

from engine.io.raster import open_scene
from engine.io.writers import export_cog
from tests.bad_inputs.build import (
    DAMAGED,
    NOT_IMAGE,
    TOO_BIG,
    Bad,
    case,
    cut,
    l4s_with_mask,
    png_with_size,
    tiff_with_tag,
    write_h5,
    write_tif,
)

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
