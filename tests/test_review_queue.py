"""The review queue (ranking, statuses, navigation, migration 3) and the models registry operations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
import rasterio

from engine import review_queue
from engine.api import _queue as api_queue
from engine.errors import InputError, NotFoundError
from engine.io.raster import describe, open_scene
from engine.io.writers import write_raster
from engine.store import Workspace, atomic_write_bytes
from engine.store import db as store_db

NAN = float("nan")


def _prediction(ws: Workspace, scene_id: int, prob: np.ndarray, like) -> int:
    prob = prob.astype(np.float32)
    return ws.add_prediction(scene_id, "unet-test", {}, lambda p: write_raster(p, prob, like, nodata=NAN)).id


def _entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-12, 1 - 1e-12)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


@pytest.fixture
def iburi(ws: Workspace, iburi_post: Path):
    """The real Iburi post-event scene, referenced in place, and its descriptor."""
    d = describe(iburi_post)
    return ws.add_scene(iburi_post, d.to_dict(), copy=False), d


@pytest.fixture
def bijie(ws: Workspace, bijie_pair: tuple[Path, Path]):
    d = describe(bijie_pair[0])
    return ws.add_scene(bijie_pair[0], d.to_dict(), copy=False), d


def _windowed(d, tile: int, values: dict[tuple[int, int], float], background: float) -> np.ndarray:
    prob = np.full((d.height, d.width), background, dtype=np.float32)
    for (row, col), value in values.items():
        prob[row : row + tile, col : col + tile] = value
    return prob


def test_entropy_ranks_uncertain_tiles_first(ws: Workspace, iburi) -> None:
    scene, d = iburi
    assert (d.width, d.height) == (1533, 970)
    prob = _windowed(d, 256, {(256, 512): 0.5, (0, 0): 0.99, (512, 256): 0.3, (768, 1280): NAN}, 0.01)
    path = ws.get_prediction(_prediction(ws, scene.id, prob, d)).raster_path
    tiles = review_queue.rank_tiles_by_entropy(path, 256)
    assert (tiles[0].row, tiles[0].col, tiles[0].score) == (256, 512, pytest.approx(1.0))
    assert (tiles[1].row, tiles[1].col) == (512, 256)
    assert tiles[1].score == pytest.approx(_entropy(np.array([0.3]))[0], rel=1e-5)
    assert tiles[0].score > tiles[1].score > tiles[-1].score and tiles[-1].score < 0.1
    assert (768, 1280) not in {(t.row, t.col) for t in tiles}  # all nodata: nothing to review
    assert len(tiles) == 4 * 6 - 1
    by_place = {(t.row, t.col): t for t in tiles}
    assert (by_place[768, 1024].height, by_place[768, 1024].width) == (970 - 768, 256)  # edge tiles shrink
    assert (by_place[0, 1280].height, by_place[0, 1280].width) == (256, 1533 - 1280)


def test_scores_match_a_whole_array_computation_on_real_pixels(
    ws: Workspace, iburi, iburi_post: Path
) -> None:
    scene, d = iburi
    with rasterio.open(iburi_post) as ds:
        red = ds.read(1).astype(np.float32)
    prob = (red - red.min()) / (red.max() - red.min())  # a real, uneven probability surface
    prob[:40, :60] = np.nan
    path = ws.get_prediction(_prediction(ws, scene.id, prob, d)).raster_path
    whole = review_queue.scene_entropy(path)
    valid = np.isfinite(prob)
    assert whole.valid == int(valid.sum()) and (whole.height, whole.width) == (970, 1533)
    assert whole.score == pytest.approx(_entropy(prob[valid]).mean(), rel=1e-6)
    tiles = review_queue.rank_tiles_by_entropy(path, 300)
    assert [t.score for t in tiles] == sorted((t.score for t in tiles), reverse=True)
    for t in tiles[:3] + tiles[-2:]:
        window = prob[t.row : t.row + t.height, t.col : t.col + t.width]
        assert t.score == pytest.approx(_entropy(window[np.isfinite(window)]).mean(), rel=1e-5)


def test_disagreement_counts_changed_calls_not_confidence(ws: Workspace, iburi) -> None:
    scene, d = iburi
    a = _windowed(d, 256, {(0, 256): 0.6, (256, 0): 0.9}, 0.1)
    b = a.copy()
    b[0:256, 256:512] = 0.99  # same call (landslide), more confident: no disagreement
    b[256:384, 0:256] = 0.2  # half of this tile flips to background
    b[700:710, 1000:1010] = 0.7  # 100 px flip to landslide
    pa, pb = (ws.get_prediction(_prediction(ws, scene.id, p, d)).raster_path for p in (a, b))
    tiles = review_queue.rank_tiles_by_disagreement(pa, pb, 256)
    assert (tiles[0].row, tiles[0].col, tiles[0].score) == (256, 0, pytest.approx(0.5))
    assert (tiles[1].row, tiles[1].col, tiles[1].score) == (512, 768, pytest.approx(100 / 256**2))
    assert next(t for t in tiles if (t.row, t.col) == (0, 256)).score == 0.0
    whole = review_queue.scene_disagreement(pa, pb)
    assert whole.score == pytest.approx((128 * 256 + 100) / (970 * 1533))


def test_ranking_refuses_bad_input(ws: Workspace, iburi, bijie) -> None:
    (big, d_big), (small, d_small) = iburi, bijie
    pa = ws.get_prediction(_prediction(ws, big.id, np.zeros((970, 1533)), d_big)).raster_path
    pb = ws.get_prediction(_prediction(ws, small.id, np.zeros((94, 121)), d_small)).raster_path
    with pytest.raises(InputError, match="same scene"):
        review_queue.rank_tiles_by_disagreement(pa, pb, 64)
    with pytest.raises(InputError, match="tile size"):
        review_queue.rank_tiles_by_entropy(pa, 8)
    with pytest.raises(InputError, match="not a probability raster"):
        review_queue.rank_tiles_by_entropy(d_big.path, 256)  # the uint8 image itself


def _bijie_queue(ws: Workspace, bijie, values: dict[tuple[int, int], float]) -> tuple[int, list]:
    scene, d = bijie
    prediction = _prediction(ws, scene.id, _windowed(d, 32, values, 0.02), d)
    return prediction, review_queue.build_queue(ws, scene.id, "entropy", 32, [prediction])


def test_statuses_progress_and_navigation(ws: Workspace, bijie) -> None:
    scene, _ = bijie
    _, items = _bijie_queue(ws, bijie, {(32, 64): 0.5, (0, 0): 0.3, (64, 32): 0.15})
    assert len(items) == 3 * 4 and [i.row for i in items[:3]] == [32, 0, 64]
    assert api_queue.review_progress(ws) == {
        "todo": 12,
        "accepted": 0,
        "corrected": 0,
        "rejected": 0,
        "total": 12,
    }
    first, second, third = items[:3]
    done = api_queue.set_review_status(ws, first.id, "corrected", "  ana ")
    assert (done.status, done.reviewer) == ("corrected", "ana") and done.updated is not None
    assert first.updated is None
    api_queue.set_review_status(ws, third.id, "rejected", "ben")
    with pytest.raises(InputError, match="review status 'done'"):
        ws.set_review_status(second.id, "done")
    with pytest.raises(NotFoundError):
        ws.set_review_status(99999, "accepted")
    assert ws.get_review_item(second.id).status == "todo"
    progress = api_queue.review_progress(ws, [scene.id])
    assert (progress["corrected"], progress["rejected"], progress["todo"], progress["total"]) == (
        1,
        1,
        10,
        12,
    )
    todo = [i.id for i in api_queue.review_items(ws, status="todo")]
    assert todo == [i.id for i in items if i.id not in (first.id, third.id)]

    assert api_queue.next_review_item(ws, None).id == first.id
    assert api_queue.next_review_item(ws, first.id).id == second.id
    assert api_queue.next_review_item(ws, second.id, status="todo").id == items[3].id  # skips the rejected
    assert api_queue.previous_review_item(ws, items[3].id, status="todo").id == second.id
    assert api_queue.previous_review_item(ws, items[3].id).id == third.id
    assert api_queue.previous_review_item(ws, first.id) is None
    assert api_queue.next_review_item(ws, items[-1].id) is None
    assert api_queue.previous_review_item(ws, None).id == items[-1].id
    assert api_queue.next_review_item(ws, None, status="accepted") is None
    with pytest.raises(NotFoundError):
        api_queue.next_review_item(ws, first.id, scene_ids=[scene.id + 1])


def test_rebuild_keeps_statuses_of_the_same_tiles(ws: Workspace, bijie) -> None:
    scene, _ = bijie
    _, items = _bijie_queue(ws, bijie, {(32, 64): 0.5})
    top = items[0]
    assert (top.row, top.col) == (32, 64)
    ws.set_review_status(top.id, "accepted", "ana")
    ws.set_review_status(items[5].id, "rejected", "ben")
    newer, rebuilt = _bijie_queue(ws, bijie, {(0, 0): 0.5})  # a new prediction ranks another tile first
    assert (rebuilt[0].row, rebuilt[0].col, rebuilt[0].prediction_id) == (0, 0, newer)
    assert len(rebuilt) == len(items) and {i.id for i in rebuilt} == {i.id for i in items}
    assert {i.id: i.status for i in rebuilt if i.status != "todo"} == {
        top.id: "accepted",
        items[5].id: "rejected",
    }
    assert ws.get_review_item(top.id).reviewer == "ana" and ws.get_review_item(top.id).score < 0.2
    coarser = review_queue.build_queue(ws, [scene.id], tile=64)  # a new tiling is a new queue
    assert len(coarser) == 2 * 2 and {i.status for i in coarser} == {"todo"}
    assert ws.review_progress()["total"] == 4


def test_scene_level_ranking_and_disagreement_queue(ws: Workspace, iburi, bijie) -> None:
    (big, d_big), (small, d_small) = iburi, bijie
    _prediction(ws, big.id, np.full((970, 1533), 0.97), d_big)
    _prediction(ws, small.id, np.full((94, 121), 0.45), d_small)
    scenes = api_queue.build_review_queue(ws, [big.id, small.id], "entropy", tile=None)
    assert [(i.scene_id, i.row, i.col, i.height, i.width) for i in scenes] == [
        (small.id, 0, 0, 94, 121),
        (big.id, 0, 0, 970, 1533),
    ]
    assert scenes[0].score > 0.99 > 0.2 > scenes[1].score
    with pytest.raises(InputError, match="needs 2 different prediction"):
        api_queue.build_review_queue(ws, small.id, "disagreement", tile=32)
    flipped = np.full((94, 121), 0.45)
    flipped[:32, :32] = 0.55
    other = _prediction(ws, small.id, flipped, d_small)
    queue = api_queue.build_review_queue(ws, small.id, "disagreement", tile=32)
    assert (queue[0].row, queue[0].col, queue[0].score, queue[0].method) == (0, 0, 1.0, "disagreement")
    assert queue[0].other_prediction_id == other and all(i.score == 0 for i in queue[1:])
    with pytest.raises(InputError, match="not being queued"):
        api_queue.build_review_queue(ws, small.id, "entropy", predictions=[ws.list_predictions(big.id)[0].id])
    with pytest.raises(InputError, match="review method"):
        api_queue.build_review_queue(ws, small.id, "variance")


def test_compare_predictions_writes_a_disagreement_raster(ws: Workspace, bijie) -> None:
    scene, d = bijie
    a = np.full((94, 121), 0.2)
    b = a.copy()
    b[10:20, 30:40] = 0.8
    a[50:60, 0:5] = 0.9
    b[90:, :] = np.nan
    first, second = _prediction(ws, scene.id, a, d), _prediction(ws, scene.id, b, d)
    result = api_queue.compare_predictions(ws, first, second, max_side=60)
    assert result.path.parent == ws.root / "tmp" and result.path.is_file()
    with open_scene(result.path) as written:
        codes = written.read()[0]
    assert codes[15, 35] == review_queue.ONLY_B and codes[55, 2] == review_queue.ONLY_A
    assert codes[0, 0] == review_queue.AGREE and (codes[90:] == review_queue.NO_DATA).all()
    assert result.disagreement == pytest.approx((100 + 50) / (90 * 121))
    assert max(result.preview.shape) == 60 and set(np.unique(result.preview)) <= {0, 1, 2, 255}


def test_deleting_a_scene_drops_its_review_items(ws: Workspace, iburi, bijie) -> None:
    (big, d_big), (small, _) = iburi, bijie
    _bijie_queue(ws, bijie, {(0, 0): 0.5})
    _prediction(ws, big.id, np.full((970, 1533), 0.5), d_big)
    review_queue.build_queue(ws, big.id, tile=512)
    assert {i.scene_id for i in ws.review_items()} == {big.id, small.id}
    ws.delete_scene(small.id)
    assert {i.scene_id for i in ws.review_items()} == {big.id}
    assert ws.review_progress() == {"todo": 6, "accepted": 0, "corrected": 0, "rejected": 0, "total": 6}
    assert ws.integrity_check() == "ok"


def test_migrates_a_v2_workspace(tmp_path: Path, bijie_pair: tuple[Path, Path], monkeypatch) -> None:
    root = tmp_path / "old"
    d = describe(bijie_pair[0])
    with monkeypatch.context() as patch:
        patch.setattr(store_db, "MIGRATIONS", store_db.MIGRATIONS[:2])
        with Workspace.open(root) as old:
            scene = old.add_scene(bijie_pair[0], d.to_dict(), copy=False)
            prediction = _prediction(old, scene.id, np.full((94, 121), 0.5), d)
            atomic_write_bytes(root / "models" / "m.safetensors", b"w")
            model = old.add_model("m", "unet", {}, "models/m.safetensors")
    with sqlite3.connect(root / "scarp.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'review_items'").fetchall()
    with Workspace.open(root) as upgraded:
        assert upgraded.default_model() is None
        assert upgraded.set_default_model(model.id, author="ana").name == "m"
        assert [(a.author, a.action) for a in upgraded.activity()] == [("ana", "default model set")]
        items = review_queue.build_queue(upgraded, scene.id, tile=64)
        assert len(items) == 4 and items[0].prediction_id == prediction
        assert upgraded.integrity_check() == "ok"
    with sqlite3.connect(root / "scarp.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(store_db.MIGRATIONS)


def test_model_rename_delete_and_default(ws: Workspace) -> None:
    ckpt = ws.root / "models" / "base.safetensors"
    atomic_write_bytes(ckpt, b"weights")
    base = ws.add_model("base", "kda", {}, ckpt)
    child = ws.add_model("tuned", "kda", {}, ckpt, parent_id=base.id)
    other = ws.add_model("other", "kda", {}, ckpt)
    assert api_queue.default_model(ws) is None
    assert api_queue.rename_model(ws, child.id, " tuned-v2 ").name == "tuned-v2"
    with pytest.raises(InputError, match="already used by model"):
        api_queue.rename_model(ws, other.id, "tuned-v2")
    with pytest.raises(InputError, match="must not be empty"):
        api_queue.rename_model(ws, other.id, "  ")
    assert api_queue.set_default_model(ws, other.id) == ws.get_model(other.id)
    assert api_queue.default_model(ws).name == "other"
    with pytest.raises(
        InputError, match=r"model \d+ \(other\): cannot be deleted: it is the workspace default"
    ):
        api_queue.delete_model(ws, other.id)
    with pytest.raises(InputError, match=r"model \d+ \(tuned-v2\) was trained from it"):
        api_queue.delete_model(ws, base.id)
    with pytest.raises(NotFoundError):
        api_queue.set_default_model(ws, 999)
    assert api_queue.default_model(ws).id == other.id  # a refused change changes nothing
    api_queue.set_default_model(ws, base.id)
    api_queue.delete_model(ws, other.id)
    api_queue.delete_model(ws, child.id)
    assert [m.name for m in ws.list_models()] == ["base"] and ckpt.exists()
    assert api_queue.set_default_model(ws, None) is None and api_queue.default_model(ws) is None
    api_queue.delete_model(ws, base.id)
    assert ws.list_models() == [] and not ckpt.exists()
    assert ws.integrity_check() == "ok"
