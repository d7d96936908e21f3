"""What the browser tests share: `streamlit run app/Home.py` on a free port over a temporary workspace
(the app starts its own job worker), Debian's Chromium driven by Playwright, and a few waits.

Screenshots go to docs/screenshots/ (or $SCARP_SCREENSHOTS). The tests are skipped without Chromium or
Playwright, except in CI, where they must run.
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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
    sync_playwright = expect = None

MISSING = (CHROMIUM is None or sync_playwright is None) and not os.environ.get("CI")


def map_frame(page, selector: str, timeout: float = 60.0):
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
    shown = " ".join(page.locator("body").inner_text().split())[-1500:]  # an error, a notice, or nothing
    raise AssertionError(f"no map frame with {selector} in {timeout:.0f} s; frames {urls}; shows {shown!r}")


@dataclass(frozen=True)
class App:
    url: str
    workspace: Path


def wait_for_jobs(workspace: Path, timeout: float = 240.0) -> None:
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


@contextmanager
def running_app(workspace: Path, demo_dir: Path) -> Iterator[App]:
    """`streamlit run` over `workspace` until the block ends; then the app and its worker are stopped."""
    log = workspace / "streamlit.log"
    port = _free_port()
    env = {**os.environ, "SCARP_WORKSPACE": str(workspace), "SCARP_DEMO_DIR": str(demo_dir)}
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
        from engine.jobs_launch import JobPaths, running_worker_pid

        worker = running_worker_pid(JobPaths(workspace))
        if worker is not None:
            os.kill(worker, signal.SIGTERM)


@contextmanager
def browser_page(app: App, reviewer: str = "") -> Iterator:
    """A Chromium tab at 1440×900 on the app, once its entry script has run; `page.errors` collects
    uncaught page errors."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport=VIEWPORT)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(app.url)
        # the entry script has run (its sidebar is up): a click before that would reach Streamlit's
        # default page list for app/views/, which bypasses Home.py and its worker start
        expect(page.get_by_label("Reviewer")).to_be_visible(timeout=60_000)
        if reviewer:
            page.get_by_label("Reviewer").fill(reviewer)
            page.get_by_label("Reviewer").press("Enter")
        page.errors = errors
        yield page
        browser.close()


def settle(page, timeout: float = 60.0) -> None:
    """Wait until no script run is in progress (components like the canvas send values on mount, and a
    click that lands while two reruns merge can be dropped by the browser side)."""
    page.wait_for_timeout(400)
    expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0, timeout=timeout * 1000)
    page.wait_for_timeout(200)


def click_tab(page, name: str) -> None:
    """Tabs switch in the browser; wait out a rerun's stale copy of them first."""
    tab = page.get_by_role("tab", name=name)
    expect(tab).to_have_count(1, timeout=30_000)
    tab.click()


def screenshot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name))


def mark_maps(page) -> None:
    """Mark the overlay images of every map on the page as seen, so ready_map_frame(fresh=True) waits for a
    map drawn after this call (Streamlit may reuse a map's iframe for the next map, so a frame's identity
    does not tell)."""
    for frame in page.frames:
        if "st_folium" not in frame.url:
            continue
        try:
            frame.evaluate(
                "() => document.querySelectorAll('img.leaflet-image-layer')"
                ".forEach(i => { i.dataset.scarpSeen = '1'; })"
            )
        except PlaywrightError:  # the frame went away while we looked
            continue


def ready_map_frame(page, selector: str, timeout: float = 60.0, fresh: bool = False):
    """The newest map frame holding `selector` whose image overlays have all loaded (with `fresh`, one
    drawn since mark_maps); None after `timeout` seconds. The load benchmark times page loads with it,
    so it polls often and does not raise."""
    check = (
        "(fresh) => { const imgs = [...document.querySelectorAll('img.leaflet-image-layer')];"
        " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0)"
        " && (!fresh || imgs.some(i => !i.dataset.scarpSeen)); }"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for frame in reversed(page.frames):  # the newest first: a stale copy may linger beside it
            if "st_folium" not in frame.url:
                continue
            try:
                if frame.locator(selector).count() and frame.evaluate(check, fresh):
                    return frame
            except PlaywrightError:  # the frame went away (a rerun replaced it) while we looked
                continue
        page.wait_for_timeout(100)
    return None
