"""Not a regular file (folders, pipes, devices, links) and hostile file names."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.bad_inputs.build import (
    DAMAGED,
    Bad,
    case,
    cut,
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
