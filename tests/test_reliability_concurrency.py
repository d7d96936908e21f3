"""Many hands on one workspace: two review sessions saving the same scene at the same moment, and four
processes saving masks as fast as they can next to a reader.

The store's contract: a scene's mask versions form one chain (each new version's parent is the
version that was latest when it was saved); a save on top of a version that is no longer the latest
is refused with MaskConflictError and writes nothing; a busy database makes writers wait, it never
reaches a user as "database is locked".
"""

from __future__ import annotations

import multiprocessing
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import pytest

from engine import api
from engine.store import MaskConflictError, Workspace

SPAWN = multiprocessing.get_context("spawn")
WRITERS = 4
SAVES = 50


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def _assert_one_chain(ws: Workspace, scene_id: int) -> list:
    versions = ws.list_mask_versions(scene_id)
    assert [v.parent_id for v in versions] == [None, *(v.id for v in versions[:-1])]
    assert _files(ws.root / "masks") == {v.raster_path for v in versions}  # refused saves left no file
    assert ws.integrity_check() == "ok"
    return versions


@pytest.fixture
def scene(tmp_path, bijie_pair):
    """A Bijie scene (121 × 94 px) with its imported mask as version 1."""
    with api.open_workspace(tmp_path / "ws") as ws:
        imported = api.import_scene(ws, bijie_pair[0], mask=bijie_pair[1])
    return tmp_path / "ws", imported.scene.id, imported.mask_version.id


# --- two sessions, one scene -------------------------------------------------------------------------


def _together(calls) -> list:
    """Run the calls in threads released at the same instant; each one's result or exception."""
    calls = list(calls)
    start = threading.Barrier(len(calls))
    outcome: list = [None] * len(calls)

    def run(index: int) -> None:
        start.wait()
        try:
            outcome[index] = calls[index]()
        except Exception as exc:
            outcome[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcome


@pytest.mark.parametrize("connections", ["one shared", "one each"])
def test_two_sessions_saving_the_same_scene_at_once_one_is_refused(scene, connections):
    """Two browser sessions are two threads of one Streamlit server and share its Workspace ("one
    shared"); a CLI or a second server has its own connection ("one each"). Both sessions edit the same
    latest version and press Save together: one save wins, the other is told to reload, and its
    edit is in no version. The loser then reloads and saves on top of the winner."""
    root, scene_id, _ = scene
    shared = api.open_workspace(root)
    stores = [shared, shared] if connections == "one shared" else [shared, api.open_workspace(root)]
    try:
        for round_ in range(5):
            sessions = [api.open_edit_session(store, scene_id) for store in stores]
            assert sessions[0].parent_id == sessions[1].parent_id
            edits = []
            for index, session in enumerate(sessions):
                edit = session.mask.copy()
                edit[:, :] = 0
                edit[index * 40 : index * 40 + 20, round_ * 10 : round_ * 10 + 10] = 1
                edits.append(edit)
            outcome = _together(
                lambda i=i, edit=edit, parent=session.parent_id: api.save_edited_mask(
                    stores[i], scene_id, edit, parent, f"user{i}"
                )
                for i, (edit, session) in enumerate(zip(edits, sessions, strict=True))
            )
            winners = [i for i in range(2) if not isinstance(outcome[i], Exception)]
            assert len(winners) == 1, outcome
            winner, loser = winners[0], 1 - winners[0]
            refusal = outcome[loser]
            assert isinstance(refusal, MaskConflictError), refusal
            assert refusal.latest.id == outcome[winner].id and f"user{winner}" in str(refusal)
            assert "Nothing was overwritten" in str(refusal) and "reload" in str(refusal)
            latest = shared.latest_mask_version(scene_id)
            assert latest.id == outcome[winner].id and latest.parent_id == sessions[winner].parent_id
            np.testing.assert_array_equal(api.load_mask(shared, latest.id), edits[winner])
            # the page offers a reload: the loser's edit goes on top of the winner's, nothing lost
            reloaded = api.open_edit_session(stores[loser], scene_id)
            assert reloaded.parent_id == latest.id
            merged = np.maximum(reloaded.mask, edits[loser])
            again = api.save_edited_mask(stores[loser], scene_id, merged, reloaded.parent_id, f"user{loser}")
            np.testing.assert_array_equal(api.load_mask(shared, again.id), merged)
        versions = _assert_one_chain(shared, scene_id)
        assert len(versions) == 1 + 5 * 2
    finally:
        for store in {id(s): s for s in stores}.values():
            store.close()


def test_a_tile_save_on_a_stale_version_is_refused_too(scene):
    """The tile editor saves the whole mask with one tile replaced: on a stale parent it would drop the
    other session's edits elsewhere in the scene, so it is refused the same way."""
    root, scene_id, first = scene
    with api.open_workspace(root) as ws:
        whole = api.load_mask(ws, first)
        tile = api.open_edit_session(ws, scene_id, (0, 0, 32, 32))
        other = whole.copy()
        other[60:, 60:] = 1 - other[60:, 60:]
        newer = api.save_edited_mask(ws, scene_id, other, first, "ben")
        with pytest.raises(MaskConflictError, match=f"version {newer.id} by ben"):
            api.save_tile_edit(ws, scene_id, (0, 0, 32, 32), 1 - tile.mask, tile.parent_id, "ana")
        assert _assert_one_chain(ws, scene_id)[-1] == newer
        np.testing.assert_array_equal(api.load_mask(ws, newer.id), other)


# --- four writer processes, fifty saves each -------------------------------------------------------


def _pattern(writer: int, seq: int, shape: tuple[int, int]) -> np.ndarray:
    """A mask that says who saved it and when: row `writer` holds `seq` in binary, the rest is empty."""
    mask = np.zeros(shape, np.uint8)
    mask[writer, :16] = [(seq >> bit) & 1 for bit in range(16)]
    mask[WRITERS, writer] = 1
    return mask


def _writer(root: str, scene_id: int, writer: int, saves: int, go, results) -> None:
    """Save `saves` versions as a user would: load the latest, save on top, reload after a conflict."""
    saved, conflicts, errors = [], 0, []
    try:
        with api.open_workspace(root) as ws:
            grid = api.scene_grid(ws, scene_id)
            go.wait()  # all start together, imports done
            seq = 0
            while len(saved) < saves:
                seq += 1
                latest = api.latest_mask_version(ws, scene_id)
                try:
                    version = api.save_edited_mask(
                        ws, scene_id, _pattern(writer, seq, (grid.height, grid.width)), latest.id,
                        author=f"w{writer}", note=f"{writer}:{seq}",
                    )  # fmt: skip
                except MaskConflictError:
                    conflicts += 1
                    continue
                saved.append(version.id)
    except Exception:  # anything else reached the user: report it to the test
        errors.append(traceback.format_exc())
    results.put({"writer": writer, "saved": saved, "conflicts": conflicts, "errors": errors})


def _reader(root: str, scene_id: int, go, stop, results) -> None:
    """The review pages meanwhile: latest version, its raster, the history list, the summary."""
    reads, errors = 0, []
    try:
        with api.open_workspace(root) as ws:
            go.wait()
            while not stop.is_set():
                latest = api.latest_mask_version(ws, scene_id)
                api.load_mask(ws, latest.id)
                assert len(ws.list_mask_versions(scene_id)) >= 1
                api.workspace_summary(ws)
                reads += 1
    except Exception:
        errors.append(traceback.format_exc())
    results.put({"reader": True, "reads": reads, "errors": errors})


def test_four_processes_fifty_saves_each_build_one_chain(scene):
    root, scene_id, first = scene
    results = SPAWN.Queue()
    go, stop = SPAWN.Barrier(WRITERS + 2), SPAWN.Event()
    reader = SPAWN.Process(target=_reader, args=(str(root), scene_id, go, stop, results))
    writers = [
        SPAWN.Process(target=_writer, args=(str(root), scene_id, w, SAVES, go, results))
        for w in range(WRITERS)
    ]
    for process in [reader, *writers]:
        process.start()
    go.wait(timeout=120)
    started = time.monotonic()
    reports = [results.get(timeout=180) for _ in writers]
    stop.set()
    reports.append(results.get(timeout=60))
    for process in [reader, *writers]:
        process.join(timeout=30)
        assert process.exitcode == 0
    elapsed = time.monotonic() - started
    for report in reports:
        assert report["errors"] == [], report["errors"][0]  # no "database is locked", nothing at all
    written = [r for r in reports if "writer" in r]
    assert all(len(r["saved"]) == SAVES for r in written)
    assert sum(r["conflicts"] for r in written) > 0  # they did race: stale saves were refused
    assert next(r for r in reports if "reader" in r)["reads"] > 0

    with api.open_workspace(root) as ws:
        versions = _assert_one_chain(ws, scene_id)
        assert len(versions) == 1 + WRITERS * SAVES and versions[0].id == first
        assert sorted(i for r in written for i in r["saved"]) == [v.id for v in versions[1:]]
        grid = api.scene_grid(ws, scene_id)
        for version in versions[1:]:  # every saved version holds exactly what its writer saved
            writer, seq = map(int, version.note.split(":"))
            assert version.author == f"w{writer}"
            np.testing.assert_array_equal(
                api.load_mask(ws, version.id), _pattern(writer, seq, (grid.height, grid.width))
            )
        for writer in range(WRITERS):  # each writer's saves are in its order, none lost
            mine = [v for v in versions[1:] if v.author == f"w{writer}"]
            assert len(mine) == SAVES and [v.id for v in mine] == sorted(v.id for v in mine)
    assert elapsed < 120, f"{WRITERS} × {SAVES} saves took {elapsed:.0f} s"
