"""Store test helpers, and the child process of tests/test_store_processes.py that saves mask versions
into a workspace from another process.

`endless` saves slowly forever so the test can SIGKILL it mid-write; `race` saves a fixed number of
versions next to other writers, reloading the latest parent after each ConflictError.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from engine.errors import ConflictError
from engine.store import Workspace

HEADER = 64
REPO_ROOT = Path(__file__).resolve().parents[1]


def writes(data: bytes) -> Callable[[Path], None]:
    return lambda path: Path(path).write_bytes(data)


def scene_file(folder: Path, name: str = "valley.tif", data: bytes = b"scene-bytes") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def spawn(*args: str) -> subprocess.Popen[str]:
    """Start this module as a writer process on the checkout the tests run from."""
    paths = [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    return subprocess.Popen(
        [sys.executable, "-m", "tests.store_writer", *args],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def payload(tag: str, seq: int, size: int) -> bytes:
    """Bytes that name their writer and sequence number, so a reader can check every byte of a version."""
    head = f"scarp-test-mask {tag} {seq} {size}\n".encode().ljust(HEADER, b" ")
    unit = f"<{tag}:{seq}>".encode()
    return head + (unit * ((size - HEADER) // len(unit) + 1))[: size - HEADER]


def note_for(tag: str, seq: int, size: int) -> str:
    return f"{tag}:{seq}:{size}"


def payload_from_note(note: str) -> bytes:
    tag, seq, size = note.split(":")
    return payload(tag, int(seq), int(size))


def say(line: str) -> None:
    print(line, flush=True)


def writer(data: bytes, chunk: int, delay: float, announce: bool) -> Callable[[Path], None]:
    """Writes in small chunks with pauses, like a slow raster encoder, so a kill can land mid-file."""

    def write(path: Path) -> None:
        if announce:
            say("begin")
        with open(path, "wb") as out:
            for start in range(0, len(data), chunk):
                out.write(data[start : start + chunk])
                out.flush()
                if delay:
                    time.sleep(delay)

    return write


def save(ws: Workspace, scene_id: int, tag: str, seq: int, args: argparse.Namespace) -> int:
    """One save on top of the latest version; returns the new id, or -1 on a conflict."""
    latest = ws.latest_mask_version(scene_id)
    write = writer(payload(tag, seq, args.size), args.chunk, args.delay, args.mode == "endless")
    try:
        version = ws.save_mask_version(
            scene_id,
            write,
            parent_id=None if latest is None else latest.id,
            source="correction",
            author=tag,
            note=note_for(tag, seq, args.size),
        )
    except ConflictError:
        return -1
    return version.id


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["endless", "race"])
    parser.add_argument("root", type=Path)
    parser.add_argument("scene_id", type=int)
    parser.add_argument("tag")
    parser.add_argument("--count", type=int, default=25)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--chunk", type=int, default=65536)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    with Workspace(args.root) as ws:
        seq, saved, conflicts = 0, [], 0
        while args.mode == "endless" or len(saved) < args.count:
            seq += 1
            version_id = save(ws, args.scene_id, args.tag, seq, args)
            if version_id < 0:
                conflicts += 1
                continue
            saved.append(version_id)
            if args.mode == "endless":
                say(f"saved {version_id}")
        say(json.dumps({"tag": args.tag, "saved": saved, "conflicts": conflicts}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
