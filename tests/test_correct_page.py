"""The Correct page (AppTest): save an edit as version 2, refuse a stale save, history and revert, the
review queue; and the tile canvas helpers. Drawing itself happens in custom components (the map's
Leaflet.draw, the canvas) that AppTest cannot render: the browser tests cover those."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from app.components import canvas
from engine import api

HOME = str(Path(__file__).resolve().parents[1] / "app" / "Home.py")


def open_correct(reviewer: str = "ana") -> AppTest:
    at = AppTest.from_file(HOME, default_timeout=60)
    at.session_state["reviewer"] = reviewer
    at.run()
    at.switch_page("views/correct.py").run()
    assert not at.exception, at.exception
    return at


def test_without_scenes_the_page_shows_the_way(workspace):
    at = open_correct()
    assert "No scenes yet" in at.info[0].value


def test_an_edit_is_saved_as_version_2_and_undo_redo_follow_it(predicted, workspace):
    scene_id, d = predicted
    at = open_correct()
    assert "Editing on top of version 1" in at.caption[0].value
    assert at.button(key="w:correct:save").disabled and at.button(key="w:correct:undo").disabled
    session = at.session_state["edit_sessions"][scene_id]
    region = np.zeros((d.height, d.width), bool)
    region[:10, :10] = True
    session.edit(region, "erase" if session.mask[:10, :10].all() else "add")
    at.run()
    assert not at.button(key="w:correct:undo").disabled and "unsaved" in at.caption[0].value
    at.button(key="w:correct:undo").click().run()
    assert at.button(key="w:correct:save").disabled and not at.button(key="w:correct:redo").disabled
    at.button(key="w:correct:redo").click().run()
    at.text_input(key="w:correct:note").input("fixed the corner").run()
    at.button(key="w:correct:save").click().run()
    assert not at.exception, at.exception
    assert at.success[0].value.startswith("Saved version 2 (parent 1), by ana")
    with api.open_workspace(workspace) as ws:
        latest = ws.latest_mask_version(scene_id)
        assert (latest.id, latest.parent_id, latest.author, latest.note) == (2, 1, "ana", "fixed the corner")
        assert (api.load_mask(ws, 2)[:10, :10] == session.mask[:10, :10]).all()


def test_a_stale_save_is_refused_and_reload_takes_the_newer_version(predicted, workspace):
    scene_id, d = predicted
    at = open_correct()
    at.session_state["edit_sessions"][scene_id].edit(np.ones((d.height, d.width), bool), "add")
    with api.open_workspace(workspace) as ws:  # another reviewer saves first
        api.save_edited_mask(ws, scene_id, np.zeros((d.height, d.width), np.uint8), 1, "ben")
    at.run()
    at.button(key="w:correct:save").click().run()
    assert "Not saved" in at.error[0].value and "2" in at.error[0].value
    with api.open_workspace(workspace) as ws:
        assert [v.id for v in ws.list_mask_versions(scene_id)] == [1, 2]  # nothing overwritten
    at.button(key="w:correct:reload").click().run()
    assert "Editing on top of version 2" in at.caption[0].value


def test_save_needs_a_reviewer_name(predicted, workspace):
    scene_id, d = predicted
    at = open_correct(reviewer="")
    at.session_state["edit_sessions"][scene_id].edit(np.ones((d.height, d.width), bool), "add")
    at.run()
    at.button(key="w:correct:save").click().run()
    assert "Reviewer" in at.error[0].value


def test_history_lists_changes_and_revert_makes_a_new_version(predicted, workspace):
    scene_id, d = predicted
    with api.open_workspace(workspace) as ws:
        api.save_edited_mask(ws, scene_id, np.zeros((d.height, d.width), np.uint8), 1, "ben")
    at = open_correct()
    table = at.dataframe[0].value
    assert list(table["version"]) == [2, 1] and table["removed px"].iloc[0] > 0
    at.selectbox(key="w:correct:revert-to").set_value(1).run()
    at.button(key="w:correct:revert").click().run()
    assert at.success[0].value == "Version 3 restores version 1."
    with api.open_workspace(workspace) as ws:
        assert (api.load_mask(ws, 3) == api.load_mask(ws, 1)).all()


def test_review_queue_builds_ranks_and_records_statuses(predicted, workspace):
    scene_id, _ = predicted
    at = open_correct()
    at.selectbox(key="w:correct:queue-tile").set_value(256).run()
    at.button(key="w:correct:queue-build").click().run()
    assert not at.exception, at.exception
    with api.open_workspace(workspace) as ws:
        first = api.review_items(ws, [scene_id])[0]
    at.button(key="w:correct:status:accepted").click().run()
    with api.open_workspace(workspace) as ws:
        assert api.review_progress(ws, [scene_id])["accepted"] == 1
        assert api.review_items(ws, [scene_id])[0].status == "accepted" and first.status == "todo"


def test_canvas_background_and_drawn_region():
    rgb = np.full((4, 6, 3), 100, np.uint8)
    mask = np.zeros((4, 6), np.uint8)
    mask[0, 0] = 1
    image = np.asarray(canvas.background(rgb, mask, 3))
    assert image.shape == (12, 18, 3)
    assert image[0, 0, 0] > image[0, 0, 1] and (image[11, 17] == 100).all()  # tinted red only on the mask
    drawing = np.zeros((12, 18, 4), np.uint8)
    drawing[4, 7, 3] = 255  # one painted canvas pixel lands in tile pixel (1, 2)
    region = canvas.drawn_region(drawing, (4, 6), 3)
    assert region.sum() == 1 and region[1, 2]
    assert not canvas.drawn_region(None, (4, 6), 3).any()
