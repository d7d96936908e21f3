"""One reviewer of the load benchmark (tests/browser/load_bench.py): a real browser session that loops
over reviewing the Iburi scene and correcting its own Bijie scene, timing each step and tallying
errors, save conflicts and lost Save clicks. What it reports about a failed step comes from
load_diagnostics.py; the workspace the sessions share is made by load_bench.py.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine import api
from tests.browser import harness
from tests.browser.harness import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    VIEWPORT,
    expect,
    mark_maps,
    ready_map_frame,
    settle,
    sync_playwright,
)
from tests.browser.load_diagnostics import map_frames, sent_since, watch_websocket

PlaywrightError = getattr(harness, "PlaywrightError", Exception)  # absent without Playwright

STEP_TIMEOUT = 90.0  # s: a step slower than this counts as an error (and the session reloads)
EXCEPTION = '[data-testid="stException"]'
LOST_CLICK_S = 15.0  # no sign of a save this long after the click: the click was lost, click again
FRAME_CLICK_MS = 10_000  # a click inside a map frame; a longer wait means the frame was replaced


@dataclass
class Tally:
    """One session's measurements; the threads only append, the main thread reads after join."""

    page_load: list[float] = field(default_factory=list)
    switch: list[float] = field(default_factory=list)
    save: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    conflicts: int = 0
    lost_clicks: list[str] = field(default_factory=list)  # Save clicks the app never acted on
    loops: int = 0
    step: str = ""  # what the session is doing, named in its error messages


class StepError(Exception):
    """A step that did not finish: counted, then the session reloads and carries on."""


# --- one reviewer --------------------------------------------------------------------------------------


RUN: dict[str, Path] = {}  # the workspace and the output folder of the run under way


def _latest_version(scene_id: int) -> int | None:
    with api.open_workspace(RUN["workspace"]) as ws:
        latest = api.latest_mask_version(ws, scene_id)
    return latest.id if latest else None


def _diagnose(page, name: str) -> str:
    """A screenshot of a failed step, for the record; returns where it went."""
    path = RUN["out"] / f"failed-{name}-{time.strftime('%H%M%S')}.png"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), full_page=True)
    except PlaywrightError as exc:
        return f"no screenshot: {exc}".splitlines()[0]
    return str(path)


def _open(page, url: str, reviewer: str) -> None:
    page.goto(url)
    name = page.get_by_label("Reviewer")
    expect(name).to_be_visible(timeout=STEP_TIMEOUT * 1000)
    name.fill(reviewer)
    name.press("Enter")
    settle(page, STEP_TIMEOUT)


def _check_page(page, tally: Tally, where: str) -> None:
    if page.locator(EXCEPTION).count():
        text = page.locator(EXCEPTION).first.inner_text()[:300]
        raise StepError(f"{where}: exception on the page: {text}")
    if page.errors:
        errors, page.errors[:] = list(page.errors), []
        tally.errors.extend(f"{where}: page error: {e[:300]}" for e in errors)


def _timed_map(page, action, selector: str, where: str) -> float:
    """Seconds from `action()` until a new map frame holding `selector` has loaded its overlays."""
    mark_maps(page)
    start = time.perf_counter()
    clicked = time.monotonic()
    action()
    frame = ready_map_frame(page, selector, STEP_TIMEOUT, fresh=True)
    if frame is None:
        raise StepError(
            f"{where}: no map after {STEP_TIMEOUT:.0f} s; map frames: {map_frames(page)}; "
            f"messages sent around the click: {sent_since(page, clicked)}"
        )
    return time.perf_counter() - start


def _pick_scene(page, label: str) -> None:
    page.get_by_role("combobox", name="Scene").click()
    page.get_by_role("option", name=label, exact=True).click()


def _browse(page, tally: Tally, iburi: str, rng: random.Random) -> None:
    tally.step = "review: open"
    settle(page, STEP_TIMEOUT)
    tally.page_load.append(
        _timed_map(
            page, lambda: page.get_by_role("link", name="Review").click(), "img.leaflet-image-layer", "review"
        )
    )
    _check_page(page, tally, "review")
    settle(page, STEP_TIMEOUT)
    tally.step = "review: switch scene"
    if page.get_by_role("combobox", name="Scene").input_value() != iburi:
        tally.switch.append(
            _timed_map(page, lambda: _pick_scene(page, iburi), "img.leaflet-image-layer", "review switch")
        )
    tally.step = "review: zoom and pan"
    settle(page, STEP_TIMEOUT)

    def zoom_and_pan(frame) -> None:  # all in the browser: the review map sends nothing back
        frame.locator(".leaflet-control-zoom-in").click(timeout=FRAME_CLICK_MS)
        box = frame.locator(".leaflet-container").bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + rng.randint(-150, 150), y + rng.randint(-100, 100), steps=8)
        page.mouse.up()

    _in_map(page, "img.leaflet-image-layer", zoom_and_pan, "review")
    _check_page(page, tally, "review")


def _in_map(page, selector: str, action, where: str, fresh: bool = False) -> None:
    """`action(frame)` on the newest map frame holding `selector` (with `fresh`, one drawn since
    mark_maps); a frame that a rerun replaced under the click is looked up again (three tries)."""
    for attempt in range(3):
        frame = ready_map_frame(page, selector, STEP_TIMEOUT, fresh=fresh)
        if frame is None:
            raise StepError(f"{where}: no map holding {selector}")
        try:
            action(frame)
            return
        except PlaywrightError:
            if attempt == 2:
                raise
            settle(page, STEP_TIMEOUT)


def _draw_rectangle(page, frame, rng: random.Random) -> None:
    box = frame.locator(".leaflet-container").bounding_box()
    frame.locator(".leaflet-draw-draw-rectangle").click(timeout=FRAME_CLICK_MS)
    x = box["x"] + box["width"] / 2 + rng.randint(-60, 60)
    y = box["y"] + box["height"] / 2 + rng.randint(-40, 40)
    page.mouse.move(x - 40, y - 30)
    page.mouse.down()
    page.mouse.move(x + 40, y + 30, steps=6)
    page.mouse.up()
    try:
        expect(page.get_by_text("1 shape drawn")).to_be_visible(timeout=STEP_TIMEOUT * 1000)
    except AssertionError:
        raise StepError("correct: the app never heard of the rectangle drawn on the map") from None


def _edit(page, rng: random.Random, first: str) -> None:
    """Draw and apply until the mask changed: adding where all is landslide, or erasing where none is,
    changes nothing (the page says so), and Save stays disabled."""
    draw = ".leaflet-draw-draw-rectangle"
    fresh = False
    for mode in (first, "erase" if first == "add" else "add"):
        settle(page, STEP_TIMEOUT)
        _in_map(page, draw, lambda frame: _draw_rectangle(page, frame, rng), "correct", fresh)
        settle(page, STEP_TIMEOUT)
        mark_maps(page)  # applying starts a new drawing round: a new map
        fresh = True
        page.get_by_role("button", name="Add to mask" if mode == "add" else "Erase from mask").click()
        changed = page.get_by_text("px unsaved")
        unchanged = page.get_by_text("Nothing changed", exact=False)
        try:
            expect(changed.or_(unchanged).first).to_be_visible(timeout=STEP_TIMEOUT * 1000)
        except AssertionError:
            raise StepError(f"correct: no answer to {mode} after {STEP_TIMEOUT:.0f} s") from None
        if changed.count():
            return
    raise StepError("correct: neither adding nor erasing the rectangle changed the mask")


def _correct(page, tally: Tally, own: str, rng: random.Random) -> None:
    tally.step = "correct: open"
    settle(page, STEP_TIMEOUT)
    draw = ".leaflet-draw-draw-rectangle"
    tally.page_load.append(
        _timed_map(page, lambda: page.get_by_role("link", name="Correct").click(), draw, "correct")
    )
    _check_page(page, tally, "correct")
    settle(page, STEP_TIMEOUT)
    tally.step = "correct: switch scene"
    if page.get_by_role("combobox", name="Scene").input_value() != own:
        tally.switch.append(_timed_map(page, lambda: _pick_scene(page, own), draw, "correct switch"))
    tally.step = "correct: draw and apply"
    _edit(page, rng, "add" if tally.loops % 2 == 0 else "erase")
    tally.step = "correct: save"
    save = page.get_by_role("button", name="Save version")
    expect(save).to_be_enabled(timeout=STEP_TIMEOUT * 1000)
    settle(page, STEP_TIMEOUT)
    scene_id = int(own.split(" · ")[0])
    before = _latest_version(scene_id)
    start = time.perf_counter()
    clicked = time.monotonic()
    save.click()
    outcome = page.get_by_text("Saved version").or_(page.get_by_text("Not saved"))
    try:
        expect(outcome.first).to_be_visible(timeout=LOST_CLICK_S * 1000)
    except AssertionError:
        if _latest_version(scene_id) != before or not save.is_enabled():
            pass  # the save is under way or done: only its confirmation is late
        else:  # nothing happened: a reviewer would click again, and so do we (counted apart)
            tally.lost_clicks.append(f"save: {sent_since(page, clicked)}"[:800])
            save.click()
    try:
        expect(outcome.first).to_be_visible(timeout=STEP_TIMEOUT * 1000)
    except AssertionError:
        after = _latest_version(scene_id)
        shot = _diagnose(page, f"save-{scene_id}-{tally.loops}")
        stored = "stored" if after != before else "not stored"
        raise StepError(
            f"save: no confirmation after {STEP_TIMEOUT:.0f} s (version {before} → {after}: {stored}; "
            f"messages sent around the click: {sent_since(page, clicked)}; {shot})"
        ) from None
    elapsed = time.perf_counter() - start
    if page.get_by_text("Saved version").count():
        tally.save.append(elapsed)
    elif page.get_by_role("button", name="Reload the newer version").count():
        tally.conflicts += 1
        page.get_by_role("button", name="Reload the newer version").click()
    else:
        raise StepError(f"save refused: {page.get_by_text('Not saved').first.inner_text()[:300]}")
    _check_page(page, tally, "correct")


def reviewer_session(
    url: str,
    index: int,
    scenes: tuple[str, str],
    start: threading.Barrier,
    stop: list[float],
    think: float,
    tally: Tally,
    max_loops: int | None = None,
) -> None:
    """One reviewer in its own Chromium (Playwright's sync API wants one instance per thread). Waits at
    `start` once its page is open, then loops until `stop[0]` (time.monotonic) or `max_loops`."""
    iburi, own = scenes
    rng = random.Random(index)
    reviewer = f"reviewer {index + 1}"
    waited = False
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport=VIEWPORT)
            page.errors = []
            page.on("pageerror", lambda exc: page.errors.append(str(exc)))
            watch_websocket(page)
            page.set_default_timeout(STEP_TIMEOUT * 1000)
            try:
                _open(page, url, reviewer)
            except (PlaywrightError, AssertionError) as exc:
                tally.errors.append(f"open: {exc}".splitlines()[0][:300])
            waited = True
            start.wait(timeout=600)
            while time.monotonic() < stop[0] and (max_loops is None or tally.loops < max_loops):
                try:
                    _browse(page, tally, iburi, rng)
                    page.wait_for_timeout(think * 1000)
                    if time.monotonic() >= stop[0]:
                        break
                    _correct(page, tally, own, rng)
                    page.wait_for_timeout(think * 1000)
                    tally.loops += 1
                except (StepError, PlaywrightError, AssertionError) as exc:
                    message = f"[{tally.step}] {type(exc).__name__}: {exc}".splitlines()[0][:800]
                    message += f" ({_diagnose(page, f'session{index + 1}-loop{tally.loops}')})"
                    tally.errors.append(message)
                    try:  # carry on from a fresh page, as a reviewer would after a reload
                        _open(page, url, reviewer)
                    except (PlaywrightError, AssertionError) as again:
                        tally.errors.append(f"reopen: {again}".splitlines()[0][:300])
            browser.close()
    except Exception as exc:  # the browser itself failed: counted, and the others are not held up
        tally.errors.append(f"session {index + 1}: {exc!r}"[:300])
        if not waited:
            start.wait(timeout=600)
