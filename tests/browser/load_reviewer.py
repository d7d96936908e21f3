"""One reviewer of the load benchmark (tests/browser/load_bench.py): a real browser session that loops
over reviewing the Iburi scene and correcting its own Bijie scene, timing each step and tallying
errors, save conflicts and lost Save clicks. Also the workspace the sessions share.
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine import api
from engine.jobs import HANDLERS
from engine.jobs_worker import execute_job
from tests.browser import harness
from tests.browser.harness import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    ROOT,
    VIEWPORT,
    expect,
    mark_maps,
    ready_map_frame,
    settle,
    sync_playwright,
)

PlaywrightError = getattr(harness, "PlaywrightError", Exception)  # absent without Playwright

DATA = Path(os.environ.get("SCARP_DATA_DIR", ROOT.parent / "shared" / "data"))
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


# --- the workspace -------------------------------------------------------------------------------------


def _bijie_stems(count: int) -> list[str]:
    """Landslide images of at least 200 px a side (a screenful to draw on), first ones by name."""
    from PIL import Image

    stems = []
    for path in sorted((DATA / "bijie" / "images").glob("ls_*.png")):
        with Image.open(path) as image:
            if min(image.size) >= 200:
                stems.append(path.stem)
        if len(stems) == count:
            return stems
    raise SystemExit(f"not enough Bijie images of 200 px or more in {DATA / 'bijie'}")


def prepare_workspace(root: Path, sessions: int) -> tuple[str, list[str]]:
    """Iburi (post-event) and one Bijie scene per session, each predicted by the default model. Returns
    the scene labels as the pages' select boxes show them: Iburi's, and one per session."""
    with api.open_workspace(root) as ws:
        iburi = api.import_scene(ws, DATA / "iburi_s2" / "post_event_S2_RGB_B4B3B2.tif", copy=False).scene
        own = [
            api.import_scene(ws, DATA / "bijie" / "images" / f"{stem}.png", copy=False).scene
            for stem in _bijie_stems(sessions)
        ]
        for scene in (iburi, *own):
            job = api.submit_prediction(ws, scene.id)
            execute_job(ws.root, job.id, HANDLERS)
            if api.latest_mask_version(ws, scene.id) is None:
                raise SystemExit(f"the prediction of {scene.name} failed: {api.job_report(job).error}")
    return f"{iburi.id} · {iburi.name}", [f"{s.id} · {s.name}" for s in own]


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
            f"{where}: no map after {STEP_TIMEOUT:.0f} s; map frames: {_frames(page)}; "
            f"messages sent around the click: {_sent_since(page, clicked)}"
        )
    return time.perf_counter() - start


def _watch_websocket(page) -> None:
    """Keep (time, size) of every message the page sends to the server, to tell a click the browser
    never sent from one the server did not act on."""
    page.sent = []
    page.sockets = []  # (time, "open" | "close") of the page's websockets

    def on_socket(socket) -> None:
        page.sockets.append((time.monotonic(), "open"))
        socket.on("framesent", lambda payload: page.sent.append((time.monotonic(), payload)))
        socket.on("close", lambda _: page.sockets.append((time.monotonic(), "close")))

    page.on("websocket", on_socket)


def _decode(payload):
    try:
        from streamlit.proto.BackMsg_pb2 import BackMsg

        return BackMsg.FromString(payload if isinstance(payload, bytes) else payload.encode("latin-1"))
    except Exception:  # not ours to decode
        return None


def _widget_name(widget_id: str) -> str:
    return widget_id.split("-", 2)[-1][:40]  # "$$ID-<hash>-<key>" → the key


def _sent_since(page, since: float) -> list[str]:
    """The page's messages to the server from 2 s before `since`: each rerun with its scope, the triggers
    it carries and the widgets whose values changed since the message before (a click, a map reporting
    its drawings, …); then the page's websocket openings and closings."""
    sent, previous = [], {}
    for t, payload in getattr(page, "sent", []):
        message = _decode(payload)
        if message is None or message.WhichOneof("type") != "rerun_script":
            continue
        state = message.rerun_script
        values = {w.id: w.SerializeToString() for w in state.widget_states.widgets}
        if t >= since - 2 and len(sent) < 12:
            fired = {
                w.id
                for w in state.widget_states.widgets
                if w.WhichOneof("value") == "trigger_value" and w.trigger_value
            }
            triggers = [_widget_name(i) for i in fired]
            changed = [_widget_name(i) for i, v in values.items() if previous.get(i) != v and i not in fired]
            scope = f"fragment{' auto' if state.is_auto_rerun else ''}" if state.fragment_id else "app"
            sent.append(f"+{t - since:.2f}s {scope} triggers={triggers} changed={changed[:4]}")
        if not state.fragment_id:
            previous = values
    sockets = [f"{what} {t - since:+.2f}s" for t, what in getattr(page, "sockets", []) if t >= since - 30]
    return sent + (["websocket: " + ", ".join(sockets)] if sockets else [])


def _frames(page) -> list[str]:
    """What the map frames hold, for an error message: Leaflet or not, images loaded and seen before."""
    seen = []
    for frame in page.frames:
        if "st_folium" not in frame.url:
            continue
        try:
            facts = frame.evaluate(
                "() => ({leaflet: !!document.querySelector('.leaflet-container'),"
                " images: [...document.querySelectorAll('img.leaflet-image-layer')]"
                ".map(i => (i.complete && i.naturalWidth > 0 ? 'loaded' : 'loading')"
                " + (i.dataset.scarpSeen ? ' seen' : ' new'))})"
            )
        except PlaywrightError as exc:
            facts = str(exc).splitlines()[0][:60]
        seen.append(str(facts))
    return seen


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
            tally.lost_clicks.append(f"save: {_sent_since(page, clicked)}"[:800])
            save.click()
    try:
        expect(outcome.first).to_be_visible(timeout=STEP_TIMEOUT * 1000)
    except AssertionError:
        after = _latest_version(scene_id)
        shot = _diagnose(page, f"save-{scene_id}-{tally.loops}")
        stored = "stored" if after != before else "not stored"
        raise StepError(
            f"save: no confirmation after {STEP_TIMEOUT:.0f} s (version {before} → {after}: {stored}; "
            f"messages sent around the click: {_sent_since(page, clicked)}; {shot})"
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
            _watch_websocket(page)
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
