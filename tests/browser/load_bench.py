"""Concurrent reviewers: N real browser sessions (Playwright + Debian's Chromium) against one app server
and one job worker, each browsing the map and saving corrections for a fixed time.

    .venv/bin/python -m tests.browser.load_bench --sessions 5 --minutes 2     # or: make bench-load

A benchmark, not a test (pytest does not collect it). Each session loops:

1. Review: open the page (page load: the click on the link until a newly drawn map shows its image
   overlays), switch to the Iburi scene (scene switch, timed the same way), zoom in and pan;
2. Correct: open the page (page load), switch to the session's own Bijie scene (scene switch), draw a
   rectangle on the map, add it to (or erase it from) the mask, and Save (save: the click until the
   page says "Saved version").

Each session corrects its own scene, as a team splits the work; a stale-parent conflict would be the
app working as designed, and is counted apart from errors. Errors are exception boxes on the page,
uncaught page errors, failed saves, timed-out steps, and tracebacks in the server's log. A Save click
the app shows no sign of after 15 s (nothing stored, Save still enabled) is clicked again, as a reviewer
would; it is counted apart, as a lost click, and the save's latency runs from the first click. The summary
(p50/p95 of page load, scene switch and save, counts, the machine) is printed as JSON and as a
Markdown table, and written to runs/load-bench/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np

from engine import api
from engine.jobs import HANDLERS
from engine.jobs_worker import execute_job
from tests.browser.harness import MISSING, ROOT, running_app, sync_playwright
from tests.browser.load_reviewer import RUN, Tally, reviewer_session

DATA = Path(os.environ.get("SCARP_DATA_DIR", ROOT.parent / "shared" / "data"))

# --- the workspace the sessions share ------------------------------------------------------------------


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


# --- the run -------------------------------------------------------------------------------------------


def _quantiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "p50_s": None, "p95_s": None, "max_s": None}
    ordered = np.asarray(values, float)
    return {
        "n": len(values),
        "p50_s": round(float(np.percentile(ordered, 50)), 2),
        "p95_s": round(float(np.percentile(ordered, 95)), 2),
        "max_s": round(float(ordered.max()), 2),
    }


def _machine() -> dict:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("model name")), "")  # fmt: skip
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kb = int(meminfo.read_text().split()[1])
        memory = f"{kb / 2**20:.0f} GiB"
    return {
        "cpu": model or platform.processor(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory": memory,
        "python": platform.python_version(),
        "os": platform.platform(),
    }


def _server_pid(url: str) -> int | None:
    """The `streamlit run` process serving `url` (found by its port on the command line)."""
    port = url.rsplit(":", 1)[1]
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"streamlit" in b" ".join(argv) and port.encode() in argv:
            return int(proc.name)
    return None


def _cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process so far (Linux), None where it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_tracebacks(log: Path) -> list[str]:
    if not log.exists():
        return []
    lines = log.read_text(errors="replace").splitlines()
    return [lines[min(i + 1, len(lines) - 1)][:200] for i, line in enumerate(lines) if "Traceback" in line]


def _warm_up(url: str, iburi: str) -> None:
    """One untimed visit of both pages, so the first timed load does not pay the server's imports."""
    tally = Tally()
    stop = [time.monotonic() + 300]
    reviewer_session(url, 99, (iburi, iburi), threading.Barrier(1), stop, 0.0, tally, max_loops=1)
    if tally.errors:
        print("warm-up:", *tally.errors, sep="\n  ", flush=True)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def markdown(summary: dict) -> str:
    rows = [
        ("page load (link → map ready)", summary["page_load"]),
        ("scene switch (select → map ready)", summary["scene_switch"]),
        ("save (Save → “Saved version”)", summary["save"]),
    ]
    out = ["| measure | n | p50 (s) | p95 (s) | max (s) |", "|---|---:|---:|---:|---:|"]
    out += [f"| {name} | {q['n']} | {q['p50_s']} | {q['p95_s']} | {q['max_s']} |" for name, q in rows]
    out.append(
        f"\n{_count(summary['sessions'], 'session')} × {summary['minutes']:g} min: "
        f"{_count(summary['loops'], 'browse+correct loop')}, {_count(summary['errors'], 'error')}, "
        f"{_count(summary['conflicts'], 'save conflict')}, "
        f"{_count(summary['lost_clicks'], 'Save click')} the app never acted on (clicked again); "
        "the app server used "
        f"{summary['server_cpu_s']} CPU-seconds in {summary['wall_s']} s."
    )
    return "\n".join(out)


def run(sessions: int, minutes: float, think: float, workspace: Path, out: Path) -> dict:
    RUN.update(workspace=workspace, out=out)
    t0 = time.monotonic()
    iburi, own = prepare_workspace(workspace, sessions)
    setup_s = time.monotonic() - t0
    print(f"workspace ready in {setup_s:.0f} s: {iburi}, {len(own)} correction scenes", flush=True)
    load_before = os.getloadavg()
    with running_app(workspace, DATA) as app:
        _warm_up(app.url, iburi)
        tallies = [Tally() for _ in range(sessions)]
        barrier = threading.Barrier(sessions + 1)
        stop = [float("inf")]
        threads = [
            threading.Thread(
                target=reviewer_session,
                args=(app.url, i, (iburi, own[i]), barrier, stop, think, tallies[i]),
                name=f"reviewer-{i + 1}",
            )
            for i in range(sessions)
        ]
        for thread in threads:
            thread.start()
        server = _server_pid(app.url)
        barrier.wait(timeout=600)  # every browser is open on Home: the clock starts
        started = time.monotonic()
        cpu_before = _cpu_seconds(server)
        stop[0] = started + minutes * 60
        load_samples = []
        while any(t.is_alive() for t in threads):
            load_samples.append(os.getloadavg()[0])
            for thread in threads:
                thread.join(timeout=5.0)
        wall = time.monotonic() - started
        cpu_after = _cpu_seconds(server)
        tracebacks = _server_tracebacks(app.workspace / "streamlit.log")
        server_log = app.workspace / "streamlit.log"
    errors = [e for t in tallies for e in t.errors] + [f"server: {t}" for t in tracebacks]
    summary = {
        "sessions": sessions,
        "minutes": minutes,
        "think_s": think,
        "wall_s": round(wall, 1),
        "page_load": _quantiles([v for t in tallies for v in t.page_load]),
        "scene_switch": _quantiles([v for t in tallies for v in t.switch]),
        "save": _quantiles([v for t in tallies for v in t.save]),
        "loops": sum(t.loops for t in tallies),
        "errors": len(errors),
        "conflicts": sum(t.conflicts for t in tallies),
        "lost_clicks": sum(len(t.lost_clicks) for t in tallies),
        "lost_click_messages": [m for t in tallies for m in t.lost_clicks][:20],
        "error_messages": errors[:50],
        "per_session": [
            {"loads": len(t.page_load), "saves": len(t.save), "errors": len(t.errors)} for t in tallies
        ],
        "machine": _machine(),
        "load_average": {
            "before": round(load_before[0], 2),
            "during_max": round(max(load_samples, default=0.0), 2),
            "during_mean": round(statistics.fmean(load_samples), 2) if load_samples else None,
        },
        "server_cpu_s": None if cpu_before is None or cpu_after is None else round(cpu_after - cpu_before, 1),
        "setup_s": round(setup_s, 1),
        "command": f"python -m tests.browser.load_bench --sessions {sessions} --minutes {minutes:g}",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"load-{stamp}.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    (out / f"load-{stamp}.md").write_text(markdown(summary) + "\n")
    if server_log.exists():
        (out / f"load-{stamp}-server.log").write_bytes(server_log.read_bytes())
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=5, help="browser sessions at once (default 5)")
    parser.add_argument("--minutes", type=float, default=2.0, help="how long each session works (default 2)")
    parser.add_argument("--think", type=float, default=1.0, help="pause between steps, seconds (default 1)")
    parser.add_argument("--workspace", type=Path, help="a new folder for the workspace (default: a temp one)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "load-bench", help="where results go")
    args = parser.parse_args(argv)
    if MISSING or sync_playwright is None:
        raise SystemExit("needs Chromium and Playwright: make setup, then make .make/dev .make/browser")
    if not (DATA / "iburi_s2").is_dir():
        raise SystemExit(f"needs the real data in {DATA} (set SCARP_DATA_DIR)")
    with tempfile.TemporaryDirectory(prefix="scarp-load-") as tmp:
        workspace = args.workspace or Path(tmp) / "ws"
        workspace.mkdir(parents=True, exist_ok=True)
        try:
            summary = run(args.sessions, args.minutes, args.think, workspace, args.out)
        except Exception:
            traceback.print_exc()
            return 1
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    print()
    print(markdown(summary))
    return 0 if summary["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
