"""What the crash tests share: a child process that SIGKILLs itself at an exact point, and the check
that every record in a workspace points at a whole file.

Processes that must die at an exact point are started with multiprocessing (spawn) and SIGKILL
themselves from a patched function: a real SIGKILL, at a moment a timer could only hit by luck.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

from engine.io.raster import open_scene
from engine.store import Workspace, is_temp_file

SPAWN = multiprocessing.get_context("spawn")


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def run_child(target, *args, timeout: float = 120.0) -> None:
    """Run `target(*args)` in a fresh interpreter and check that it ended by SIGKILL."""
    child = SPAWN.Process(target=target, args=args)
    child.start()
    child.join(timeout)
    if child.exitcode is None:
        child.kill()
        child.join()
        raise AssertionError(f"{target.__name__}{args} did not die within {timeout} s")
    assert child.exitcode == -signal.SIGKILL, f"{target.__name__}{args} exited with {child.exitcode}"


def assert_only_whole_files_are_recorded(ws: Workspace) -> set[Path]:
    """Every prediction and mask record opens and reads whole; returns the unreferenced files left.

    Those are hidden temporaries (never under a final name) or complete files whose row never
    committed; `remove_orphan_files` clears exactly them.
    """
    assert ws.integrity_check() == "ok"
    referenced = set()
    for scene in ws.list_scenes():
        records = [*ws.list_predictions(scene.id), *ws.list_mask_versions(scene.id)]
        for record in records:
            with open_scene(record.raster_path) as raster:
                raster.read_float()  # every block decodes
            referenced.add(record.raster_path.resolve())
    files = {
        p.resolve()
        for folder in ("predictions", "masks")
        for p in (ws.root / folder).rglob("*")
        if p.is_file()
    }
    leftovers = files - referenced
    for path in leftovers:
        if not is_temp_file(path):
            with open_scene(path) as raster:  # under a final name means complete
                raster.read_float()
    assert not [p for p in (ws.root / "tmp").rglob("*") if p.is_file()], "scratch files left behind"
    return leftovers
