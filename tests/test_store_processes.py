"""The workspace store under several processes: a writer SIGKILLed mid-save, four parallel writers."""

from __future__ import annotations

import json
import random
import signal
import time

from engine.store import MaskVersion, Scene, Workspace, is_temp_file
from tests.store_writer import files_under, note_for, payload, payload_from_note, spawn, writes


def assert_chain_intact(ws: Workspace, scene_id: int) -> list[MaskVersion]:
    versions = ws.list_mask_versions(scene_id)
    assert [v.parent_id for v in versions] == [None, *(v.id for v in versions[:-1])]
    for version in versions:
        assert version.raster_path.read_bytes() == payload_from_note(version.note), version
    return versions


def test_writer_killed_mid_write_leaves_previous_versions_intact(ws: Workspace, scene: Scene) -> None:
    rng = random.Random(20240611)
    size = 2 << 20
    reported: list[int] = []
    for round_ in range(5):
        args = [f"--size={size}", "--chunk=65536", "--delay=0.003"]
        child = spawn("endless", str(ws.root), str(scene.id), f"k{round_}", *args)
        wanted, saves = rng.randint(1, 3), 0
        while True:
            line = child.stdout.readline().strip()
            assert line, f"writer ended early: {child.stderr.read()}"
            if line.startswith("saved"):
                saves += 1
                reported.append(int(line.split()[1]))
            elif line == "begin" and saves >= wanted:
                break
        time.sleep(rng.uniform(0.0, 0.12))  # a write takes ≥ 0.1 s: mostly mid-write, sometimes at commit
        child.send_signal(signal.SIGKILL)
        child.communicate()
    with Workspace(ws.root) as after:
        assert after.integrity_check() == "ok"
        versions = assert_chain_intact(after, scene.id)
        assert set(reported) <= {v.id for v in versions}  # every save the writer reported survived
        leftovers = files_under(after.root / "masks") - {v.raster_path for v in versions}
        assert any(is_temp_file(p) for p in leftovers), "no kill landed mid-write"
        latest = after.latest_mask_version(scene.id)
        assert latest == versions[-1] and latest.raster_path.stat().st_size == size
        data = payload("after", 1, 1000)
        fresh = after.save_mask_version(
            scene.id, writes(data), parent_id=latest.id, source="correction", note=note_for("after", 1, 1000)
        )
        assert fresh.raster_path.read_bytes() == data
        removed = after.remove_orphan_files()
        assert set(removed) == leftovers
        assert files_under(after.root / "masks") == {
            v.raster_path for v in after.list_mask_versions(scene.id)
        }
        assert_chain_intact(after, scene.id)  # cleaning touched no version


def test_parallel_writers_build_one_consistent_chain(ws: Workspace, scene: Scene) -> None:
    started = time.monotonic()
    children = [spawn("race", str(ws.root), str(scene.id), f"w{i}", "--count=25") for i in range(4)]
    results = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        assert "locked" not in err.lower()
        results.append(json.loads(out.strip().splitlines()[-1]))
    versions = assert_chain_intact(ws, scene.id)
    assert len(versions) == 100 and all(len(r["saved"]) == 25 for r in results)
    assert sorted(i for r in results for i in r["saved"]) == [v.id for v in versions]
    assert len({v.note for v in versions}) == 100
    assert files_under(ws.root / "masks") == {v.raster_path for v in versions}  # losers cleaned up
    assert ws.integrity_check() == "ok"
    assert time.monotonic() - started < 30
