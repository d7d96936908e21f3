"""Shared fixtures: the real data in ../shared/data (tests skip with a clear reason where it is absent)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SCARP_DATA_DIR", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real data folder {DATA} not found (set SCARP_DATA_DIR)")
    return DATA


@pytest.fixture(scope="session")
def iburi_post(data_dir: Path) -> Path:
    return data_dir / "iburi_s2" / "post_event_S2_RGB_B4B3B2.tif"


@pytest.fixture(scope="session")
def landsat_utm(data_dir: Path) -> Path:
    return data_dir / "landsat_utm" / "RGB.byte.tif"


@pytest.fixture(scope="session")
def bijie_pair(data_dir: Path) -> tuple[Path, Path]:
    return data_dir / "bijie" / "images" / "ls_0000.png", data_dir / "bijie" / "masks" / "ls_0000.png"


@pytest.fixture(scope="session")
def l4s_image(data_dir: Path) -> Path:
    return data_dir / "landslide4sense" / "train" / "img" / "image_1.h5"


@pytest.fixture(scope="session")
def cas_tile(data_dir: Path) -> Path:
    return sorted((data_dir / "cas_unlabeled" / "satellite").glob("*.tif*"))[0]


@pytest.fixture
def ws(tmp_path: Path):
    """An empty workspace (the store's tests build on it)."""
    from engine.store import Workspace

    with Workspace(tmp_path / "ws") as workspace:
        yield workspace


@pytest.fixture
def scene(ws, tmp_path: Path):
    """A small scene file recorded in `ws`."""
    from tests.store_writer import scene_file

    return ws.add_scene(scene_file(tmp_path / "incoming"), {"crs": "EPSG:32633"})


@pytest.fixture(scope="session")
def tiny_bijie(data_dir, tmp_path_factory) -> Path:
    """8 landslide + 2 non-landslide training pairs, 4 validation pairs, linked from the real data."""
    root = tmp_path_factory.mktemp("bijie_small")
    src = data_dir / "bijie"
    splits = json.loads((src / "splits.json").read_text())
    train_ids = [i for i in splits["train"] if i.startswith("ls_")][:8] + [
        i for i in splits["train"] if i.startswith("nls_")
    ][:2]
    val_ids = [i for i in splits["val"] if i.startswith("ls_")][:4]
    for sub in ("images", "masks"):
        (root / sub).mkdir()
        for stem in train_ids + val_ids:
            (root / sub / f"{stem}.png").symlink_to(src / sub / f"{stem}.png")
    (root / "splits.json").write_text(json.dumps({"train": train_ids, "val": val_ids}))
    return root


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A fresh workspace for the app's pages (AppTest); no worker process is started."""
    from engine import api

    monkeypatch.setenv("SCARP_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setattr(api, "ensure_worker", lambda ws: 0)
    from app import services

    services.workspace.clear()
    yield tmp_path / "ws"
    services.workspace.clear()


@pytest.fixture
def predicted(workspace, bijie_pair):
    """A Bijie scene with a prediction (its probability is a ramp) and the prediction's mask, version 1."""
    import numpy as np

    from engine import api
    from engine.io.masks import read_mask
    from engine.io.raster import describe
    from engine.io.writers import write_raster

    with api.open_workspace(workspace) as ws:
        scene = api.import_scene(ws, bijie_pair[0]).scene
        d = describe(scene.path)
        probability = np.tile(np.linspace(0, 1, d.width, dtype=np.float32), (d.height, 1))
        prediction = ws.add_prediction(scene.id, "unet-test", {}, lambda p: write_raster(p, probability, d))
        mask = (read_mask(bijie_pair[1]) > 0).astype(np.uint8)
        ws.save_mask_version(
            scene.id, lambda p: write_raster(p, mask, d), parent_id=None, source="prediction",
            prediction_id=prediction.id, author="job 1",
        )  # fmt: skip
    return scene.id, d


@pytest.fixture
def imported(tmp_path, bijie_pair):
    """A workspace with a Bijie scene and its imported mask (version 1, the work to protect): for the
    crash and full-disk tests, as (workspace, scene id, mask version, the version's file bytes)."""
    from engine import api

    with api.open_workspace(tmp_path / "ws") as ws:
        result = api.import_scene(ws, bijie_pair[0], mask=bijie_pair[1])
        yield ws, result.scene.id, result.mask_version, result.mask_version.raster_path.read_bytes()
