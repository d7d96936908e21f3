"""Landslide4Sense HDF5 files with missing keys, wrong layouts or data kept in other files; masks that
do not fit their image; and a model that cannot read the image's bands."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
from PIL import Image

from tests.bad_inputs.build import (
    Bad,
    bijie_mask,
    case,
    cut,
    l4s_with_mask,
    write_h5,
)

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
