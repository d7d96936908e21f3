"""The correction loop in a real browser: draw a polygon on the map and save a second version, brush on
a tile and save a third, fine-tune on two corrected scenes and see the before/after scores, export a
GeoPackage and download it."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pyogrio
import pytest

from engine import api
from engine.io.masks import read_mask
from engine.jobs import HANDLERS
from engine.jobs_worker import execute_job
from tests.browser.harness import (
    MISSING,
    browser_page,
    click_tab,
    expect,
    map_frame,
    running_app,
    screenshot,
    settle,
)

if MISSING:
    pytest.skip("needs Chromium and Playwright (make test installs both)", allow_module_level=True)


@pytest.fixture(scope="module")
def app(tmp_path_factory, data_dir, iburi_post, tiny_bijie):
    """Iburi predicted by the default model (mask version 1), and a Bijie scene a reviewer corrected."""
    workspace = tmp_path_factory.mktemp("correct-ws")
    with api.open_workspace(workspace) as ws:
        iburi = api.import_scene(ws, iburi_post).scene
        execute_job(ws.root, api.submit_prediction(ws, iburi.id).id, HANDLERS)
        stem = json.loads((tiny_bijie / "splits.json").read_text())["train"][0]
        bijie = api.import_scene(ws, tiny_bijie / "images" / f"{stem}.png").scene
        truth = (read_mask(tiny_bijie / "masks" / f"{stem}.png") > 0).astype(np.uint8)
        api.save_edited_mask(ws, bijie.id, truth, None, "ben", "traced by hand")
    with running_app(workspace, data_dir) as app:
        yield app


@pytest.fixture(scope="module")
def page(app):
    with browser_page(app, reviewer="ana") as page:
        yield page


def _latest_version(app):
    with api.open_workspace(app.workspace) as ws:
        return api.latest_mask_version(ws, 1)


def _save(page) -> None:
    settle(page)
    save = page.get_by_role("button", name="Save version")
    expect(save).to_be_enabled(timeout=30_000)
    save.click()


def _wait_for_version_after(app, before, timeout: float = 30.0):
    """The version saved on top of `before`, read from the workspace (not from a possibly stale page)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        latest = _latest_version(app)
        if latest.id != before.id:
            assert latest.parent_id == before.id and latest.author == "ana"
            return latest
        time.sleep(0.25)
    raise AssertionError(f"no version was saved on top of version {before.id} in {timeout:.0f} s")


def _history_caption(page):
    click_tab(page, "History")
    return page.get_by_text(re.compile(r"\d+ versions; the latest is version"))


def test_draw_a_polygon_on_the_map_and_save_a_new_version(app, page):
    page.get_by_role("link", name="Correct").click()
    expect(page.get_by_text("Editing on top of version 1")).to_be_visible(timeout=60_000)
    frame = map_frame(page, ".leaflet-draw-draw-rectangle")
    box = frame.locator(".leaflet-container").bounding_box()
    frame.locator(".leaflet-draw-draw-rectangle").click()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 40, y - 30)
    page.mouse.down()
    page.mouse.move(x + 40, y + 30, steps=6)
    page.mouse.up()
    expect(page.get_by_text("1 shape drawn")).to_be_visible(timeout=30_000)
    page.get_by_role("button", name="Add to mask").click()
    expect(page.get_by_text("px unsaved")).to_be_visible(timeout=30_000)
    page.get_by_label("Note for this version").fill("added the scar by the river")
    before = _latest_version(app)
    _save(page)
    latest = _wait_for_version_after(app, before)
    expect(page.get_by_text(f"Saved version {latest.id} (parent {before.id}), by ana")).to_be_visible()
    with api.open_workspace(app.workspace) as ws:
        history = api.mask_history(ws, 1)
    assert len(history) == 2 and history[-1].version.parent_id == history[0].version.id
    assert history[-1].added_px > 100 and history[-1].removed_px == 0 and history[-1].version.author == "ana"
    caption = _history_caption(page)
    expect(caption).to_contain_text(f"version {history[-1].version.id} (correction, by ana)")
    expect(caption).to_contain_text("added the scar by the river")
    screenshot(page, "correct.png")
    assert not page.errors, page.errors


def test_brush_on_a_tile_and_save_another_version(app, page):
    click_tab(page, "Tile view")
    canvas = page.locator("canvas.upper-canvas").first
    expect(canvas).to_be_visible(timeout=30_000)
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + 60, box["y"] + 60)
    page.mouse.down()
    page.mouse.move(box["x"] + 220, box["y"] + 140, steps=12)
    page.mouse.up()
    apply = page.get_by_role("button", name="Apply to mask")
    expect(apply).to_be_enabled(timeout=30_000)
    settle(page)
    apply.click()
    expect(page.get_by_text("px unsaved")).to_be_visible(timeout=30_000)
    before = _latest_version(app)
    _save(page)
    latest = _wait_for_version_after(app, before)
    expect(page.get_by_text(f"Saved version {latest.id} (parent {before.id}), by ana")).to_be_visible()
    with api.open_workspace(app.workspace) as ws:
        history = api.mask_history(ws, 1)
    assert len(history) == 3 and history[-1].added_px > 50
    assert not page.errors, page.errors


def test_fine_tune_on_two_corrected_scenes_shows_before_and_after(page, tiny_bijie):
    page.get_by_role("link", name="Train").click()
    scenes = page.get_by_label("Training scenes (their latest corrected masks)")
    expect(scenes).to_be_visible(timeout=30_000)
    page.get_by_label("Epochs").fill("1")
    page.get_by_label("Epochs").press("Enter")
    page.get_by_label("Validation folder", exact=True).fill(str(tiny_bijie))
    page.get_by_label("Validation folder", exact=True).press("Enter")
    page.get_by_role("button", name="Start training").click()
    expect(page.get_by_text("Registered", exact=False)).to_be_visible(timeout=300_000)
    expect(page.get_by_text("vs base").first).to_be_visible()
    page.get_by_text("Registered", exact=False).scroll_into_view_if_needed()
    screenshot(page, "train.png")
    assert not page.errors, page.errors


def test_export_a_geopackage_and_download_it(page, tmp_path):
    page.get_by_role("link", name="Export").click()
    button = page.get_by_role("button", name="GeoPackage", exact=False).first
    expect(button).to_be_visible(timeout=60_000)
    with page.expect_download(timeout=60_000) as download:
        button.click()
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    assert path.suffix == ".gpkg"
    info = pyogrio.read_info(path)
    assert info["features"] >= 1 and "EPSG" in str(info["crs"]) and "area_m2" in list(info["fields"])
    screenshot(page, "export.png")
    assert not page.errors, page.errors
