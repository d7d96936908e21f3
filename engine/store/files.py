"""Crash-safe file writing and path hygiene for workspace files.

A file only ever appears under its final name complete and flushed to disk: a process killed mid-write
leaves at most a hidden temporary file (see `is_temp_file`), never a truncated raster under a name the
database points to.

A full disk is reported as `DiskFullError` naming the file, whether the writer said so (ENOSPC) or not:
GDAL, for one, only prints libtiff's "No space left on device" and returns normally with a truncated
GeoTIFF, so `atomic_write` also refuses a file written while the disk ran out of space.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.errors import InputError, ScarpError

CHUNK_SIZE = 1 << 20
MAX_FILENAME = 120
_TEMP_MARK = ".tmp-"
_TEMP_RE = re.compile(r"^\..*\.tmp-[0-9a-f]{12}(\.[A-Za-z0-9]{1,16})?$")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,16}$")
# Names Windows refuses whatever their extension; a workspace may be copied there.
_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)}


_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class DiskFullError(ScarpError):
    """The disk (or the user's quota) ran out of space while writing `path`; nothing was replaced."""

    def __init__(self, path: str | Path, what: str = "was not saved"):
        self.path = Path(path)
        super().__init__(
            f"{path}: the disk is full (no space left on device); it {what}, and everything saved "
            "before is unchanged. Free some space and try again."
        )


def is_disk_full(exc: BaseException) -> bool:
    """An ENOSPC/EDQUOT error, itself or anywhere in its chain of causes."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DiskFullError):
            return True
        if isinstance(current, OSError) and current.errno in _FULL_ERRNOS:
            return True
        current = current.__cause__ or current.__context__
    return False


def out_of_space(directory: Path) -> bool:
    """Whether the file system holding `directory` has no free block left for this process.

    Root may write into the blocks ext4 reserves for it, so it counts those too. A file system that
    reports no size at all (procfs, some FUSE mounts) is never called full.
    """
    try:
        stats = os.statvfs(directory)
    except (OSError, AttributeError):
        return False
    if stats.f_blocks == 0:
        return False
    privileged = hasattr(os, "geteuid") and os.geteuid() == 0
    return (stats.f_bfree if privileged else stats.f_bavail) == 0


def temp_path_for(path: Path) -> Path:
    """Hidden sibling that keeps the extension: GDAL picks drivers by it and numpy.save appends `.npy`."""
    token = secrets.token_hex(6)
    return path.with_name(f".{path.stem}{_TEMP_MARK}{token}{path.suffix}")


def is_temp_file(path: Path) -> bool:
    """True for temporaries `atomic_write` makes, which only a killed writer leaves behind."""
    return bool(_TEMP_RE.match(path.name))


def fsync_dir(directory: Path) -> None:
    """Make a rename durable: without it a power cut can forget the new directory entry."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write (by any library); on success it replaces `path` atomically.

    Readers see the old file or the new one, never a mix. On any exception the temporary file is
    removed and the previous file at `path` is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(path) from exc
        raise
    tmp = temp_path_for(path)
    try:
        yield tmp
        if not tmp.is_file():
            raise InputError(path, "the writer did not create a file at the path it was given")
        fsync_file(tmp)
        if out_of_space(path.parent):  # the writer may have hit ENOSPC without saying so (GDAL)
            raise DiskFullError(path)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except Exception as exc:
        # Judge the disk before the temporary file goes: removing it frees the space it took.
        full = is_disk_full(exc) or (not isinstance(exc, ScarpError) and out_of_space(path.parent))
        tmp.unlink(missing_ok=True)
        if full:
            raise DiskFullError(path) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_write(path) as tmp, open(tmp, "wb") as out:
        out.write(data)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    atomic_write_bytes(path, text.encode(encoding))


def copy_file_atomic(src: str | Path, dst: str | Path) -> str:
    """Copy in chunks, hashing on the way, so a large scene is read once; returns the sha256 hex."""
    digest = hashlib.sha256()
    with atomic_write(dst) as tmp, open(src, "rb") as inp, open(tmp, "wb") as out:
        while chunk := inp.read(CHUNK_SIZE):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as inp:
        return hashlib.file_digest(inp, "sha256").hexdigest()


def safe_filename(name: str | bytes | os.PathLike[str], fallback: str = "file") -> str:
    """Turn a user-supplied name into one that is harmless on any file system and in any shell.

    Directory parts (either separator) are dropped, accents are folded to ASCII, any other character
    outside [A-Za-z0-9._-] becomes `_`, leading dots/dashes go (no hidden files, no option-like names),
    and long names are cut to 120 characters keeping the extension.
    """
    text = os.fsdecode(name) if isinstance(name, bytes | os.PathLike) else str(name)
    text = re.split(r"[/\\]", text)[-1]
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = _UNSAFE_RUN.sub("_", text).lstrip(".-").rstrip(".")
    if not text.strip("_"):
        text = fallback
    match = _EXTENSION.search(text)
    ext = match.group(0) if match and match.start() > 0 else ""
    stem = text[: len(text) - len(ext)]
    if stem.upper() in _RESERVED:
        stem = f"_{stem}"
    stem = stem[: MAX_FILENAME - len(ext)].rstrip(".") or fallback
    return stem + ext


def ensure_inside(root: Path, path: str | Path) -> Path:
    """Resolve `path` (relative ones against `root`) and refuse anything that escapes the workspace."""
    root = Path(root).resolve()
    resolved = (root / path).resolve()
    if not resolved.is_relative_to(root):
        raise InputError(path, f"is outside the workspace {root}")
    return resolved
