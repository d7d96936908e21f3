"""The app's frame (navigation, sidebar, Home, the job panel) through AppTest, and the api functions the
pages call (scene facts, thumbnails, uploads, the model menu, the one-click demo) directly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from engine import api
from engine.errors import InputError, ScarpError

HOME = str(Path(__file__).resolve().parents[1] / "app" / "Home.py")


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A fresh workspace for the app; no worker process is started (ensure_worker is replaced)."""
    monkeypatch.setenv("SCARP_WORKSPACE", str(tmp_path / "ws"))
    started: list[Path] = []
    monkeypatch.setattr(api, "ensure_worker", lambda ws: started.append(ws.root) or 0)
    from app import services

    services.workspace.clear()
    yield tmp_path / "ws"
    services.workspace.clear()


@pytest.fixture
def no_default_model(tmp_path, monkeypatch):
    """Whatever assets/models/ holds, the default model is absent (as on a fresh clone)."""
    from engine.models import shipped

    monkeypatch.setattr(shipped, "ASSETS", tmp_path / "no-assets")
    monkeypatch.setattr(shipped, "INDEX", tmp_path / "no-assets" / "index.json")


def run_job(root: Path, job_id: int) -> None:
    """Run a queued job in this process, as the worker would."""
    from engine.jobs import HANDLERS
    from engine.jobs_worker import execute_job

    execute_job(root, job_id, HANDLERS)


# --- the app ----------------------------------------------------------------------------------------


def test_home_on_an_empty_workspace(workspace):
    at = AppTest.from_file(HOME, default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Scarp"
    assert [m.value for m in at.metric] == ["0", "0", "0", "0"]
    assert "No scenes yet" in at.info[0].value
    assert str(workspace) in at.sidebar.code[0].value


def test_home_counts_and_sidebar_keeps_the_reviewer(workspace, bijie_pair):
    with api.open_workspace(workspace) as ws:
        api.import_scene(ws, bijie_pair[0], mask=bijie_pair[1])
    at = AppTest.from_file(HOME, default_timeout=60).run()
    assert not at.exception
    assert [m.value for m in at.metric][:2] == ["1", "1"]
    assert at.sidebar.text_input[0].label == "Reviewer"
    at.sidebar.text_input[0].input("Ana").run()
    # On reruns of an st.navigation app AppTest shows only the page's own elements (not the shared
    # sidebar or job panel), so those are checked on first runs.
    at.switch_page("views/predict.py").run()
    assert not at.exception and at.title[0].value == "Predict"


def test_job_panel_shows_progress_cancel_and_failures_in_words(workspace, bijie_pair):
    with api.open_workspace(workspace) as ws:
        scene = api.import_scene(ws, bijie_pair[0]).scene
        queued = api.submit_prediction(ws, scene.id, model="no_such_model")
        failing = api.submit_prediction(ws, scene.id, model="no_such_model")
    run_job(workspace, failing.id)
    at = AppTest.from_file(HOME, default_timeout=60).run()
    assert not at.exception
    assert at.subheader[-1].value == "Jobs"
    assert "waiting for the worker" in at.get("progress")[0].proto.text
    assert "no_such_model" in at.error[0].value and "Traceback" not in at.error[0].value
    at.button(key=f"w:cancel-job:{queued.id}").click().run()
    with api.open_workspace(workspace) as ws:
        assert api.job_status(ws, queued.id).status == "cancelled"
    at = AppTest.from_file(HOME, default_timeout=60).run()
    assert len(at.get("progress")) == 0
    at.button(key=f"w:retry-job:{failing.id}").click().run()
    with api.open_workspace(workspace) as ws:
        assert len(api.list_jobs(ws, "queued")) == 1  # the retry


def test_two_tabs_see_the_same_job_states(workspace, bijie_pair):
    with api.open_workspace(workspace) as ws:
        scene = api.import_scene(ws, bijie_pair[0]).scene
        job = api.submit_prediction(ws, scene.id, model="no_such_model")
    tab_a = AppTest.from_file(HOME, default_timeout=60).run()
    tab_b = AppTest.from_file(HOME, default_timeout=60).run()
    for tab in (tab_a, tab_b):
        assert "waiting for the worker" in tab.get("progress")[0].proto.text
    tab_a.button(key=f"w:cancel-job:{job.id}").click().run()
    tab_b = AppTest.from_file(HOME, default_timeout=60).run()  # the next poll of the other tab
    assert len(tab_b.get("progress")) == 0
    with api.open_workspace(workspace) as ws:
        assert api.job_status(ws, job.id).status == "cancelled"


def test_demo_button_queues_and_a_missing_default_model_is_shown(
    workspace, data_dir, no_default_model, monkeypatch
):
    monkeypatch.setenv("SCARP_DEMO_DIR", str(data_dir))
    at = AppTest.from_file(HOME, default_timeout=60).run()
    at.button(key="w:home:demo").click().run()
    assert not at.exception
    with api.open_workspace(workspace) as ws:
        (job,) = api.list_jobs(ws)
    run_job(workspace, job.id)
    at.run()
    assert not at.exception
    assert any("no default model is shipped" in e.value for e in at.error)


# --- the api the pages use --------------------------------------------------------------------------


def test_scene_info_and_thumbnail(tmp_path, iburi_post):
    with api.open_workspace(tmp_path / "ws") as ws:
        scene = api.import_scene(ws, iburi_post).scene
        info = api.scene_info(scene)
        d = scene.descriptor
        assert (info.width, info.height, len(info.bands)) == (d["width"], d["height"], 3)
        assert info.crs and info.resolution_m and info.lonlat_bounds
        west, south, east, north = info.lonlat_bounds
        assert 141 < west < east < 143 and 42 < south < north < 43  # Iburi, Hokkaido
        image = api.scene_thumbnail(ws, scene.id, max_side=64)
        assert image.dtype == np.uint8 and image.shape[2] == 3 and max(image.shape[:2]) == 64
        grey = api.scene_thumbnail(ws, scene.id, bands=(0, 0, 0), max_side=64, low=0, high=100)
        assert np.array_equal(grey[..., 0], grey[..., 1])


def test_import_upload_sanitises_the_name_and_leaves_no_temp_file(tmp_path, bijie_pair):
    with api.open_workspace(tmp_path / "ws") as ws:
        result = api.import_upload(ws, "../../évil name.png", bijie_pair[0].read_bytes())
        assert result.scene.name == "evil_name.png"
        assert not list((ws.root / "tmp").iterdir())
        with pytest.raises(InputError):
            api.import_upload(ws, "broken.tif", b"not an image")
        assert not list((ws.root / "tmp").iterdir())
        assert len(api.list_scenes(ws)) == 1


def test_delete_scene_with_masks_needs_drop_masks(tmp_path, bijie_pair):
    with api.open_workspace(tmp_path / "ws") as ws:
        scene = api.import_scene(ws, bijie_pair[0], mask=bijie_pair[1]).scene
        assert api.mask_version_count(ws, scene.id) == 1
        with pytest.raises(ScarpError, match="mask version"):
            api.delete_scene(ws, scene.id)
        api.delete_scene(ws, scene.id, drop_masks=True)
        assert api.list_scenes(ws) == []


def test_model_choices_put_default_first_and_mark_random_weights(tmp_path, no_default_model):
    with api.open_workspace(tmp_path / "ws") as ws:
        choices = api.model_choices(ws)
    assert choices[0].spec == "default" and "none shipped" in choices[0].label
    random = [c for c in choices if c.kind == "random"]
    assert random and all("random weights (test only)" in c.label for c in random)
    assert api.prediction_defaults()["tile"] == 512


def test_try_demo_imports_links_queues_and_is_idempotent(tmp_path, data_dir, no_default_model):
    with api.open_workspace(tmp_path / "ws") as ws:
        first = api.try_demo(ws, data_dir)
        assert len(api.list_scenes(ws)) == 5
        links = api.scene_links(ws, first.scene_id)
        assert sorted(links) == sorted(api.DEMO_LINKS) and len(first.links) == 4
        assert {role: s.id for role, s in links.items()} == first.links
        (job,) = api.list_jobs(ws)
        assert (job.id, job.params["scene_id"]) == (first.job_id, first.scene_id)
        assert job.params["model"] == "default"
        second = api.try_demo(ws, data_dir)
        assert (second.scene_id, second.links, second.job_id, second.reused_job) == (
            first.scene_id,
            first.links,
            first.job_id,
            True,
        )
        assert len(api.list_scenes(ws)) == 5 and len(api.list_jobs(ws)) == 1


def test_try_demo_without_the_data_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("SCARP_DEMO_DIR", str(tmp_path / "nowhere"))
    from engine.api import _scenes

    monkeypatch.setattr(_scenes, "find_demo_dir", lambda demo_dir=None: None)
    with api.open_workspace(tmp_path / "ws") as ws, pytest.raises(InputError, match="demo scene"):
        api.try_demo(ws)
