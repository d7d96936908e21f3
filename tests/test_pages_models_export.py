"""The Models and Export pages through AppTest on a temporary workspace with real images and checkpoints."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio
import pytest
from PIL import Image
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from engine import api
from engine.io.raster import describe
from engine.io.writers import write_raster
from engine.models.shipped import ASSETS, default_name, shipped_names

ROOT = Path(__file__).resolve().parents[1]
HOME = str(ROOT / "app" / "Home.py")
SHIPPED = ROOT / "assets" / "models" / "kda_student_bijie.safetensors"


def open_page(page: str, reviewer: str = "ana") -> AppTest:
    at = AppTest.from_file(HOME, default_timeout=90)
    at.session_state["reviewer"] = reviewer
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def register(ws, name: str, **kwargs):
    """A model version on a copy of the shipped KDA checkpoint and its card in the workspace's models/."""
    target = ws.root / "models" / f"{name}.safetensors"
    target.parent.mkdir(exist_ok=True)
    shutil.copyfile(SHIPPED, target)
    shutil.copyfile(SHIPPED.with_suffix(".json"), target.with_suffix(".json"))
    return ws.add_model(name, "kda_student", {"epochs": 1}, target, **kwargs)


@pytest.fixture
def lineage(workspace):
    """base → tuned (a fine-tune with a snapshot and before/after scores) → leaf."""
    with api.open_workspace(workspace) as ws:
        base = register(ws, "base", metrics={"miou": 0.7})
        tuned = register(
            ws, "tuned", parent_id=base.id,
            training_snapshot={"mask_version_ids": {"1": 3}, "dataset": "bijie", "mode": "finetune"},
            metrics={"before": {"miou": 0.7}, "after": {"miou": 0.745}, "best_epoch": 2},
        )  # fmt: skip
        leaf = register(ws, "leaf", parent_id=tuned.id)
    return base, tuned, leaf


def table(at: AppTest):
    return at.dataframe[0].value.set_index("Name")


def pick_version(at: AppTest, model_id: int) -> AppTest:
    return at.selectbox(key="w:models:version").set_value(model_id).run()


def test_models_table_shows_lineage_scores_data_and_the_shipped_default(lineage):
    at = open_page("views/models.py")
    rows = table(at)
    assert list(rows.index[:3]) == ["base", "tuned", "leaf"]
    assert rows.loc["tuned", "Parent"] == "base" and rows.loc["leaf", "Parent"] == "tuned"
    assert rows.loc[["base", "kda_student_l4s"], ["Parent"]].isna().all(axis=None)
    assert pd.isna(rows.loc["base", "Training data"])
    # shipped checkpoints as their cards describe them
    assert rows.loc["kda_student_bijie", "Architecture"] == "kda_student"
    card = json.loads((ASSETS / "kda_student_bijie.json").read_text())
    assert rows.loc["kda_student_bijie", "Val. mIoU (%)"] == pytest.approx(100 * card["metrics"]["miou"])
    assert rows.loc["kda_student_bijie", "Training data"] == "../shared/data/bijie · val"
    assert rows.loc["tuned", "Val. mIoU (%)"] == pytest.approx(74.5)
    assert rows.loc["tuned", "Before → after"] == "70.00 → 74.50 (+4.50)"
    assert rows.loc["tuned", "Training data"] == "scenes 1 (mask v3) · dataset bijie · mode finetune"
    assert rows.loc["base", "Val. mIoU (%)"] == pytest.approx(70.0)
    # the shipped checkpoints are listed read-only; with no workspace default the shipped default is marked
    assert rows.loc["kda_student_l4s", "Source"] == "shipped (read-only)"
    shipped = {name: name == default_name() for name in shipped_names()}
    assert default_name() == "kda_student_bijie" and len(shipped) >= 2
    assert rows["Default"].to_dict() == {"base": False, "tuned": False, "leaf": False, **shipped}


def test_set_as_default_is_one_click(workspace, lineage):
    _, tuned, _ = lineage
    at = pick_version(open_page("views/models.py"), tuned.id)
    at.button(key=f"w:models:set-default:{tuned.id}").click().run()
    assert not at.exception, at.exception
    assert [name for name, default in table(at)["Default"].items() if default] == ["tuned"]
    assert at.button(key=f"w:models:set-default:{tuned.id}").disabled
    with api.open_workspace(workspace) as ws:
        assert api.default_model(ws).id == tuned.id


def test_rename_and_a_taken_name_is_one_line_of_error(lineage):
    base, tuned, _ = lineage
    at = pick_version(open_page("views/models.py"), tuned.id)
    at.text_input(key=f"w:models:new-name:{tuned.id}").input("  tuned-v2 ")  # sent with the form
    at.button(key=f"w:models:rename:{tuned.id}").click().run()
    assert not at.exception, at.exception
    rows = table(at)
    assert "tuned-v2" in rows.index and "tuned" not in rows.index
    assert rows.loc["leaf", "Parent"] == "tuned-v2"
    at.text_input(key=f"w:models:new-name:{tuned.id}").input("base")
    at.button(key=f"w:models:rename:{tuned.id}").click().run()
    assert not at.exception
    assert f"is already used by model {base.id}" in at.error[0].value
    assert "tuned-v2" in table(at).index


def test_delete_asks_first_and_the_default_cannot_be_deleted(lineage):
    base, _, leaf = lineage
    at = pick_version(open_page("views/models.py"), leaf.id)
    delete = f"w:models:delete:{leaf.id}"
    assert at.button(key=delete).disabled  # nothing happens before the confirmation
    at.checkbox(key=f"w:models:confirm-delete:{leaf.id}").check().run()
    assert not at.button(key=delete).disabled
    at.button(key=delete).click().run()
    assert not at.exception, at.exception
    assert "leaf" not in table(at).index and not leaf.checkpoint_path.exists()

    at.button(key=f"w:models:set-default:{base.id}").click().run()  # the selection fell back to base
    at.checkbox(key=f"w:models:confirm-delete:{base.id}").check().run()
    at.button(key=f"w:models:delete:{base.id}").click().run()
    assert not at.exception
    assert "cannot be deleted: it is the workspace default" in at.error[0].value
    assert "base" in table(at).index and base.checkpoint_path.exists()


def _add_prediction(ws, scene_id: int, image: Path, prob: np.ndarray, model: str) -> int:
    d = describe(image)
    return ws.add_prediction(scene_id, model, {"tile": 256}, lambda p: write_raster(p, prob, d)).id


def test_compare_two_predictions_shows_the_fraction_and_the_map(workspace, bijie_pair):
    image = bijie_pair[0]
    d = describe(image)
    ramp = np.tile(np.linspace(0, 1, d.width, dtype=np.float32), (d.height, 1))
    with api.open_workspace(workspace) as ws:
        scene = api.import_scene(ws, image).scene
        first = _add_prediction(ws, scene.id, image, ramp, "model-a")
        second = _add_prediction(ws, scene.id, image, np.full_like(ramp, 0.9), "model-b")
    at = open_page("views/models.py")
    assert "No trained versions" in at.info[0].value
    a = at.selectbox(key=f"w:models:a:{scene.id}")
    assert a.value == second  # newest first
    assert not at.metric  # nothing is computed before B is chosen
    a.set_value(first).run()
    at.selectbox(key=f"w:models:b:{scene.id}").set_value(second).run()
    assert not at.exception, at.exception
    expected = float((ramp < 0.5).mean())  # B calls everything landslide, A only where the ramp is ≥ 0.5
    assert 0.4 < expected < 0.6
    assert at.metric[0].value == f"{100 * expected:.2f} %"
    with api.open_workspace(workspace) as ws:  # what the map draws (st_folium itself needs a browser)
        layers = api.disagreement_layers(ws, api.compare_predictions(ws, first, second))
    assert "model-a vs model-b" in layers.caption and "landslide only in model-b" in layers.legend
    rgba = np.asarray(Image.open(io.BytesIO(layers.layers["disagreement"].png)))
    only_b = (rgba[..., 3] > 0) & (rgba[..., 0] == 156)
    assert abs(only_b.mean() - expected) < 0.02 and not ((rgba[..., 3] > 0) & (rgba[..., 0] == 255)).any()


def test_compare_needs_two_predictions(workspace, bijie_pair):
    with api.open_workspace(workspace) as ws:
        scene = api.import_scene(ws, bijie_pair[0]).scene
        d = describe(bijie_pair[0])
        _add_prediction(ws, scene.id, bijie_pair[0], np.zeros((d.height, d.width), np.float32), "model-a")
    at = open_page("views/models.py")
    assert "has 1 prediction(s): run another model on Predict" in at.info[-1].value


def test_export_empty_states_point_to_scenes_and_predict(workspace, iburi_post):
    at = open_page("views/export.py")
    assert "Scenes page" in at.info[0].value and not at.download_button
    with api.open_workspace(workspace) as ws:
        api.import_scene(ws, iburi_post, copy=False)
    at.run()
    assert not at.exception
    assert "no mask yet" in at.info[0].value and "Predict page" in at.info[0].value


@pytest.fixture
def downloads(monkeypatch) -> dict[str, tuple[bytes, str]]:
    """What the download buttons hand to Streamlit's media file manager: file name → (data, mime)."""
    seen: dict[str, tuple[bytes, str]] = {}
    add = MediaFileManager.add

    def record(self, data, mimetype, coordinates, file_name=None, is_for_static_download=False):
        if is_for_static_download:
            seen[file_name] = (data, mimetype)
        return add(self, data, mimetype, coordinates, file_name, is_for_static_download)

    monkeypatch.setattr(MediaFileManager, "add", record)
    return seen


def test_export_offers_every_file_of_the_chosen_mask_version(workspace, iburi_post, downloads, tmp_path):
    d = describe(iburi_post)
    one = np.zeros((d.height, d.width), dtype=np.uint8)
    one[100:160, 200:300] = 1
    two = one.copy()
    two[300:340, 400:450] = 1
    with api.open_workspace(workspace) as ws:
        scene = api.import_scene(ws, iburi_post, copy=False).scene
        prob = np.where(two > 0, 0.9, 0.1).astype(np.float32)
        prediction = _add_prediction(ws, scene.id, iburi_post, prob, "model-a")
        v1 = ws.save_mask_version(
            scene.id, lambda p: write_raster(p, one, d), parent_id=None, source="prediction",
            prediction_id=prediction,
        )  # fmt: skip
        v2 = ws.save_mask_version(
            scene.id, lambda p: write_raster(p, two, d), parent_id=v1.id, source="correction", author="ana"
        )
    at = open_page("views/export.py")
    assert at.selectbox(key=f"w:export:mask:{scene.id}").value == v2.id  # the latest
    assert [b.label for b in at.download_button] == [
        "GeoPackage inventory", "GeoJSON inventory (EPSG:4326)", "CSV summary", "Map figure",
        "Mask (Cloud-Optimized GeoTIFF)",
    ]  # fmt: skip
    assert at.metric[0].value == "2"
    stem = f"post_event_S2_RGB_B4B3B2_mask{v2.id}"
    gpkg, mime = downloads[f"{stem}_landslides.gpkg"]
    assert mime == "application/geopackage+sqlite3" and gpkg.startswith(b"SQLite format 3\x00")
    (tmp_path / "out.gpkg").write_bytes(gpkg)
    meta, _, wkb, columns = pyogrio.raw.read(tmp_path / "out.gpkg", layer="landslides")
    fields = dict(zip(meta["fields"], columns, strict=True))
    assert len(wkb) == 2 and meta["crs"] == "EPSG:4326"
    assert set(fields["status"]) == {"corrected"} and set(fields["reviewer"]) == {"ana"}
    geojson = json.loads(downloads[f"{stem}_landslides.geojson"][0])
    assert len(geojson["features"]) == 2
    rows = list(csv.DictReader(io.StringIO(downloads[f"{stem}_landslides.csv"][0].decode())))
    assert len(rows) == 2 and [r["reviewer"] for r in rows] == ["ana", "ana"]
    area = float(fields["area_m2"].sum())
    assert sum(float(r["area_m2"]) for r in rows) == pytest.approx(area, abs=0.5)
    assert at.metric[1].value == (f"{area / 1e6:.3f} km²" if area >= 1e5 else f"{area:,.0f} m²")
    png = downloads[f"{stem}_map.png"][0]
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert downloads[f"{stem}.tif"][0][:4] in (b"II*\x00", b"MM\x00*")
    assert len(at.get("image")) == 1  # the map figure's preview

    at.selectbox(key=f"w:export:mask:{scene.id}").set_value(v1.id).run()
    assert not at.exception, at.exception
    assert at.metric[0].value == "1"
    csv_v1 = downloads[f"post_event_S2_RGB_B4B3B2_mask{v1.id}_landslides.csv"][0].decode()
    (row,) = csv.DictReader(io.StringIO(csv_v1))
    assert row["status"] == "predicted" and row["reviewer"] == "" and row["model_version"] == "model-a"


def test_model_changes_need_a_reviewer_name_and_are_listed_with_it(workspace, lineage):
    _, tuned, _ = lineage
    at = pick_version(open_page("views/models.py", reviewer=""), tuned.id)
    at.button(key=f"w:models:set-default:{tuned.id}").click().run()
    assert not at.exception, at.exception
    assert "needs a reviewer name" in at.error[0].value
    with api.open_workspace(workspace) as ws:
        assert api.default_model(ws) is None and api.activity(ws) == []
    at = pick_version(open_page("views/models.py", reviewer="Ana Costa"), tuned.id)
    at.button(key=f"w:models:set-default:{tuned.id}").click().run()
    at.text_input(key=f"w:models:new-name:{tuned.id}").input("tuned-v2")
    at.button(key=f"w:models:rename:{tuned.id}").click().run()
    assert not at.exception, at.exception
    activity = at.dataframe[-1].value
    assert activity[["Who", "What", "Detail"]].values.tolist() == [
        ["Ana Costa", "model renamed", "tuned → tuned-v2"],
        ["Ana Costa", "default model set", ""],
    ]
    assert str(activity["When (UTC)"].dt.tz) == "UTC"  # the column says which clock it shows
