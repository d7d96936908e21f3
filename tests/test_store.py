"""The workspace store: schema and migrations, records, crash-safe files, deletes and conflicts.

Several processes at once (a writer killed mid-save, parallel writers): tests/test_store_processes.py.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from engine.errors import ConflictError, InputError, NotFoundError, ScarpError
from engine.store import (
    MaskConflictError,
    Scene,
    Workspace,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    copy_file_atomic,
    ensure_inside,
    is_temp_file,
    safe_filename,
    schema_version,
    sha256_file,
)
from engine.store import db as store_db
from tests.store_writer import files_under, scene_file, writes


def raw(ws: Workspace) -> sqlite3.Connection:
    return sqlite3.connect(ws.db_path)


def test_connection_settings_and_schema_version(ws: Workspace) -> None:
    conn = store_db.connect(ws.db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
    assert store_db.user_version(conn) == schema_version() == len(store_db.MIGRATIONS)
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO mask_versions (scene_id, source, raster_path, created) VALUES (9, 'import', '', '')"
        )
    for folder in ("scenes", "masks", "predictions", "models", "tmp"):
        assert (ws.root / folder).is_dir()
    conn.close()
    with Workspace.open(ws.root) as again:
        assert again.summary()["scenes"] == 0


def test_migrates_a_v1_database_forward(ws: Workspace, scene: Scene, monkeypatch: pytest.MonkeyPatch) -> None:
    ws.close()
    later = "ALTER TABLE scenes ADD COLUMN region TEXT; UPDATE scenes SET region = 'alps';"
    current = len(store_db.MIGRATIONS)
    monkeypatch.setattr(store_db, "MIGRATIONS", [*store_db.MIGRATIONS, later])
    with Workspace(ws.root) as upgraded:
        assert upgraded.get_scene(scene.id).checksum == scene.checksum
    with raw(ws) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == current + 1
        assert conn.execute("SELECT region FROM scenes").fetchall() == [("alps",)]


def test_failed_migration_leaves_previous_version(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    ws.close()
    broken = "CREATE TABLE surveys (id INTEGER PRIMARY KEY); SELECT nothing FROM missing_table;"
    current = len(store_db.MIGRATIONS)
    monkeypatch.setattr(store_db, "MIGRATIONS", [*store_db.MIGRATIONS, broken])
    with pytest.raises(ScarpError, match=f"schema version {current + 1} failed"):
        Workspace(ws.root)
    with raw(ws) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == current
        assert not conn.execute("SELECT name FROM sqlite_master WHERE name = 'surveys'").fetchall()


def test_newer_schema_is_refused(ws: Workspace) -> None:
    ws.close()
    with raw(ws) as conn:
        conn.execute("PRAGMA user_version = 7")
    with pytest.raises(ScarpError, match="newer than this Scarp knows"):
        Workspace(ws.root)


def test_scene_round_trip_paths_relative_in_db(ws: Workspace, tmp_path: Path) -> None:
    descriptor = {"crs": "EPSG:32633", "bands": ["red", "nir"], "res": 0.5, "nested": {"ü": [1, None]}}
    source = scene_file(tmp_path / "incoming", "Ålesund ortho (2023).tif", b"x" * 5000)
    added = ws.add_scene(source, descriptor, name="Ålesund")
    assert added == ws.get_scene(added.id) and ws.list_scenes() == [added]
    assert added.descriptor == descriptor and added.name == "Ålesund"
    assert added.checksum == sha256_file(source) and added.copied
    assert added.stored_path is not None and added.stored_path.is_absolute()
    assert added.stored_path.name == "Alesund_ortho_2023_.tif"
    assert added.path.read_bytes() == source.read_bytes() and added.source_path == source
    with raw(ws) as conn:
        stored = conn.execute("SELECT stored_path FROM scenes").fetchone()[0]
    assert stored.startswith("scenes/") and not Path(stored).is_absolute()
    with pytest.raises(NotFoundError):
        ws.get_scene(added.id + 1)
    with pytest.raises(InputError, match="does not exist"):
        ws.add_scene(tmp_path / "missing.tif", {})
    with pytest.raises(InputError, match="descriptor"):
        ws.add_scene(source, {"when": object()})


def test_in_place_scene_and_checksum_dedupe(ws: Workspace, tmp_path: Path) -> None:
    source = scene_file(tmp_path / "survey", "a.tif", b"same content")
    twin = scene_file(tmp_path / "elsewhere", "b.tif", b"same content")
    in_place = ws.add_scene(source, {"k": 1}, copy=False)
    assert in_place.stored_path is None and in_place.path == source
    assert ws.add_scene(twin, {"k": 2}) == in_place  # same bytes: the existing scene, no copy made
    assert len(ws.list_scenes()) == 1 and not files_under(ws.root / "scenes")


def test_prediction_and_mask_round_trip(ws: Workspace, scene: Scene) -> None:
    pred = ws.add_prediction(scene.id, "unet-v3", {"threshold": 0.4, "tiles": [512, 64]}, writes(b"probs"))
    assert ws.get_prediction(pred.id) == pred and ws.list_predictions(scene.id) == [pred]
    assert pred.raster_path.read_bytes() == b"probs" and pred.params["tiles"] == [512, 64]
    assert pred.raster_path.parent == ws.root / "predictions" / str(scene.id)
    assert ws.latest_mask_version(scene.id) is None
    first = ws.save_mask_version(
        scene.id, writes(b"m1"), parent_id=None, source="prediction", prediction_id=pred.id
    )
    second = ws.save_mask_version(
        scene.id, writes(b"m2"), parent_id=first.id, source="correction", author="ana", note="scarp edge"
    )
    assert ws.list_mask_versions(scene.id) == [first, second] and ws.latest_mask_version(scene.id) == second
    assert ws.get_mask_version(first.id) == first and first.prediction_id == pred.id
    assert (second.parent_id, second.author, second.note) == (first.id, "ana", "scarp edge")
    assert second.raster_path.read_bytes() == b"m2" and second.raster_path.suffix == ".tif"
    with raw(ws) as conn:
        paths = [
            row[0]
            for row in conn.execute(
                "SELECT raster_path FROM mask_versions UNION ALL SELECT raster_path FROM predictions"
            )
        ]
    assert all(p.startswith(("masks/", "predictions/")) for p in paths)
    with pytest.raises(InputError, match="mask source"):
        ws.save_mask_version(scene.id, writes(b"x"), parent_id=second.id, source="guess")
    with pytest.raises(InputError, match="extension"):
        ws.add_prediction(scene.id, "m", {}, writes(b"x"), suffix="/../../evil")
    with pytest.raises(NotFoundError):
        ws.add_prediction(scene.id + 5, "m", {}, writes(b"x"))


def test_failing_writer_leaves_no_file_and_no_row(ws: Workspace, scene: Scene) -> None:
    def broken(path: Path) -> None:
        Path(path).write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        ws.save_mask_version(scene.id, broken, parent_id=None, source="import")
    assert ws.list_mask_versions(scene.id) == [] and not files_under(ws.root / "masks")


def test_models_registry(ws: Workspace) -> None:
    ckpt = ws.root / "models" / "unet-a" / "best.pt"
    atomic_write_bytes(ckpt, b"weights")
    base = ws.add_model("unet-a", "unet", {"encoder": "resnet34"}, ckpt, metrics={"iou": 0.61})
    child = ws.add_model(
        "unet-b", "unet", {}, ckpt, parent_id=base.id, training_snapshot={"masks": [1, 2]}, metrics=None
    )
    assert ws.get_model(base.id) == base and ws.get_model_by_name("unet-b") == child
    assert ws.list_models() == [base, child] and base.checkpoint_path == ckpt
    assert child.training_snapshot == {"masks": [1, 2]} and child.metrics is None
    with pytest.raises(InputError, match="already used by model"):
        ws.add_model("unet-a", "unet", {}, ckpt)
    with pytest.raises(InputError, match="already used by model"):
        ws.rename_model(child.id, "unet-a")
    assert ws.rename_model(child.id, "unet-b2").name == "unet-b2"
    with pytest.raises(ScarpError, match=r"unet-b2\) was trained from it"):
        ws.delete_model(base.id)
    ws.delete_model(child.id)
    assert ckpt.exists()  # still the checkpoint of unet-a
    ws.delete_model(base.id)
    assert not ckpt.exists() and ws.list_models() == []
    with pytest.raises(NotFoundError):
        ws.get_model_by_name("unet-a")


def test_job_lifecycle(ws: Workspace) -> None:
    job = ws.create_job("predict", {"scene": 3})
    assert (job.status, job.progress, job.started) == ("queued", 0.0, None)
    running = ws.start_job(job.id)
    assert running.status == "running" and running.started is not None
    with pytest.raises(ConflictError):
        ws.start_job(job.id)
    assert ws.update_job(job.id, progress=0.5, message="tile 4/8").message == "tile 4/8"
    with pytest.raises(InputError):
        ws.update_job(job.id, progress=1.5)
    other = ws.create_job("train", {})
    assert ws.summary()["jobs_running"] == 1 and ws.summary()["jobs_queued"] == 1
    assert ws.finish_job(other.id, "cancelled").status == "cancelled"
    assert ws.update_job(other.id, progress=0.9).progress == 0.0  # a cancelled job stays as it ended
    done = ws.finish_job(job.id, "succeeded", message="8 tiles")
    assert (done.progress, done.done, done.finished is not None) == (1.0, True, True)
    with pytest.raises(ConflictError, match="already ended"):
        ws.finish_job(job.id, "failed", error="late")
    assert [j.id for j in ws.list_jobs("cancelled")] == [other.id] and len(ws.list_jobs()) == 2
    assert ws.get_job(job.id) == done


def test_moved_workspace_still_resolves_files(ws: Workspace, scene: Scene, tmp_path: Path) -> None:
    mask = ws.save_mask_version(scene.id, writes(b"mask"), parent_id=None, source="import")
    ws.close()
    moved = tmp_path / "moved" / "ws"
    shutil.move(ws.root, moved)
    with Workspace(moved) as again:
        assert again.get_scene(scene.id).path.read_bytes() == b"scene-bytes"
        assert again.latest_mask_version(scene.id).raster_path == moved / mask.raster_path.relative_to(
            ws.root
        )
        assert again.latest_mask_version(scene.id).raster_path.read_bytes() == b"mask"
        assert again.integrity_check() == "ok"


def test_atomic_write(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "mask.tif"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".mask.tmp-") and tmp.suffix == ".tif"
        tmp.write_text("new but broken")
        raise RuntimeError("encoder crashed")
    assert target.read_text() == "old" and [p.name for p in target.parent.iterdir()] == ["mask.tif"]
    with atomic_write(target) as tmp:
        assert is_temp_file(tmp)
        tmp.write_text("new")
    assert target.read_text() == "new" and [p.name for p in target.parent.iterdir()] == ["mask.tif"]
    with pytest.raises(InputError, match="did not create"), atomic_write(target):
        pass
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 << 20))
    assert copy_file_atomic(big, tmp_path / "copy.bin") == sha256_file(big)
    assert (tmp_path / "copy.bin").read_bytes() == big.read_bytes()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system32\\cmd.exe", "cmd.exe"),
        ("scene 2023-07 (final).tif", "scene_2023-07_final_.tif"),
        ("Ørsta_åsen_é.tif", "_rsta_asen_e.tif"),
        (b"bad\xff\xfename.tif", "bad_name.tif"),
        (".bashrc", "bashrc"),
        ("...", "file"),
        ("", "file"),
        ("/", "file"),
        ("-rf.tif", "rf.tif"),
        ("CON.tif", "_CON.tif"),
        ("a\x00b\nc.tif", "a_b_c.tif"),
        ("x" * 500 + ".tif", "x" * 116 + ".tif"),
    ],
)
def test_safe_filename(name: str | bytes, expected: str) -> None:
    assert safe_filename(name) == expected


def test_ensure_inside(tmp_path: Path) -> None:
    assert ensure_inside(tmp_path, "masks/1/a.tif") == tmp_path.resolve() / "masks/1/a.tif"
    for escape in ("../outside.tif", "/etc/passwd", "masks/../../x"):
        with pytest.raises(InputError, match="outside the workspace"):
            ensure_inside(tmp_path, escape)


def test_delete_scene_refuses_to_drop_masks_silently(ws: Workspace, scene: Scene) -> None:
    ws.add_prediction(scene.id, "m", {}, writes(b"p"))
    first = ws.save_mask_version(scene.id, writes(b"1"), parent_id=None, source="import")
    ws.save_mask_version(scene.id, writes(b"2"), parent_id=first.id, source="correction")
    before = files_under(ws.root)
    with pytest.raises(ScarpError, match="has 2 mask versions that would be lost"):
        ws.delete_scene(scene.id)
    with pytest.raises(sqlite3.IntegrityError), store_db.connect(ws.db_path) as conn:
        conn.execute("DELETE FROM scenes")  # the schema itself refuses to orphan mask versions
    assert files_under(ws.root) == before and len(ws.list_mask_versions(scene.id)) == 2
    ws.delete_scene(scene.id, drop_masks=True)
    assert ws.summary() == dict.fromkeys(ws.summary(), 0)
    for folder in ("masks", "predictions", "scenes"):
        assert not files_under(ws.root / folder)
    with pytest.raises(NotFoundError):
        ws.delete_scene(scene.id)


def test_delete_in_place_scene_never_touches_the_source(ws: Workspace, tmp_path: Path) -> None:
    source = scene_file(tmp_path / "survey")
    scene = ws.add_scene(source, {}, copy=False)
    ws.save_mask_version(scene.id, writes(b"1"), parent_id=None, source="import")
    ws.delete_scene(scene.id, drop_masks=True)
    assert source.read_bytes() == b"scene-bytes" and ws.list_scenes() == []


def test_stale_parent_raises_conflict_and_writes_nothing(ws: Workspace, scene: Scene) -> None:
    v1 = ws.save_mask_version(scene.id, writes(b"v1"), parent_id=None, source="import")
    with Workspace(ws.root) as other:
        assert ws.latest_mask_version(scene.id) == other.latest_mask_version(scene.id) == v1
        ws.save_mask_version(scene.id, writes(b"v2"), parent_id=v1.id, source="correction", author="bo")
        before = files_under(ws.root / "masks")
        with pytest.raises(ConflictError, match=r"version \d+ by bo at .* reload") as caught:
            other.save_mask_version(scene.id, writes(b"v2b"), parent_id=v1.id, source="correction")
        assert isinstance(caught.value, MaskConflictError) and caught.value.latest.author == "bo"
        assert files_under(ws.root / "masks") == before and len(other.list_mask_versions(scene.id)) == 2
        # the late check inside the write transaction, past the early one
        racing = other.latest_mask_version(scene.id)

        def sneak(path: Path) -> None:
            ws.save_mask_version(scene.id, writes(b"v3"), parent_id=racing.id, source="correction")
            path.write_bytes(b"v3b")

        with pytest.raises(ConflictError):
            other.save_mask_version(scene.id, sneak, parent_id=racing.id, source="correction")
        assert len(files_under(ws.root / "masks")) == 3 == len(ws.list_mask_versions(scene.id))


def test_deletions_renames_and_default_choices_are_recorded_with_their_author(
    ws: Workspace, scene: Scene
) -> None:
    ckpt = ws.root / "models" / "a.safetensors"
    atomic_write_bytes(ckpt, b"weights")
    model = ws.add_model("unet-a", "unet", {}, ckpt)
    ws.save_mask_version(scene.id, writes(b"1"), parent_id=None, source="import")
    with pytest.raises(ScarpError):
        ws.delete_scene(scene.id, author="ana")  # refused: nothing changed, nothing recorded
    ws.set_default_model(model.id, author="ana")
    ws.set_default_model(model.id, author="ana")  # no change, no record
    ws.rename_model(model.id, "unet-b", author="Ben <ben@uni.edu>")
    ws.set_default_model(None, author="ana")
    ws.delete_model(model.id)  # the CLI signs nothing
    ws.delete_scene(scene.id, drop_masks=True, author="ana")
    assert [(a.author, a.action, a.subject, a.detail) for a in reversed(ws.activity())] == [
        ("ana", "default model set", f"model {model.id} (unet-a)", ""),
        ("Ben <ben@uni.edu>", "model renamed", f"model {model.id}", "unet-a → unet-b"),
        ("ana", "default model set", "none", ""),
        ("", "model deleted", f"model {model.id} (unet-b)", ""),
        ("ana", "scene deleted", f"scene {scene.id} ({scene.name})", "with 1 mask version"),
    ]
    assert ws.activity(limit=1)[0].action == "scene deleted"
