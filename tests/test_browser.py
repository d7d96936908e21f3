"""The app in a real browser: the Home demo on the Iburi scene, the Review map, presentation mode.

Starts `streamlit run app/Home.py` on a free port over a temporary workspace (the app starts its own
job worker), and drives Debian's Chromium with Playwright. Screenshots go to docs/screenshots/ (or
$SCARP_SCREENSHOTS). Skipped without Chromium or Playwright, except in CI, where it must run.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = Path(os.environ.get("SCARP_SCREENSHOTS", ROOT / "docs" / "screenshots"))
VIEWPORT = {"width": 1440, "height": 900}

try:
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
            if frame.url.endswith("streamlit_folium.st_folium/index.html") or "st_folium" in frame.url:
                if frame.locator(selector).count():
                    return frame
        page.wait_for_timeout(250)
    urls = [frame.url for frame in page.frames]
    raise AssertionError(f"no map frame with {selector} after {timeout:.0f} s; frames: {urls}")


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
def app_url(tmp_path_factory, data_dir):
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
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        from engine.jobs_worker import JobPaths, running_worker_pid

        worker = running_worker_pid(JobPaths(workspace))
        if worker is not None:
            os.kill(worker, signal.SIGTERM)


@pytest.fixture(scope="module")
def page(app_url):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport=VIEWPORT)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(app_url)
        page.errors = errors
        yield page
        browser.close()


def test_demo_imports_iburi_maps_it_and_opens_the_review_map(page):
    page.get_by_role("button", name="Try it on a real scene").click()
    # import + the default model on a 2-core CPU: the budget is a minute; allow for a loaded CI box
    expect(page.get_by_text("Presentation mode")).to_be_visible(timeout=240_000)
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


def test_presentation_mode_swipes_between_pre_and_post_event(page):
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
