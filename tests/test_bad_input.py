"""Bad input corpus: real files from ../shared/data, broken in tmp_path, refused on every way in.

Each case in CORPUS builds one bad input and goes through the three ways a file enters Scarp:
  1. the CLI, `python -m engine import|predict` (engine.cli.main in-process): exit code 2, one line
     `error: ...` on stderr naming the problem, nothing on stdout, no traceback;
  2. engine.api (import_scene, with its mask; a prediction job for a model's band count): InputError
     (or the failed job's error) naming the problem;
  3. the Scenes page's upload function, api.import_upload, with the bytes and the name a browser sends.
After each, the workspace keeps its records, files and a sound database (PRAGMA integrity_check), and
nothing appears anywhere under tmp_path: not beside the input, not outside the workspace.

Mask defects reach the upload as a Landslide4Sense .h5 whose embedded `mask` has them, the one way
a mask comes in through the browser. Hostile upload names with good bytes, and inputs that look bad
but are fine, have their own tests at the end.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine import api, cli
from engine.errors import InputError, printable
from engine.io.masks import validate_mask
from engine.io.raster import open_scene
from engine.io.scene import Scene
from engine.store import Workspace, safe_filename
from tests.bad_inputs import (
    CORPUS,
    Bad,
    Real,
    write_tif,
)


@pytest.fixture(scope="module")
def real(data_dir) -> Real:
    return Real(data_dir)


# --- running a case through the three paths ----------------------------------------------------------------

SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
QUEUE_DB = "jobs.huey.db"  # the job queue, created by the first submitted job


def tree(root: Path) -> list[str]:
    """Every file, folder and link under `root` (links not followed), but SQLite's side files."""
    found = []
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            rel = os.path.relpath(os.path.join(directory, name), root)
            if not name.endswith(SQLITE_SIDE_FILES) and not name.startswith(QUEUE_DB):
                found.append(rel)
    return sorted(found)


def snapshot(ws: Workspace, top: Path) -> tuple[dict, list[str]]:
    return ws.summary(), tree(top)


def assert_clear(message: str, problem: str) -> None:
    assert re.search(problem, message), f"{message!r} does not match {problem!r}"
    assert "Traceback" not in message and "\n" not in message, message
    assert message.isprintable(), message


def via_cli(bad: Bad, ws: Workspace, out: Path, capfd) -> str:
    """capfd, not capsys: GDAL and PROJ write to file descriptor 2 directly, past sys.stderr."""
    if bad.model:
        argv = [
            "predict",
            "--model",
            bad.model,
            "--in",
            bad.path,
            "--out",
            out / "mask.tif",
            "--device",
            "cpu",
        ]
    else:
        argv = ["import", bad.path, "--workspace", ws.root]
        argv += ["--mask", bad.mask] if bad.mask else []
    capfd.readouterr()  # what building the case printed is not the CLI's
    code = cli.main([str(a) for a in argv])
    stdout, stderr = capfd.readouterr()
    assert (code, stdout) == (cli.EXIT_USER_ERROR, ""), (code, stdout, stderr)
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert not (out / "mask.tif").exists()
    return lines[0]


def predict_job(ws: Workspace, scene_id: int, model: str) -> str:
    """A prediction as the app queues it, run in this process; returns the failed job's error."""
    from engine.jobs import HANDLERS, execute_job

    job = api.submit_prediction(ws, scene_id, model=model, device="cpu")
    execute_job(ws.root, job.id, HANDLERS)
    job = api.job_status(ws, job.id)
    assert job.status == "failed", job
    return job.error or ""


def via_api(bad: Bad, ws: Workspace) -> str:
    if bad.model:
        return predict_job(ws, api.import_scene(ws, bad.path).scene.id, bad.model)
    with pytest.raises(InputError) as info:
        api.import_scene(ws, bad.path, mask=bad.mask)
    return str(info.value)


def via_upload(bad: Bad, ws: Workspace) -> str:
    if bad.upload is not None:
        name, data = bad.upload
    else:
        assert bad.path.is_file(), "a case whose input is not a regular file says what the browser sends"
        name, data = bad.path.name, bad.path.read_bytes()
    if bad.model:
        return predict_job(ws, api.import_upload(ws, name, data).scene.id, bad.model)
    with pytest.raises(InputError) as info:
        api.import_upload(ws, name, data)
    message = str(info.value)
    assert "upload-" not in message and str(ws.root) not in message, message  # no temp path shown
    return message


@pytest.fixture
def seeded(real, tmp_path):
    """A workspace that already holds a scene with its mask, so 'nothing changed' means something."""
    with Workspace(tmp_path / "ws") as ws:
        image, mask = real.bijie("ls_0002")
        api.import_scene(ws, image, mask=mask)
        yield ws


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_bad_input_is_refused_on_every_path(name, real, seeded, tmp_path, capfd, monkeypatch):
    (tmp_path / "in").mkdir()
    bad = CORPUS[name](real, tmp_path / "in")
    for key, value in bad.env.items():
        monkeypatch.setenv(key, value)
    if bad.model:  # the image itself is fine: it is in the workspace before the predictions
        api.import_scene(seeded, bad.path)
    before = snapshot(seeded, tmp_path)
    runs = (
        ("cli", lambda: via_cli(bad, seeded, tmp_path, capfd), bad.problem),
        ("api", lambda: via_api(bad, seeded), bad.problem),
        ("upload", lambda: via_upload(bad, seeded), bad.upload_problem or bad.problem),
    )
    for path, run, problem in runs:
        message = run()
        assert_clear(message, problem)
        assert snapshot(seeded, tmp_path) == before, f"{path} left records or files behind"
        assert seeded.integrity_check() == "ok"


def test_corpus_covers_the_brief():
    assert len(CORPUS) >= 30
    assert {"zero_byte_file", "wrong_band_count_for_model", "path_traversal_name", "png_zero_by_n"} <= set(
        CORPUS
    )


# --- hostile upload names with good bytes: imported under a safe name, inside the workspace ---------------


@pytest.mark.parametrize(
    "name",
    [
        "../../../escape.png",
        "/tmp/absolute.png",
        "..\\..\\windows.png",
        "C:\\Users\\x\\drive.png",
        "nul\x00byte.png",
        "\udcff\udcfe-undecodable.png",
        "new\nline.png",
        "\u202egnp.exe.png",
        "x" * 500 + ".png",
        " spaced.png ",
        "-rf.png",
        "CON.png",
        "éboulement.png",
    ],
)
def test_hostile_upload_names_stay_inside_the_workspace(name, real, tmp_path):
    with Workspace(tmp_path / "ws") as ws:
        outside = tree(tmp_path)
        result = api.import_upload(ws, name, real.bijie()[0].read_bytes())
        scene = result.scene
        assert scene.name == safe_filename(name.strip(), fallback="upload")
        assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,119}\.png", scene.name)
        assert scene.path.resolve().is_relative_to(ws.root)
        assert scene.path.parent.parent == ws.root / "scenes"
        added = sorted(set(tree(tmp_path)) - set(outside))
        assert all(p.startswith("ws/scenes/") for p in added), added
        assert not any(p.startswith("ws/tmp/") for p in tree(tmp_path))
        assert not Path("/tmp/absolute.png").exists()
        assert ws.integrity_check() == "ok"


@pytest.mark.parametrize("name", ["", "   ", ".", "..", "...", "/", "\x00"])
def test_upload_names_without_a_name_are_refused(name, real, tmp_path):
    with Workspace(tmp_path / "ws") as ws:
        before = snapshot(ws, tmp_path)
        with pytest.raises(InputError, match=r"unsupported file type \(none\)") as info:
            api.import_upload(ws, name, real.bijie()[0].read_bytes())
        assert_clear(str(info.value), r"^.+: ")
        assert snapshot(ws, tmp_path) == before


@pytest.mark.parametrize("folder", ["tmp", "scenes"])
def test_upload_refuses_workspace_folders_linked_outside(folder, real, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with Workspace(tmp_path / "ws") as ws:
        (ws.root / folder).rmdir()
        (ws.root / folder).symlink_to(elsewhere)
        with pytest.raises(InputError, match=rf"{folder}: leads outside the workspace .*nothing was written"):
            api.import_upload(ws, "ls_0000.png", real.bijie()[0].read_bytes())
        assert list(elsewhere.iterdir()) == []
        assert ws.summary()["scenes"] == 0


def test_messages_are_one_printable_line():
    error = InputError("a\x00b\udcff\n.tif", "first line\nsecond line\x1b[31m")
    assert str(error) == "a\\x00b\\udcff\\n.tif: first line second line\\x1b[31m"
    assert error.source == "a\x00b\udcff\n.tif"  # what was given, unchanged
    assert printable("1533×970 px, ü") == "1533×970 px, ü"


# --- inputs that look bad but are fine ------------------------------------------------------------------


def test_nan_inf_holes_are_nodata_not_a_crash(tmp_path, real):
    data = real.cas_block(32).astype(np.float32)
    data[:, :4] = np.nan
    data[:, 4:8] = np.inf
    with open_scene(write_tif(tmp_path / "holes.tif", data)) as scene:
        scene.check_has_data()
        assert scene.valid_mask()[:8].sum() == 0 and scene.valid_mask()[8:].all()


def test_one_valid_pixel_is_enough(tmp_path, monkeypatch):
    """When the sampled look misses a lone valid pixel, the full scan must still find it."""
    data = np.zeros((1, 2000, 1500), np.uint8)
    data[0, 1001, 777] = 9
    path = write_tif(tmp_path / "lone.tif", data, nodata=0, tiled=True, blockxsize=256, blockysize=256)
    monkeypatch.setattr(Scene, "read_decimated", lambda self, h, w, bands=None: np.zeros((1, h, w), np.uint8))
    with open_scene(path) as scene:
        scene.check_has_data()


def test_jpeg_named_png_is_read_by_its_content(tmp_path, real):
    Image.open(real.bijie()[0]).convert("RGB").save(tmp_path / "photo.png", "JPEG")
    with Workspace(tmp_path / "ws") as ws:
        assert api.import_scene(ws, tmp_path / "photo.png").scene.descriptor["format"] == "JPEG"


def test_mask_mixing_one_and_255_across_blocks_is_caught_when_streamed(tmp_path):
    data = np.zeros((1, 2048, 64), np.uint8)
    data[0, 10, 10] = 1
    data[0, 2000, 10] = 255
    with pytest.raises(InputError, match="mixes landslide values 1 and 255"):
        validate_mask(write_tif(tmp_path / "mixed.tif", data))
