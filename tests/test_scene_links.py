"""Scene links in the store: a scene's pre-event image, DEM, slope and hillshade, and migration 2."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from engine import api
from engine.errors import InputError, NotFoundError
from engine.store import Workspace
from engine.store import db as store_db


def _file(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(name.encode() * 50)
    return path


@pytest.fixture
def ws(tmp_path: Path):
    with Workspace.open(tmp_path / "ws") as workspace:
        yield workspace


def _scenes(ws: Workspace, tmp_path: Path, *names: str) -> list[int]:
    return [ws.add_scene(_file(tmp_path / "in", n), {}, name=n).id for n in names]


def test_link_replace_unlink(ws: Workspace, tmp_path: Path) -> None:
    post, pre, pre2, slope = _scenes(ws, tmp_path, "post", "pre", "pre2", "slope")
    assert ws.scene_links(post) == {}
    assert ws.link_scene(post, "pre_event", pre).name == "pre"
    api.link_scene(ws, post, "slope", slope)
    assert {role: s.id for role, s in api.scene_links(ws, post).items()} == {"pre_event": pre, "slope": slope}
    ws.link_scene(post, "pre_event", pre2)  # replaces, never a second pre-event layer
    assert ws.scene_links(post)["pre_event"].id == pre2
    assert api.unlink_scene(ws, post, "pre_event") is True
    assert ws.unlink_scene(post, "pre_event") is False
    assert list(ws.scene_links(post)) == ["slope"]
    assert ws.scene_links(slope) == {}  # links are one way


def test_refusals(ws: Workspace, tmp_path: Path) -> None:
    post, pre = _scenes(ws, tmp_path, "post", "pre")
    with pytest.raises(InputError, match="itself"):
        ws.link_scene(post, "dem", post)
    with pytest.raises(InputError, match="link role"):
        ws.link_scene(post, "ortho", pre)
    with pytest.raises(NotFoundError):
        ws.link_scene(post, "dem", 999)
    with pytest.raises(NotFoundError):
        ws.scene_links(999)
    assert ws.scene_links(post) == {}


def test_deleting_either_scene_drops_the_link(ws: Workspace, tmp_path: Path) -> None:
    post, pre, hill = _scenes(ws, tmp_path, "post", "pre", "hill")
    ws.link_scene(post, "pre_event", pre)
    ws.link_scene(post, "hillshade", hill)
    ws.delete_scene(pre)
    assert list(ws.scene_links(post)) == ["hillshade"]
    ws.delete_scene(post)
    assert [s.id for s in ws.list_scenes()] == [hill]
    assert ws.integrity_check() == "ok"


def test_migrates_a_v1_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "ws"
    with monkeypatch.context() as patch:
        patch.setattr(store_db, "MIGRATIONS", store_db.MIGRATIONS[:1])
        with Workspace.open(root) as old:
            post, pre = _scenes(old, tmp_path, "post", "pre")
            old.save_mask_version(post, lambda p: p.write_bytes(b"mask"), parent_id=None, source="import")
    conn = sqlite3.connect(root / "scarp.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()
    with Workspace.open(root) as upgraded:
        assert [s.name for s in upgraded.list_scenes()] == ["post", "pre"]
        assert len(upgraded.list_mask_versions(post)) == 1
        upgraded.link_scene(post, "pre_event", pre)
        assert upgraded.scene_links(post)["pre_event"].name == "pre"
    conn = sqlite3.connect(root / "scarp.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(store_db.MIGRATIONS) >= 2
    conn.close()
