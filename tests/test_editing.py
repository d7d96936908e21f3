"""Mask editing: polygons rasterized on the scene grid, brush, smart fills, undo/redo, versions on disk."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio
import shapely
from PIL import Image
from rasterio.warp import transform_geom
from shapely.geometry import LineString, Polygon, mapping

from engine.api import _masks, import_scene
from engine.api._masks import (
    load_mask,
    mask_history,
    open_edit_session,
    revert_mask,
    save_edited_mask,
    save_tile_edit,
)
from engine.editing import (
    EditSession,
    apply,
    area_m2,
    brush,
    grabcut,
    grow_from_probability,
    mask_diff,
    rasterize_geometry,
)
from engine.errors import InputError
from engine.io.raster import describe
from engine.store import MaskConflictError


def _corner(d, col: float, row: float) -> tuple[float, float]:
    x, y = d.affine @ (col, row)
    return float(x), float(y)


def _box_polygon(d, rows: tuple[int, int], cols: tuple[int, int]) -> dict:
    """A rectangle along pixel edges, covering exactly the pixel centres rows[0]..rows[1]-1 × cols."""
    ring = [
        _corner(d, c, r)
        for c, r in ((cols[0], rows[0]), (cols[1], rows[0]), (cols[1], rows[1]), (cols[0], rows[1]))
    ]
    return mapping(Polygon(ring))


def _expected(shape_hw: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape_hw, dtype=bool)
    out[rows[0] : rows[1], cols[0] : cols[1]] = True
    return out


def _centres_inside(d, polygon) -> np.ndarray:
    """Independent of the rasterizer: shapely's point-in-polygon at every pixel centre."""
    rows, cols = np.mgrid[0 : d.height, 0 : d.width]
    xs, ys = d.affine @ (cols + 0.5, rows + 0.5)
    return shapely.contains_xy(polygon, xs, ys)


def _bijie(data_dir: Path, stem: str) -> tuple[np.ndarray, np.ndarray]:
    image = np.array(Image.open(data_dir / "bijie" / "images" / f"{stem}.png").convert("RGB"))
    truth = np.array(Image.open(data_dir / "bijie" / "masks" / f"{stem}.png")) > 0
    return image, truth


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


# --- polygons ---------------------------------------------------------------------------------------


def test_polygon_in_utm_scene_covers_exactly_its_pixels(landsat_utm: Path) -> None:
    d = describe(landsat_utm)
    assert d.crs == "EPSG:32618"
    lonlat = transform_geom(
        d.crs, "EPSG:4326", _box_polygon(d, (100, 110), (200, 215))
    )  # as the map sends it
    region = rasterize_geometry(lonlat, d)
    assert region.sum() == 150
    np.testing.assert_array_equal(region, _expected((d.height, d.width), (100, 110), (200, 215)))

    triangle = Polygon([_corner(d, 300.2, 400.7), _corner(d, 360.9, 420.1), _corner(d, 320.4, 470.3)])
    region = rasterize_geometry(transform_geom(d.crs, "EPSG:4326", mapping(triangle)), d)
    expected = _centres_inside(d, triangle)
    assert expected.sum() > 1000
    np.testing.assert_array_equal(region, expected)


def test_polygon_in_lonlat_scene_whole_and_in_a_window(iburi_post: Path) -> None:
    d = describe(iburi_post)
    assert d.crs == "EPSG:4326"
    polygon = {"type": "Feature", "properties": {}, "geometry": _box_polygon(d, (200, 220), (300, 325))}
    region = rasterize_geometry(polygon, d)
    np.testing.assert_array_equal(region, _expected((d.height, d.width), (200, 220), (300, 325)))
    tile = rasterize_geometry(polygon, d, window=(190, 290, 40, 50))
    np.testing.assert_array_equal(tile, _expected((40, 50), (10, 30), (10, 35)))
    assert tile.sum() == 500


def test_polygon_in_pixel_space(bijie_pair: tuple[Path, Path]) -> None:
    d = describe(bijie_pair[0])
    assert not d.georeferenced and (d.width, d.height) == (121, 94)
    leaflet = {"type": "Polygon", "coordinates": [[[10, -5], [30, -5], [30, -15], [10, -15], [10, -5]]]}
    np.testing.assert_array_equal(rasterize_geometry(leaflet, d), _expected((94, 121), (5, 15), (10, 30)))

    triangle = Polygon([(3.3, 2.2), (100.7, 40.4), (20.1, 90.6)])  # x = column, y = row
    flipped = shapely.affinity.scale(triangle, yfact=-1, origin=(0, 0))  # Leaflet's [x, -y]
    region = rasterize_geometry(mapping(flipped), d)
    np.testing.assert_array_equal(region, _centres_inside(d, triangle))
    assert region[40, 50] and not region[5, 100]


@pytest.mark.parametrize(
    ("geometry", "problem"),
    [
        (mapping(LineString([(142.0, 42.7), (142.01, 42.71)])), "only polygons"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}, "covers no pixel centre"),
        ({"type": "Polygon", "coordinates": [[[10, -5], [300, -5], [300, -150], [10, -5]]]}, "longitude"),
        ({"type": "Polygon", "coordinates": "nonsense"}, "not valid GeoJSON"),
    ],
)
def test_bad_polygons_are_refused(iburi_post: Path, geometry: dict, problem: str) -> None:
    with pytest.raises(InputError, match=problem):
        rasterize_geometry(geometry, describe(iburi_post))


def test_window_outside_the_scene_is_refused(bijie_pair: tuple[Path, Path]) -> None:
    square = {"type": "Polygon", "coordinates": [[[1, -1], [9, -1], [9, -9], [1, -9], [1, -1]]]}
    with pytest.raises(InputError, match="outside"):
        rasterize_geometry(square, describe(bijie_pair[0]), window=(80, 100, 32, 32))


# --- add, erase, brush ------------------------------------------------------------------------------


def test_add_and_erase(bijie_pair: tuple[Path, Path]) -> None:
    truth = np.array(Image.open(bijie_pair[1])) > 0
    box = _expected(truth.shape, (20, 60), (30, 90))
    added = apply(truth, box, "add")
    assert added.dtype == np.uint8 and added[box].all()
    assert mask_diff(truth, added) == ((box & ~truth).sum(), 0)
    erased = apply(added, box, "erase")
    assert not erased[box].any()
    np.testing.assert_array_equal(erased[~box], truth[~box])
    with pytest.raises(InputError, match="mode"):
        apply(truth, box, "paint")
    with pytest.raises(InputError, match="does not match"):
        apply(truth, box[:-1], "add")


def test_brush_dab_and_stroke_match_the_distance_rule() -> None:
    assert brush((20, 20), [(10, 10)], 3).sum() == 29  # lattice points within 3 of a point
    points = [(5.0, 4.0), (30.5, 60.2), (50.0, 10.0)]
    region = brush((64, 80), points, 2.5)
    stroke = LineString([(c, r) for r, c in points])
    rows, cols = np.mgrid[0:64, 0:80]
    distance = shapely.distance(stroke, shapely.points(cols, rows))
    np.testing.assert_array_equal(region, distance <= 2.5)


def test_brush_clips_at_the_tile_edge_and_refuses_bad_strokes() -> None:
    region = brush((32, 32), [(-10, 5), (40, 5)], 1)  # crosses the whole tile top to bottom
    assert region.sum() == 32 * 3 and region[:, 4:7].all()
    with pytest.raises(InputError, match="no points"):
        brush((32, 32), [], 3)
    with pytest.raises(InputError, match="outside"):
        brush((32, 32), [(100, 100), (120, 90)], 3)
    with pytest.raises(InputError, match="radius"):
        brush((32, 32), [(5, 5)], 0)


# --- undo and redo ----------------------------------------------------------------------------------


def test_undo_redo_keep_only_the_changed_box() -> None:
    session = EditSession(np.zeros((3000, 3000), np.uint8), parent_id=7)
    assert not (session.can_undo or session.can_redo or session.dirty)
    dab = brush((3000, 3000), [(1500, 1500)], 4)
    assert session.edit(dab, "add") == dab.sum()
    assert session.history_nbytes == 9 * 9  # the dab's bounding box, not a 9 MB copy
    assert session.dirty and (session.added_px, session.removed_px) == (dab.sum(), 0)
    assert session.undo() and not session.dirty and not session.mask.any()
    assert session.can_redo and not session.can_undo
    assert session.redo() and np.array_equal(session.mask, dab)
    assert not session.redo()

    session.undo()
    other = brush((3000, 3000), [(10, 10), (10, 40)], 2)
    session.edit(other, "add")
    assert not session.can_redo  # a new edit clears what was undone
    np.testing.assert_array_equal(session.mask, other)
    assert session.edit(other, "add") == 0 and len(session._undo) == 1  # a no-op is not recorded


def test_session_counts_follow_any_sequence_of_edits(bijie_pair: tuple[Path, Path]) -> None:
    truth = (np.array(Image.open(bijie_pair[1])) > 0).astype(np.uint8)
    session = EditSession(truth)
    rng = np.random.default_rng(3)
    states = [truth.copy()]
    for _ in range(12):
        points = rng.uniform(0, 94, size=(3, 2))
        session.edit(brush(truth.shape, points, rng.uniform(1, 8)), rng.choice(["add", "erase"]))
        states.append(session.mask.copy())
        assert (session.added_px, session.removed_px) == mask_diff(truth, session.mask)
    for expected in reversed(states[:-1]):
        session.undo()
        np.testing.assert_array_equal(session.mask, expected)
    assert not session.dirty and session.start.sum() == truth.sum()


# --- smart fills ------------------------------------------------------------------------------------


def _seed_and_component(truth: np.ndarray) -> tuple[tuple[int, int], np.ndarray]:
    """The most interior landslide pixel and the 4-connected landslide it belongs to."""
    inside = cv2.distanceTransform(truth.astype(np.uint8), cv2.DIST_L2, 3)
    seed = np.unravel_index(int(np.argmax(inside)), truth.shape)
    _, labels = cv2.connectedComponents(truth.astype(np.uint8), connectivity=4)
    return (int(seed[0]), int(seed[1])), labels == labels[seed]


def test_grow_from_probability_finds_the_clicked_landslide(data_dir: Path) -> None:
    _, truth = _bijie(data_dir, "ls_0016")
    seed, component = _seed_and_component(truth)
    rng = np.random.default_rng(0)
    probability = (0.15 + 0.7 * truth + rng.normal(0, 0.1, truth.shape)).astype(np.float32)
    region = grow_from_probability(probability, seed, threshold=0.5)
    assert region[seed] and _iou(region, component) > 0.97
    assert (region & ~truth).sum() < 0.01 * region.sum()

    wall = seed[1] + 5
    probability[:, wall] = np.nan  # NaN never grows: the landslide is cut at the wall
    cut = grow_from_probability(probability, seed, threshold=0.5)
    assert not cut[:, wall:].any() and cut[:, :wall].sum() == region[:, :wall].sum()

    with pytest.raises(InputError, match="below the threshold"):
        grow_from_probability(probability, (seed[0], wall), threshold=0.5)
    with pytest.raises(InputError, match="outside"):
        grow_from_probability(probability, (truth.shape[0], 0))


def test_grow_is_four_connected() -> None:
    probability = np.array([[0.9, 0.0], [0.0, 0.9]], dtype=np.float32)
    np.testing.assert_array_equal(grow_from_probability(probability, (0, 0)), [[True, False], [False, False]])


def test_grabcut_from_a_dilated_outline(data_dir: Path) -> None:
    image, truth = _bijie(data_dir, "ls_0005")
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15))
    rough = cv2.dilate(truth.astype(np.uint8), disk) > 0
    region = grabcut(image, rough)
    assert not (region & ~rough).any()  # never leaves the outline
    assert _iou(region, truth) > 0.5
    assert _iou(region, truth) > _iou(rough, truth) + 0.1  # it does better than the outline it got
    np.testing.assert_array_equal(grabcut(image, rough), region)  # reproducible


def test_grabcut_from_a_drawn_polygon(data_dir: Path) -> None:
    """The Correct page's flow: a rough polygon drawn on the map, rasterized, refined by GrabCut."""
    image, truth = _bijie(data_dir, "ls_0016")
    rows, cols = np.nonzero(truth)
    hull = shapely.MultiPoint(np.column_stack([cols + 0.5, rows + 0.5])).convex_hull.buffer(5)
    leaflet = mapping(shapely.affinity.scale(hull, yfact=-1, origin=(0, 0)))
    rough = rasterize_geometry(leaflet, describe(data_dir / "bijie" / "images" / "ls_0016.png"))
    region = grabcut(image, rough)
    assert _iou(region, truth) > 0.8 and _iou(region, truth) > _iou(rough, truth)


def test_grabcut_refuses_bad_input(data_dir: Path) -> None:
    image, truth = _bijie(data_dir, "ls_0005")
    with pytest.raises(InputError, match="whole tile"):
        grabcut(image, np.ones(truth.shape, bool))
    with pytest.raises(InputError, match="uint8"):
        grabcut(image.astype(np.float32), truth)
    with pytest.raises(InputError, match="does not match"):
        grabcut(image, truth[1:])


def test_area_from_pixel_size(landsat_utm: Path, bijie_pair: tuple[Path, Path]) -> None:
    assert area_m2(10, describe(landsat_utm)) == pytest.approx(10 * 300.0379266750948 * 300.041782729805)
    assert area_m2(10, describe(bijie_pair[0])) is None


# --- versions in the workspace ----------------------------------------------------------------------


def _mask_files(ws) -> set[Path]:
    return {p for p in (ws.root / "masks").rglob("*") if p.is_file()}


def test_save_conflict_revert_and_history(ws, bijie_pair: tuple[Path, Path]) -> None:
    imported = import_scene(ws, bijie_pair[0], mask=bijie_pair[1])
    scene_id, v1 = imported.scene.id, imported.mask_version
    truth = (np.array(Image.open(bijie_pair[1])) > 0).astype(np.uint8)

    session = open_edit_session(ws, scene_id)
    assert session.parent_id == v1.id
    np.testing.assert_array_equal(session.mask, truth)
    session.edit(brush(truth.shape, [(20, 20), (20, 80)], 4), "add")
    seed, _ = _seed_and_component(truth)
    session.edit(brush(truth.shape, [seed], 5), "erase")
    with pytest.raises(InputError, match="author"):
        save_edited_mask(ws, scene_id, session.mask, session.parent_id, author="  ")
    v2 = save_edited_mask(ws, scene_id, session.mask, session.parent_id, author="ana", note="road cut")
    assert (v2.parent_id, v2.source, v2.author, v2.note) == (v1.id, "correction", "ana", "road cut")
    np.testing.assert_array_equal(load_mask(ws, v2.id), session.mask)

    first, second = open_edit_session(ws, scene_id), open_edit_session(ws, scene_id)
    first.edit(brush(truth.shape, [(60, 60)], 6), "add")
    second.edit(brush(truth.shape, [(70, 10)], 6), "erase")
    v3 = save_edited_mask(ws, scene_id, first.mask, first.parent_id, author="ana")
    files = _mask_files(ws)
    with pytest.raises(MaskConflictError) as conflict:
        save_edited_mask(ws, scene_id, second.mask, second.parent_id, author="ben")
    assert conflict.value.latest.id == v3.id
    assert _mask_files(ws) == files and ws.latest_mask_version(scene_id).id == v3.id

    v4 = revert_mask(ws, scene_id, v1.id, parent_id=v3.id, author="ben")
    assert v4.parent_id == v3.id and "version" in v4.note
    np.testing.assert_array_equal(load_mask(ws, v4.id), truth)
    assert [v.id for v in ws.list_mask_versions(scene_id)] == [v1.id, v2.id, v3.id, v4.id]  # none deleted

    history = mask_history(ws, scene_id)
    assert [c.version.id for c in history] == [v1.id, v2.id, v3.id, v4.id]
    assert (history[0].added_px, history[0].removed_px) == (truth.sum(), 0)
    assert (history[1].added_px, history[1].removed_px) == (session.added_px, session.removed_px)
    assert (history[2].added_px, history[2].removed_px) == (first.added_px, first.removed_px)
    assert (history[3].added_px, history[3].removed_px) == mask_diff(first.mask, truth)
    assert history[1].added_px > 0 and history[1].removed_px > 0 and history[1].added_m2 is None


def test_bad_masks_are_refused(ws, bijie_pair: tuple[Path, Path]) -> None:
    scene_id = import_scene(ws, bijie_pair[0]).scene.id
    with pytest.raises(InputError, match="shape"):
        save_edited_mask(ws, scene_id, np.zeros((10, 10), np.uint8), None, author="ana")
    with pytest.raises(InputError, match="only 0"):
        save_edited_mask(ws, scene_id, np.full((94, 121), 255, np.uint8), None, author="ana")
    assert ws.list_mask_versions(scene_id) == []


def test_tile_edits_stream_into_the_scene_mask(ws, landsat_utm: Path, monkeypatch) -> None:
    monkeypatch.setattr(_masks, "BLOCK", 100)  # tiles straddle block edges
    scene_id = import_scene(ws, landsat_utm).scene.id
    d = describe(landsat_utm)
    window = (150, 250, 64, 80)
    session = open_edit_session(ws, scene_id, window)
    assert session.parent_id is None and session.mask.shape == (64, 80) and not session.mask.any()
    session.edit(brush((64, 80), [(5, 5), (60, 70)], 6), "add")
    v1 = save_tile_edit(ws, scene_id, window, session.mask, session.parent_id, author="ana")
    expected = np.zeros((d.height, d.width), np.uint8)
    expected[150:214, 250:330] = session.mask
    np.testing.assert_array_equal(load_mask(ws, v1.id), expected)
    np.testing.assert_array_equal(load_mask(ws, v1.id, window), session.mask)
    with rasterio.open(v1.raster_path) as saved:
        assert saved.crs.to_string() == d.crs and saved.transform.almost_equals(d.affine)

    window2 = (190, 290, 100, 100)  # overlaps the first tile
    second = open_edit_session(ws, scene_id, window2)
    assert second.parent_id == v1.id and second.mask.sum() == expected[190:290, 290:390].sum()
    second.edit(np.ones((100, 100), bool), "erase")
    second.edit(brush((100, 100), [(50, 50)], 20), "add")
    v2 = save_tile_edit(ws, scene_id, window2, second.mask, v1.id, author="ben")
    expected[190:290, 290:390] = second.mask
    np.testing.assert_array_equal(load_mask(ws, v2.id), expected)

    change = mask_history(ws, scene_id)[1]
    assert (change.added_px, change.removed_px) == (second.added_px, second.removed_px)
    pixel = 300.0379266750948 * 300.041782729805
    assert change.added_m2 == pytest.approx(change.added_px * pixel)
    with pytest.raises(InputError, match="outside"):
        save_tile_edit(ws, scene_id, (700, 700, 64, 64), second.mask[:64, :64], v2.id, author="ben")
