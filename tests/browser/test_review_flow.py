"""The app in a real browser: upload the Iburi scene, run the default model, review it on the map; the
Home demo, and presentation mode with its swipe."""

from __future__ import annotations

import re

import pytest

from tests.browser.harness import (
    MISSING,
    browser_page,
    expect,
    map_frame,
    running_app,
    screenshot,
    settle,
    wait_for_jobs,
)

if MISSING:
    pytest.skip("needs Chromium and Playwright (make test installs both)", allow_module_level=True)


@pytest.fixture(scope="module")
def app(tmp_path_factory, data_dir):
    with running_app(tmp_path_factory.mktemp("browser-ws"), data_dir) as app:
        yield app


@pytest.fixture(scope="module")
def page(app):
    with browser_page(app) as page:
        yield page


# A point of the largest outline that a click would reach, relative to its box: [index, x, y]. (Small
# outlines can be a pixel wide, and an outline's centre can lie outside its shape.)
VISIBLE_POINT = """paths => {
    const area = p => { const b = p.getBoundingClientRect(); return b.width * b.height; };
    const order = [...paths.keys()].sort((a, b) => area(paths[b]) - area(paths[a]));
    for (const index of order) {
        const path = paths[index], box = path.getBoundingClientRect();
        for (let i = 1; i < 10; i++) for (let j = 1; j < 10; j++) {
            const x = box.width * i / 10, y = box.height * j / 10;
            if (document.elementFromPoint(box.x + x, box.y + y) === path) return [index, x, y];
        }
    }
    throw new Error("no outline can be clicked");
}"""


def test_upload_predict_and_review_iburi(app, page, iburi_post):
    page.get_by_role("link", name="Scenes").click()
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(iburi_post))
    page.get_by_role("button", name="Import uploaded files").click()
    expect(page.get_by_text("Imported", exact=False).first).to_be_visible(timeout=60_000)

    page.get_by_role("link", name="Predict").click()
    page.get_by_role("combobox", name="Scenes").click()
    page.get_by_role("option", name=iburi_post.name).click()
    page.keyboard.press("Escape")
    expect(page.get_by_role("combobox", name="Model")).to_have_value(re.compile(r"^default"))
    page.get_by_role("button", name="Queue prediction").click()
    expect(page.get_by_text("Queued job 1")).to_be_visible(timeout=30_000)
    wait_for_jobs(app.workspace)
    expect(page.get_by_role("heading", name="Jobs")).to_be_hidden(timeout=10_000)  # the panel lets go

    page.get_by_role("link", name="Review").click()
    frame = map_frame(page, "img.leaflet-image-layer")
    images = frame.locator("img.leaflet-image-layer")
    expect(images.first).to_be_visible()
    loaded = images.evaluate_all("imgs => imgs.filter(i => i.complete && i.naturalWidth > 0).length")
    assert loaded >= 2  # the scene and the probability ramp
    outlines = frame.locator("path.leaflet-interactive")
    expect(outlines.first).to_be_attached()
    assert outlines.count() >= 1
    caption = page.locator('[data-testid="stCaptionContainer"]', has_text="kda_student")
    expect(caption).to_contain_text("landslide")

    for _ in range(3):  # a rerun can replace the map under the click: click again, as a reviewer would
        settle(page)
        frame = map_frame(page, "path.leaflet-interactive")
        outlines = frame.locator("path.leaflet-interactive")
        index, x, y = outlines.evaluate_all(VISIBLE_POINT)
        outlines.nth(index).click(position={"x": x, "y": y})
        popup = frame.locator(".leaflet-popup-content")
        try:
            expect(popup).to_be_visible(timeout=5_000)
            break
        except AssertionError:
            continue
    expect(popup).to_contain_text("Area (m²)", timeout=10_000)
    expect(popup).to_contain_text("Mean probability")
    page.wait_for_timeout(500)  # the popup's fade-in
    screenshot(page, "review.png")
    frame.locator(".leaflet-popup-close-button").click()
    assert not page.errors, page.errors


def test_demo_then_presentation_mode_swipes_between_pre_and_post_event(page):
    page.get_by_role("link", name="Home").click()
    page.get_by_role("button", name="Try it on a real scene").click()
    expect(page.get_by_text("Presentation mode")).to_be_visible(timeout=240_000)
    settle(page, timeout=120)
    map_frame(page, "img.leaflet-image-layer")
    page.get_by_text("Presentation mode").click()
    expect(page.locator(".scarp-presentation-caption")).to_contain_text("landslide", timeout=30_000)
    expect(page.locator('[data-testid="stSidebar"]')).to_be_hidden()
    page.get_by_role("combobox", name="Swipe").click()
    page.get_by_role("option", name="Pre / post-event").click()
    frame = map_frame(page, "input.scarp-swipe-range")
    handle = frame.locator("input.scarp-swipe-range")
    right = frame.locator(".leaflet-scarp-swipe-right-pane")
    before = right.evaluate("pane => pane.style.clip")
    handle.evaluate("i => { i.value = 0.25; i.dispatchEvent(new Event('input')); }")
    after = right.evaluate("pane => pane.style.clip")
    assert before.startswith("rect(") and after != before  # the divider moved, the clip followed
    screenshot(page, "presentation.png")
    assert not page.errors, page.errors
