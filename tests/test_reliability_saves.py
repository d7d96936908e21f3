"""The app killed while it saves a corrected mask, and writes that run out of space: the previous
version survives whole, nothing half-written is recorded, and a full disk is a clear error that
loses nothing. The worker's crashes are in test_reliability_crashes.py.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from engine import api
from engine.io.raster import open_scene
from engine.store import DiskFullError, MaskConflictError, Workspace, is_temp_file
from tests.crash_points import assert_only_whole_files_are_recorded, die, run_child

# --- the app, killed while it saves a corrected mask -------------------------------------------------


def _save_dying_at(root: str, scene_id: int, parent_id: int, point: str) -> None:
    """A Correct-page save (whole-scene mask) that SIGKILLs its process at `point`."""
    from engine.io import writers
    from engine.store import files

    if point == "raster half written":
        writers.BlockWriter.write = lambda self, y, x, block: die()
    elif point == "raster written, not yet renamed":
        files.fsync_file = lambda path: die()
    elif point == "renamed, row not committed":
        check = Workspace._check_mask_parent
        calls = []

        def check_parent(self, conn, scene, parent):
            calls.append(1)
            if len(calls) == 2:  # the re-check inside the write transaction
                die()
            return check(self, conn, scene, parent)

        Workspace._check_mask_parent = check_parent
    with api.open_workspace(root) as ws:
        grid = api.scene_grid(ws, scene_id)
        mask = np.ones((grid.height, grid.width), np.uint8)
        api.save_edited_mask(ws, scene_id, mask, parent_id, author="ana")
    raise AssertionError("the save finished")


@pytest.mark.parametrize(
    "point", ["raster half written", "raster written, not yet renamed", "renamed, row not committed"]
)
def test_app_sigkilled_during_a_mask_save_keeps_the_previous_version(imported, point):
    ws, scene_id, before, before_bytes = imported
    truth = api.load_mask(ws, before.id)
    run_child(_save_dying_at, str(ws.root), scene_id, before.id, point)
    with Workspace(ws.root) as after:
        assert after.list_mask_versions(scene_id) == [before]
        assert before.raster_path.read_bytes() == before_bytes
        np.testing.assert_array_equal(api.load_mask(after, before.id), truth)
        leftovers = assert_only_whole_files_are_recorded(after)
        assert len(leftovers) == 1  # the killed save's file: hidden, or complete but unrecorded
        assert is_temp_file(next(iter(leftovers))) == (point != "renamed, row not committed")
        # the next session saves on top of the intact version, no conflict, no repair needed
        fresh = api.save_edited_mask(after, scene_id, 1 - truth, before.id, author="ben")
        np.testing.assert_array_equal(api.load_mask(after, fresh.id), 1 - truth)
        assert set(after.remove_orphan_files()) == leftovers
        assert_only_whole_files_are_recorded(after)


# --- a full disk ------------------------------------------------------------------------------------


def _no_space(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _assert_nothing_lost(ws: Workspace, scene_id: int, versions: list, masks: list[np.ndarray]) -> None:
    assert ws.list_mask_versions(scene_id) == versions
    for version, mask in zip(versions, masks, strict=True):
        np.testing.assert_array_equal(api.load_mask(ws, version.id), mask)
    with open_scene(ws.get_scene(scene_id).path) as scene:
        scene.read_float()
    assert assert_only_whole_files_are_recorded(ws) == set()  # no temporary, no unrecorded file


@pytest.mark.parametrize("where", ["raster write", "flush to disk", "database"])
def test_disk_full_during_a_mask_save_is_a_clear_error_and_loses_nothing(imported, monkeypatch, where):
    from engine.io import writers
    from engine.store import files

    ws, scene_id, before, _ = imported
    first = api.load_mask(ws, before.id)
    second = api.save_edited_mask(ws, scene_id, 1 - first, before.id, author="ana")
    note = ""
    if where == "raster write":
        monkeypatch.setattr(writers.BlockWriter, "write", _no_space)
    elif where == "flush to disk":
        monkeypatch.setattr(files, "fsync_file", _no_space)
    else:  # SQLite's own "database or disk is full": the database may not grow by another page
        pages = ws._db.execute("PRAGMA page_count").fetchone()[0]
        ws._db.execute(f"PRAGMA max_page_count = {pages}")
        note = "x" * 20_000  # a row that needs new pages
    with pytest.raises(DiskFullError) as full:
        api.save_edited_mask(ws, scene_id, first, second.id, author="ana", note=note)
    message = str(full.value)
    assert "disk is full" in message and "no space left" in message and "unchanged" in message
    named = ws.db_path if where == "database" else ws.root / "masks" / str(scene_id)
    assert str(named) in message
    _assert_nothing_lost(ws, scene_id, [before, second], [first, 1 - first])
    monkeypatch.undo()
    if where == "database":
        ws._db.execute("PRAGMA max_page_count = 1073741823")
    third = api.save_edited_mask(ws, scene_id, first, second.id, author="ana", note=note)
    assert third.parent_id == second.id  # space back: the same save goes through


def test_disk_full_during_a_scene_import_keeps_the_workspace(imported, monkeypatch, landsat_utm):
    from engine.store import files

    ws, scene_id, before, _ = imported
    real_open = open

    def open_without_space(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        if "w" in mode:
            handle.write = _no_space
        return handle

    monkeypatch.setattr(files, "open", open_without_space, raising=False)
    with pytest.raises(DiskFullError, match=r"scenes/.*RGB\.byte\.tif: the disk is full"):
        api.import_scene(ws, landsat_utm)
    monkeypatch.undo()
    assert [s.id for s in ws.list_scenes()] == [scene_id]
    assert [p for p in (ws.root / "scenes").rglob("*") if p.is_file()] == [ws.get_scene(scene_id).path]
    _assert_nothing_lost(ws, scene_id, [before], [api.load_mask(ws, before.id)])


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 2 MiB tmpfs, where this test runs as root and may mount one (else the injected tests stand)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_really_full_disk_refuses_the_save_and_keeps_every_version(small_disk, bijie_pair):
    """On a full disk GDAL does not raise: libtiff prints "No space left on device" and GDAL returns with
    an empty GeoTIFF. SQLite can still commit, because it reuses its WAL file after a checkpoint. Before
    the store checked for this, the empty raster was recorded as the scene's latest mask version."""
    import sqlite3

    with api.open_workspace(small_disk / "ws") as ws:
        imported = api.import_scene(ws, bijie_pair[0], mask=bijie_pair[1])
        scene_id, latest = imported.scene.id, imported.mask_version
        versions, masks = [latest], [api.load_mask(ws, latest.id)]
        noise = np.random.default_rng(0).integers(0, 2, masks[0].shape, dtype=np.uint8)  # incompressible
        for i in range(8):  # a workspace in use: its WAL has grown
            masks.append(noise if i % 2 else 1 - noise)
            latest = api.save_edited_mask(ws, scene_id, masks[-1], latest.id, author="ana", note="n" * 4000)
            versions.append(latest)
        with sqlite3.connect(ws.db_path) as other:  # what SQLite does by itself now and then
            other.execute("PRAGMA wal_checkpoint(RESTART)")
        filler = small_disk / "filler"
        with open(filler, "wb", buffering=0) as out:  # fill the disk to the last block
            with pytest.raises(OSError) as full:
                while True:
                    out.write(b"\0" * 4096)
            assert full.value.errno == errno.ENOSPC
        with pytest.raises(DiskFullError, match=r"masks/.*\.tif: the disk is full"):
            api.save_edited_mask(ws, scene_id, masks[-2], latest.id, author="ana")
        filler.unlink()
        _assert_nothing_lost(ws, scene_id, versions, masks)
        again = api.save_edited_mask(ws, scene_id, masks[-2], latest.id, author="ana")
        np.testing.assert_array_equal(api.load_mask(ws, again.id), masks[-2])


def test_a_conflicting_save_on_a_full_disk_reports_the_conflict_first(imported, monkeypatch):
    """The cheap parent check runs before any byte is written: a stale save says so, not "disk full"."""
    from engine.store import files

    ws, scene_id, before, _ = imported
    mask = api.load_mask(ws, before.id)
    api.save_edited_mask(ws, scene_id, 1 - mask, before.id, author="ana")
    monkeypatch.setattr(files, "fsync_file", _no_space)
    with pytest.raises(MaskConflictError):
        api.save_edited_mask(ws, scene_id, mask, before.id, author="ben")
