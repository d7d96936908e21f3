"""The Scenes and Predict pages through AppTest on a temporary workspace with real images."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from engine import api

HOME = str(Path(__file__).resolve().parents[1] / "app" / "Home.py")


def open_page(page: str, reviewer: str = "ana") -> AppTest:
    at = AppTest.from_file(HOME, default_timeout=60)
    at.session_state["reviewer"] = reviewer
    at.run()
    at.switch_page(page).run()
    assert not at.exception
    return at


def import_by_path(at: AppTest, path: Path | str) -> AppTest:
    at.text_input(key="w:scenes:path").input(str(path)).run()
    return at.button(key="w:scenes:path-go").click().run()


def text_of(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_scenes_imports_a_server_path_and_lists_it_with_its_facts(workspace, bijie_pair):
    at = open_page("views/scenes.py")
    assert "No scenes yet" in at.info[0].value
    import_by_path(at, bijie_pair[0])
    assert not at.exception
    assert "Imported ls_0000.png as scene 1" in at.success[0].value
    listing = text_of(at)
    assert "1 · ls_0000.png" in listing
    assert "3 bands" in listing and "CRS: none (pixel coordinates)" in listing
    assert len(at.get("image")) == 1  # the thumbnail
    assert [s.label for s in at.selectbox][:5] == ["Bands", "pre event", "dem", "slope", "hillshade"]
    at.selectbox(key="w:scenes:preset:1").set_value("s2_true_colour").run()
    assert not at.exception and "no bands named B4, B3 and B2" in at.warning[0].value
    at.selectbox(key="w:scenes:preset:1").set_value("custom").run()
    at.selectbox(key="w:scenes:band:Green:1").set_value(2).run()
    at.slider(key="w:scenes:stretch:1").set_value((5.0, 95.0)).run()
    assert not at.exception and not at.warning and len(at.get("image")) == 1
    import_by_path(at, bijie_pair[0])
    assert "already in the workspace" in at.info[0].value


def test_scenes_shows_georeferenced_facts_and_links_a_layer(workspace, iburi_post, data_dir):
    with api.open_workspace(workspace) as ws:
        post = api.import_scene(ws, iburi_post).scene
        dem = api.import_scene(ws, data_dir / "iburi_s2" / "dsm.tif").scene
    at = open_page("views/scenes.py")
    listing = text_of(at)
    assert "EPSG:4326" in listing and "Resolution:" in listing and "Bounds (lon/lat): 141." in listing
    at.selectbox(key=f"w:scenes:link:dem:{post.id}").set_value(dem.id).run()
    assert not at.exception
    with api.open_workspace(workspace) as ws:
        assert api.scene_links(ws, post.id)["dem"].id == dem.id


def test_a_bad_path_is_one_line_of_error_and_no_traceback(workspace, tmp_path):
    at = open_page("views/scenes.py")
    import_by_path(at, tmp_path / "missing.tif")
    assert not at.exception
    (error,) = at.error
    assert "missing.tif" in error.value and "\n" not in error.value and "Traceback" not in error.value
    broken = tmp_path / "folder"
    broken.mkdir()
    (broken / "bad.tif").write_bytes(b"not a tiff")
    import_by_path(at, broken)
    assert not at.exception
    assert at.warning[0].value.startswith("Skipped") and "bad.tif" in at.warning[0].value


def test_delete_asks_first(workspace, bijie_pair):
    with api.open_workspace(workspace) as ws:
        scene = api.import_scene(ws, bijie_pair[0]).scene
    at = open_page("views/scenes.py")
    at.button(key=f"w:scenes:delete:{scene.id}").click().run()
    assert "Delete scene 1" in at.warning[0].value
    at.button(key=f"w:scenes:delete-no:{scene.id}").click().run()
    with api.open_workspace(workspace) as ws:
        assert len(api.list_scenes(ws)) == 1
    at.button(key=f"w:scenes:delete:{scene.id}").click().run()
    at.button(key=f"w:scenes:delete-yes:{scene.id}").click().run()
    assert not at.exception
    with api.open_workspace(workspace) as ws:
        assert api.list_scenes(ws) == []
        (event,) = api.activity(ws)
    assert (event.author, event.action, event.subject) == ("ana", "scene deleted", f"scene 1 ({scene.name})")


def test_deleting_a_scene_needs_a_reviewer_name(workspace, bijie_pair):
    with api.open_workspace(workspace) as ws:
        scene = api.import_scene(ws, bijie_pair[0]).scene
    at = open_page("views/scenes.py", reviewer="")
    at.button(key=f"w:scenes:delete:{scene.id}").click().run()
    at.button(key=f"w:scenes:delete-yes:{scene.id}").click().run()
    assert not at.exception, at.exception
    assert "needs a reviewer name" in at.error[0].value
    with api.open_workspace(workspace) as ws:
        assert len(api.list_scenes(ws)) == 1 and api.activity(ws) == []


def test_deleting_a_scene_with_masks_names_them_and_drops_them_only_when_asked(workspace, bijie_pair):
    with api.open_workspace(workspace) as ws:
        scene = api.import_scene(ws, bijie_pair[0], mask=bijie_pair[1]).scene
    at = open_page("views/scenes.py")
    at.button(key=f"w:scenes:delete:{scene.id}").click().run()
    assert "1 mask version (reviewed work)" in at.warning[0].value
    yes = at.button(key=f"w:scenes:delete-yes:{scene.id}")
    assert yes.label == "Delete scene and its 1 mask version"
    yes.click().run()
    assert not at.exception
    with api.open_workspace(workspace) as ws:
        assert api.list_scenes(ws) == [] and ws.summary()["mask_versions"] == 0


def test_predict_without_scenes_shows_an_empty_state(workspace):
    at = open_page("views/predict.py")
    assert "No scenes to map yet" in at.info[0].value
    assert len(at.button) == 0


def test_predict_queues_a_job_per_scene_without_waiting(workspace, bijie_pair, tmp_path):
    with api.open_workspace(workspace) as ws:
        first = api.import_scene(ws, bijie_pair[0]).scene
    at = open_page("views/predict.py")
    assert at.button(key="w:predict:go").disabled  # nothing chosen yet
    at.multiselect(key="w:predict:scenes").select(first.id).run()
    at.selectbox(key="w:predict:model").set_value("unet_r34").run()
    assert "Random weights" in at.warning[0].value
    at.number_input(key="w:predict:tile").set_value(256).run()
    at.checkbox(key="w:predict:tta").check().run()
    at.checkbox(key="w:predict:crf").check().run()
    at.button(key="w:predict:go").click().run()
    assert not at.exception
    assert at.success[0].value.startswith("Queued job 1")
    with api.open_workspace(workspace) as ws:
        (job,) = api.list_jobs(ws)
    assert job.status == "queued"
    chosen = ("scene_id", "model", "tile", "tta", "crf")
    assert tuple(job.params[k] for k in chosen) == (first.id, "unet_r34", 256, True, True)


def test_the_demo_folder_is_found_beside_the_repository(data_dir, monkeypatch):
    monkeypatch.delenv("SCARP_DEMO_DIR", raising=False)
    assert api.find_demo_dir().resolve() == data_dir.resolve()


def test_train_page_without_corrections_shows_the_way(workspace):
    at = open_page("views/train.py")
    assert not at.exception and "No corrected scenes yet" in at.info[0].value


def test_train_page_queues_a_fine_tune_and_shows_its_scores(workspace, bijie_pair, tiny_bijie):
    from engine.io.masks import read_mask
    from engine.io.raster import describe
    from engine.io.writers import write_raster

    with api.open_workspace(workspace) as ws:
        scene = api.import_scene(ws, bijie_pair[0]).scene
        truth = (read_mask(bijie_pair[1]) > 0).astype("uint8")
        d = describe(scene.path)
        ws.save_mask_version(
            scene.id, lambda p: write_raster(p, truth, d), parent_id=None, source="correction", author="ana"
        )
    at = open_page("views/train.py")
    assert at.multiselect(key="w:train:scenes").value == [scene.id]
    at.number_input(key="w:train:epochs").set_value(1).run()
    at.text_input(key="w:train:val-folder").input(str(tiny_bijie)).run()
    at.button(key="w:train:go").click().run()
    assert not at.exception, at.exception
    with api.open_workspace(workspace) as ws:
        (job,) = api.list_jobs(ws)
    assert job.kind == "train" and job.params["epochs"] == 1 and job.params["scene_ids"] == [scene.id]
    assert "Training job 1" in [h.value for h in at.subheader]
    from engine.jobs import HANDLERS
    from engine.jobs_worker import execute_job

    execute_job(workspace, job.id, HANDLERS)  # as the worker would
    at.run()
    assert not at.exception, at.exception
    assert at.success[0].value.startswith("Registered")
    assert [m.label for m in at.metric] == ["mIoU", "landslide IoU", "F1"] and "vs base" in at.metric[0].delta
    at.button(key="w:train:set-default:1").click().run()
    with api.open_workspace(workspace) as ws:
        assert api.default_model(ws).id == 1
        job = api.submit_prediction(ws, scene.id)  # `default` now means the workspace default
        assert job.params["model"] == str(api.default_model(ws).checkpoint_path)
