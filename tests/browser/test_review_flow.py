"""The app in a real browser: upload the Iburi scene, run the default model, review it on the map; the
Home demo, and presentation mode with its swipe.

Starts `streamlit run app/Home.py` on a free port over a temporary workspace (the app starts its own
job worker), and drives Debian's Chromium with Playwright. Screenshots go to docs/screenshots/ (or
$SCARP_SCREENSHOTS). Skipped without Chromium or Playwright, except in CI, where it must run.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = Path(os.environ.get("SCARP_SCREENSHOTS", ROOT / "docs" / "screenshots"))
VIEWPORT = {"width": 1440, "height": 900}
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - requirements-dev.txt installs it
    sync_playwright = None

if (CHROMIUM is None or sync_playwright is None) and not os.environ.get("CI"):
    pytest.skip("needs Chromium and Playwright (make test installs both)", allow_module_level=True)


def _map_frame(page, selector: str, timeout: float = 60.0):
    """The map's frame once it holds `selector`: during a rerun Streamlit can show a stale copy of the
    map beside the new one, so the frame is found by what it holds, not by where it sits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for frame in page.frames:
            try:
                if "st_folium" in frame.url and frame.locator(selector).count():
                    return frame
            except PlaywrightError:  # a stale copy went away while we looked
                continue
        page.wait_for_timeout(250)
    urls = [frame.url for frame in page.frames]
    raise AssertionError(f"no map frame with {selector} after {timeout:.0f} s; frames: {urls}")


@dataclass(frozen=True)
class App:
    url: str
    workspace: Path


def _wait_for_jobs(workspace: Path, timeout: float = 240.0) -> None:
    from engine import api

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with api.open_workspace(workspace) as ws:
            jobs = api.list_jobs(ws)
        if jobs and all(job.done for job in jobs):
            failed = [f"{job.id}: {api.job_report(job).error}" for job in jobs if job.status != "succeeded"]
            assert not failed, failed
            return
        time.sleep(1.0)
    raise AssertionError(f"jobs still running after {timeout:.0f} s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"streamlit did not answer in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def app(tmp_path_factory, data_dir):
    workspace = tmp_path_factory.mktemp("browser-ws")
    log = workspace / "streamlit.log"
    port = _free_port()
    env = {**os.environ, "SCARP_WORKSPACE": str(workspace), "SCARP_DEMO_DIR": str(data_dir)}
    command = [
        sys.executable, "-m", "streamlit", "run", "app/Home.py", "--server.port", str(port),
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log)
        yield App(url, workspace)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        from engine.jobs_worker import JobPaths, running_worker_pid

        worker = running_worker_pid(JobPaths(workspace))
        if worker is not None:
            os.kill(worker, signal.SIGTERM)


@pytest.fixture(scope="module")
def page(app):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport=VIEWPORT)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(app.url)
        # the entry script has run (its sidebar is up): a click before that would reach Streamlit's
        # default page list for app/pages/, which bypasses Home.py and its worker start
        expect(page.get_by_label("Reviewer")).to_be_visible(timeout=60_000)
        page.errors = errors
        yield page
        browser.close()


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
    _wait_for_jobs(app.workspace)
    expect(page.get_by_role("heading", name="Jobs")).to_be_hidden(timeout=10_000)  # the panel lets go

    page.get_by_role("link", name="Review").click()
    frame = _map_frame(page, "img.leaflet-image-layer")
    images = frame.locator("img.leaflet-image-layer")
    expect(images.first).to_be_visible()
    loaded = images.evaluate_all("imgs => imgs.filter(i => i.complete && i.naturalWidth > 0).length")
    assert loaded >= 2  # the scene and the probability ramp
    outlines = frame.locator("path.leaflet-interactive")
    expect(outlines.first).to_be_attached()
    assert outlines.count() >= 1
    caption = page.locator('[data-testid="stCaptionContainer"]', has_text="kda_student")
    expect(caption).to_contain_text("landslide")

    outlines.first.click(force=True)
    popup = frame.locator(".leaflet-popup-content")
    expect(popup).to_contain_text("Area (m²)", timeout=10_000)
    expect(popup).to_contain_text("Mean probability")
    page.wait_for_timeout(500)  # the popup's fade-in
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "review.png"))
    frame.locator(".leaflet-popup-close-button").click()
    assert not page.errors, page.errors


def test_demo_then_presentation_mode_swipes_between_pre_and_post_event(page):
    page.get_by_role("link", name="Home").click()
    page.get_by_role("button", name="Try it on a real scene").click()
    expect(page.get_by_text("Presentation mode")).to_be_visible(timeout=240_000)
    _map_frame(page, "img.leaflet-image-layer")
    page.get_by_text("Presentation mode").click()
    expect(page.locator(".scarp-presentation-caption")).to_contain_text("landslide", timeout=30_000)
    expect(page.locator('[data-testid="stSidebar"]')).to_be_hidden()
    page.get_by_role("combobox", name="Swipe").click()
    page.get_by_role("option", name="Pre / post-event").click()
    frame = _map_frame(page, "input.scarp-swipe-range")
    handle = frame.locator("input.scarp-swipe-range")
    right = frame.locator(".leaflet-scarp-swipe-right-pane")
    before = right.evaluate("pane => pane.style.clip")
    handle.evaluate("i => { i.value = 0.25; i.dispatchEvent(new Event('input')); }")
    after = right.evaluate("pane => pane.style.clip")
    assert before.startswith("rect(") and after != before  # the divider moved, the clip followed
    page.screenshot(path=str(SHOTS / "presentation.png"))
    assert not page.errors, page.errors
