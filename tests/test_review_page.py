"""The review map: layers from the workspace, the folium map (local Leaflet only) and the page itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from app.components.map import build_map, popup_fields
from engine import api
from engine.io.raster import describe
from engine.io.writers import write_raster

PAGE = str(Path(__file__).resolve().parents[1] / "app" / "views" / "review.py")
CDNS = ("cdn.jsdelivr.net", "unpkg.com", "cdnjs", "code.jquery.com", "bootstrapcdn")


def _add_prediction(ws, scene_id: int, image: Path) -> int:
    d = describe(image)
    prob = np.tile(np.linspace(0, 1, d.width, dtype=np.float32), (d.height, 1))
    prediction = ws.add_prediction(scene_id, "unet-test", {"tile": 256}, lambda p: write_raster(p, prob, d))
    return prediction.id


@pytest.fixture
def bijie_ws(tmp_path: Path, bijie_pair: tuple[Path, Path]):
    with api.open_workspace(tmp_path / "ws") as ws:
        result = api.import_scene(ws, bijie_pair[0], mask=bijie_pair[1])
        _add_prediction(ws, result.scene.id, bijie_pair[0])
        yield ws, result.scene.id


def test_pixel_scene_map_uses_local_leaflet(bijie_ws) -> None:
    ws, scene_id = bijie_ws
    layers = api.review_layers(ws, scene_id, max_side=256)
    assert layers.crs == "pixel" and layers.model == "unet-test" and layers.landslides >= 1
    assert layers.total_area_m2 is None and "unet-test" in layers.caption
    html = build_map(layers, {"probability": 0.5}, base_maps=True).get_root().render()
    assert "/app/static/leaflet/leaflet.js" in html and "/app/static/leaflet/leaflet.css" in html
    assert not [cdn for cdn in CDNS if cdn in html]
    assert "L.CRS.Simple" in html and "tile.openstreetmap.org" not in html  # no base maps in pixel space
    for feature in layers.polygons["features"]:
        assert f'"id": {feature["id"]}' in html
    assert "scarp-legend" in html and "Landslide probability" in html
    assert "fitBounds" in html and '"opacity": 0.5' in html


def test_georeferenced_layers_with_links(tmp_path: Path, iburi_post: Path, data_dir: Path) -> None:
    with api.open_workspace(tmp_path / "ws") as ws:
        post = api.import_scene(ws, iburi_post, copy=False).scene
        slope = api.import_scene(ws, data_dir / "iburi_s2" / "slope.tif", copy=False).scene
        api.link_scene(ws, post.id, "slope", slope.id)
        d = describe(iburi_post)
        mask = np.zeros((d.height, d.width), dtype=np.uint8)
        mask[100:160, 200:300] = 1
        prediction_id = _add_prediction(ws, post.id, iburi_post)
        version = ws.save_mask_version(
            post.id,
            lambda p: write_raster(p, mask, d),
            parent_id=None,
            source="prediction",
            prediction_id=prediction_id,
        )
        layers = api.review_layers(ws, post.id, max_side=256)
    assert layers.crs == "EPSG:4326" and list(layers.layers) == ["slope"]
    assert layers.mask_version_id == version.id and layers.prediction_id == prediction_id
    props = layers.polygons["features"][0]["properties"]
    assert props["mean_slope"] is not None and props["mean_probability"] is not None
    assert layers.landslides == 1 and layers.total_area_m2 == pytest.approx(props["area_m2"], abs=0.2)
    assert "1 landslide" in layers.caption
    assert popup_fields(layers.polygons)[0] == [
        "id",
        "area_m2",
        "pixels",
        "mean_probability",
        "max_probability",
        "mean_slope",
    ]
    html = build_map(layers, {}, base_maps=True).get_root().render()
    assert "tile.openstreetmap.org" in html and "World_Imagery" in html
    assert not [cdn for cdn in CDNS if cdn in html]


@pytest.fixture
def app_workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("SCARP_WORKSPACE", str(tmp_path / "ws"))
    from app import services

    services.workspace.clear()
    yield tmp_path / "ws"
    services.workspace.clear()


def test_page_on_an_empty_workspace(app_workspace) -> None:
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert "No scenes" in at.info[0].value


def test_page_without_prediction_shows_the_way(app_workspace, iburi_post: Path) -> None:
    with api.open_workspace(app_workspace) as ws:
        api.import_scene(ws, iburi_post, copy=False)
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert "Run a prediction on the Predict page" in at.info[0].value


def test_page_renders_a_reviewed_scene(app_workspace, bijie_pair: tuple[Path, Path]) -> None:
    with api.open_workspace(app_workspace) as ws:
        scene = api.import_scene(ws, bijie_pair[0], mask=bijie_pair[1]).scene
        _add_prediction(ws, scene.id, bijie_pair[0])
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception, at.exception
    assert "unet-test" in at.caption[0].value and "landslide" in at.caption[0].value
    assert len(at.slider) == 3  # scene, probability, outlines


def test_swipe_between_pre_and_post_event_is_inline_and_keeps_outlines_on_top(
    tmp_path: Path, iburi_post: Path, data_dir: Path
) -> None:
    from app.components.map import pre_post_swipe

    with api.open_workspace(tmp_path / "ws") as ws:
        post = api.import_scene(ws, iburi_post, copy=False).scene
        pre = api.import_scene(ws, data_dir / "iburi_s2" / "pre_event_S2_RGB_B4B3B2.tif", copy=False).scene
        _add_prediction(ws, post.id, iburi_post)
        assert api.review_layers(ws, post.id, max_side=128).layers == {}
        assert pre_post_swipe(api.review_layers(ws, post.id, max_side=128)) is None  # nothing to swipe
        api.link_scene(ws, post.id, "pre_event", pre.id)
        layers = api.review_layers(ws, post.id, max_side=128)
    swipe = pre_post_swipe(layers)
    html = build_map(layers, {}, swipe=swipe).get_root().render()
    assert not [cdn for cdn in CDNS if cdn in html]
    assert html.count('"pane": "scarp-swipe-left"') == 1 and html.count('"pane": "scarp-swipe-right"') == 1
    assert "style.clip" in html and 'input.type = "range"' in html
    assert '"Pre-event"' in html and '"Post-event"' in html
    assert "Fit to scene" in html and '"zoomSnap": 0.25' in html
    # the pair replaces the plain scene and pre-event overlays: two image overlays, not four
    assert html.count("L.imageOverlay(") == 2 + (layers.probability is not None)


def test_presentation_mode_and_a_two_prediction_swipe_on_the_page(
    app_workspace, bijie_pair: tuple[Path, Path]
) -> None:
    with api.open_workspace(app_workspace) as ws:
        scene = api.import_scene(ws, bijie_pair[0], mask=bijie_pair[1]).scene
        first = _add_prediction(ws, scene.id, bijie_pair[0])
        _add_prediction(ws, scene.id, bijie_pair[0])
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    swipe = at.selectbox(key=f"review.swipe.{scene.id}")
    assert swipe.options == ["Off", "Two predictions"]  # no pre-event scene linked
    assert at.title[0].value == "Review"
    at.toggle(key="review.present").set_value(True).run()
    assert not at.exception, at.exception
    assert not at.title
    (headline,) = [m.value for m in at.markdown if m.value.startswith('<div class="scarp-presentation')]
    assert "landslide" in headline and "unet-test" in headline and "mask v" not in headline
    swipe.set_value("Two predictions").run()
    assert not at.exception, at.exception
    assert at.selectbox(key=f"review.swipe-other.{scene.id}").value == first
