"""Tile grid, padding, blend weights and the bounded-memory stitcher."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.tiling import Stitcher, Tile, TileGrid, blend_weights, iter_batches, pad_tile

MAX_TILES_PER_AXIS = 40  # keeps each example fast while still reaching every overlap and size


class Recorder:
    """A sink that keeps every block so tests can reassemble the scene and check the call order."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, np.ndarray]] = []

    def __call__(self, y0: int, block: np.ndarray) -> None:
        self.calls.append((y0, block.copy()))

    def scene(self) -> np.ndarray:
        return np.concatenate([block for _, block in self.calls], axis=1)


def identity_stitch(image: np.ndarray, grid: TileGrid, **kwargs: object) -> Recorder:
    """Stitch the 'model' that returns its own input tile: the stitched scene must equal the input."""
    sink = Recorder()
    stitcher = Stitcher(grid, image.shape[0], sink, **kwargs)
    for tile in grid.tiles():
        y, x, h, w = grid.source_window(tile)
        stitcher.add(tile, pad_tile(image[:, y : y + h, x : x + w], tile.size))
    stitcher.close()
    return sink


@st.composite
def grids(draw: st.DrawFn) -> tuple[TileGrid, int]:
    tile = draw(st.integers(4, 128))
    overlap = draw(st.integers(0, tile - 1))
    limit = min(300, tile + (tile - overlap) * (MAX_TILES_PER_AXIS - 2))
    height = draw(st.integers(1, limit))
    width = draw(st.integers(1, limit))
    channels = draw(st.integers(1, 3))
    return TileGrid(height, width, tile, overlap), channels


@settings(max_examples=150, deadline=None)
@given(
    case=grids(),
    ramp=st.sampled_from(["cosine", "linear"]),
    integer=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_identity_model_reproduces_input(
    case: tuple[TileGrid, int], ramp: str, integer: bool, seed: int
) -> None:
    grid, channels = case
    rng = np.random.default_rng(seed)
    shape = (channels, grid.height, grid.width)
    if integer:
        image = rng.integers(0, 256, size=shape).astype(np.uint8)
        sink = identity_stitch(image, grid, ramp=ramp)
        out = sink.scene()
        assert out.dtype == np.float32
        np.testing.assert_array_equal(np.rint(out).astype(np.uint8), image)
    else:
        image = rng.normal(0.0, 100.0, size=shape)
        sink = identity_stitch(image, grid, ramp=ramp, dtype=np.float64)
        out = sink.scene()
        assert out.dtype == np.float64
        np.testing.assert_allclose(out, image, rtol=0, atol=1e-9)
    assert [y0 for y0, _ in sink.calls] == list(np.cumsum([0] + [b.shape[1] for _, b in sink.calls[:-1]]))


@pytest.mark.parametrize(
    ("size", "tile", "overlap", "expected"),
    [
        (1000, 512, 64, (0, 448, 488)),
        (512, 512, 64, (0,)),
        (100, 512, 64, (0,)),
        (960, 512, 64, (0, 448)),
        (961, 512, 64, (0, 448, 449)),
        (1024, 512, 0, (0, 512)),
        (1025, 512, 0, (0, 512, 513)),
        (10, 4, 2, (0, 2, 4, 6)),
        (5, 1, 0, (0, 1, 2, 3, 4)),
    ],
)
def test_offsets_by_hand(size: int, tile: int, overlap: int, expected: tuple[int, ...]) -> None:
    assert TileGrid(size, 7, tile, overlap).row_offsets == expected
    assert TileGrid(7, size, tile, overlap).col_offsets == expected


def test_tiles_are_row_major_and_cover_every_pixel() -> None:
    grid = TileGrid(1000, 700, 512, 64)
    tiles = list(grid.tiles())
    assert len(tiles) == len(grid) == 3 * 2
    assert [t.index for t in tiles] == list(range(len(tiles)))
    assert [(t.row, t.col) for t in tiles] == [(r, c) for r in range(3) for c in range(2)]
    assert [(t.y, t.x) for t in tiles[:2]] == [(0, 0), (0, 188)]
    cover = np.zeros((grid.padded_height, grid.padded_width), dtype=int)
    for t in tiles:
        assert t.size == 512
        assert t.y + t.size <= grid.padded_height and t.x + t.size <= grid.padded_width
        cover[t.y : t.y + t.size, t.x : t.x + t.size] += 1
    assert cover.min() >= 1


def test_small_scene_is_a_single_padded_tile() -> None:
    grid = TileGrid(37, 5, tile=64, overlap=16)
    assert (grid.padded_height, grid.padded_width) == (64, 64)
    (tile,) = list(grid.tiles())
    assert tile == Tile(index=0, row=0, col=0, y=0, x=0, size=64)
    assert grid.source_window(tile) == (0, 0, 37, 5)
    image = np.arange(2 * 37 * 5, dtype=np.float64).reshape(2, 37, 5)
    sink = identity_stitch(image, grid, dtype=np.float64)
    assert len(sink.calls) == 1 and sink.calls[0][0] == 0
    np.testing.assert_allclose(sink.scene(), image, atol=1e-9)


def test_source_window_clips_to_scene() -> None:
    grid = TileGrid(1000, 300, 512, 64)
    windows = [grid.source_window(t) for t in grid.tiles()]
    assert windows == [(0, 0, 512, 300), (448, 0, 512, 300), (488, 0, 512, 300)]


def test_pad_tile_reflects_without_repeating_the_edge() -> None:
    out = pad_tile(np.array([[1, 2, 3]]), 7)
    assert out.shape == (7, 7)
    np.testing.assert_array_equal(out[0], [1, 2, 3, 2, 1, 2, 3])
    np.testing.assert_array_equal(out, np.tile(out[0], (7, 1)))  # height 1 repeats its row
    col = pad_tile(np.array([[[1], [2]]]), 5)
    assert col.shape == (1, 5, 5)
    np.testing.assert_array_equal(col[0, :, 0], [1, 2, 1, 2, 1])


@pytest.mark.parametrize("shape", [(1, 1), (3, 1, 1), (1, 4), (2, 4, 1), (2, 2)])
def test_pad_tile_never_raises_on_tiny_inputs(shape: tuple[int, ...]) -> None:
    array = np.arange(np.prod(shape)).reshape(shape)
    out = pad_tile(array, 64)
    assert out.shape == (*shape[:-2], 64, 64)
    np.testing.assert_array_equal(out[..., : shape[-2], : shape[-1]], array)


def test_pad_tile_leaves_full_tiles_and_rejects_bad_shapes() -> None:
    full = np.zeros((2, 8, 8))
    assert pad_tile(full, 8) is full
    with pytest.raises(ValueError, match="cannot pad"):
        pad_tile(np.zeros((9, 3)), 8)
    with pytest.raises(ValueError, match="cannot pad"):
        pad_tile(np.zeros((0, 3)), 8)
    with pytest.raises(ValueError, match="shape"):
        pad_tile(np.zeros(8), 8)


@pytest.mark.parametrize("ramp", ["cosine", "linear"])
@pytest.mark.parametrize(("size", "overlap"), [(1, 0), (8, 0), (8, 3), (8, 4), (8, 7), (512, 64)])
def test_blend_weights_are_positive_symmetric_and_flat_inside(ramp: str, size: int, overlap: int) -> None:
    w = blend_weights(size, overlap, ramp)
    assert w.shape == (size, size) and w.dtype == np.float64
    assert w.min() > 0 and w.max() <= 1
    np.testing.assert_array_equal(w, w.T)
    np.testing.assert_array_equal(w, w[::-1, ::-1])
    if size > 2 * overlap:
        np.testing.assert_array_equal(w[overlap : -overlap or None, overlap : -overlap or None], 1.0)


def test_blend_weight_ramps_by_hand() -> None:
    linear = blend_weights(6, 2, "linear")
    np.testing.assert_allclose(linear[2], [1 / 3, 2 / 3, 1, 1, 2 / 3, 1 / 3])
    np.testing.assert_allclose(linear[0], np.array([1 / 3, 2 / 3, 1, 1, 2 / 3, 1 / 3]) / 3)
    cosine = blend_weights(6, 2, "cosine")
    np.testing.assert_allclose(cosine[2], [1 / 4, 3 / 4, 1, 1, 3 / 4, 1 / 4])
    np.testing.assert_array_equal(blend_weights(5, 0), np.ones((5, 5)))


def test_blend_weights_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="ramp"):
        blend_weights(8, 2, "gaussian")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="overlap"):
        blend_weights(8, 8)
    with pytest.raises(ValueError, match="overlap"):
        blend_weights(8, -1)
    with pytest.raises(ValueError, match="size"):
        blend_weights(0, 0)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0, 10), "scene size"),
        ((10, 0), "scene size"),
        ((10, 10, 0, 0), "tile size"),
        ((10, 10, 8, 8), "overlap"),
        ((10, 10, 8, -1), "overlap"),
        ((10.5, 10), "integer"),
        ((10, 10, True, 0), "integer"),
    ],
)
def test_grid_rejects_bad_arguments(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TileGrid(*args)


def test_grid_accepts_numpy_integers() -> None:
    grid = TileGrid(np.int64(100), np.int32(50), np.int64(32), 8)
    assert type(grid.height) is int and grid.row_offsets == (0, 24, 48, 68)


def test_out_of_order_or_misshapen_tiles_raise() -> None:
    grid = TileGrid(100, 100, 32, 8)
    tiles = list(grid.tiles())
    stitcher = Stitcher(grid, 2, Recorder())
    with pytest.raises(ValueError, match="row-major"):
        stitcher.add(tiles[1], np.zeros((2, 32, 32)))
    stitcher.add(tiles[0], np.zeros((2, 32, 32)))
    with pytest.raises(ValueError, match="row-major"):
        stitcher.add(tiles[0], np.zeros((2, 32, 32)))
    with pytest.raises(ValueError, match="shape"):
        stitcher.add(tiles[1], np.zeros((1, 32, 32)))
    with pytest.raises(ValueError, match="shape"):
        stitcher.add(tiles[1], np.zeros((2, 32, 31)))
    with pytest.raises(ValueError, match="row-major"):
        stitcher.add(TileGrid(100, 100, 16, 8).tiles().__next__(), np.zeros((2, 16, 16)))


def test_close_requires_every_tile_and_ends_the_stitch() -> None:
    grid = TileGrid(40, 40, 32, 8)
    sink = Recorder()
    stitcher = Stitcher(grid, 1, sink)
    tiles = list(grid.tiles())
    for tile in tiles[:-1]:
        stitcher.add(tile, np.ones((1, 32, 32)))
    with pytest.raises(ValueError, match="3 of 4"):
        stitcher.close()
    stitcher.add(tiles[-1], np.ones((1, 32, 32)))
    with pytest.raises(ValueError, match="already added"):
        stitcher.add(tiles[-1], np.ones((1, 32, 32)))
    stitcher.close()
    stitcher.close()  # idempotent: nothing emitted twice
    assert sum(block.shape[1] for _, block in sink.calls) == 40
    with pytest.raises(ValueError, match="closed"):
        stitcher.add(tiles[0], np.ones((1, 32, 32)))


def test_buffer_does_not_grow_with_scene_height() -> None:
    def nbytes(height: int) -> int:
        grid = TileGrid(height, 300, 64, 16)
        stitcher = Stitcher(grid, 3, Recorder())
        for tile in grid.tiles():
            stitcher.add(tile, np.zeros((3, 64, 64), dtype=np.float32))
        stitcher.close()
        return stitcher.buffer_nbytes

    short, tall = nbytes(200), nbytes(2000)
    assert short == tall
    assert tall <= (3 + 1) * 64 * 300 * 8  # one float64 band of sums plus weights


def test_sink_calls_cover_rows_once_in_order() -> None:
    grid = TileGrid(1000, 130, 512, 64)
    image = np.random.default_rng(0).random((1, 1000, 130))
    sink = identity_stitch(image, grid)
    spans = [(y0, y0 + block.shape[1]) for y0, block in sink.calls]
    assert spans == [(0, 448), (448, 488), (488, 1000)]
    assert all(block.shape[0] == 1 and block.shape[2] == 130 for _, block in sink.calls)
    assert all(block.dtype == np.float32 for _, block in sink.calls)
    np.testing.assert_allclose(sink.scene(), image, atol=1e-5)


def test_stitcher_blends_overlaps_as_a_weighted_mean() -> None:
    grid = TileGrid(8, 6, 6, 4)  # row offsets (0, 2), one column
    sink = Recorder()
    stitcher = Stitcher(grid, 1, sink, ramp="linear", dtype=np.float64)
    tiles = list(grid.tiles())
    stitcher.add(tiles[0], np.zeros((1, 6, 6)))
    stitcher.add(tiles[1], np.ones((1, 6, 6)))
    stitcher.close()
    out = sink.scene()[0, :, 0]
    # Column weights cancel; row weights are the linear ramp [1/5, 2/5, 3/5, 3/5, 2/5, 1/5].
    ramp = np.array([1, 2, 3, 3, 2, 1]) / 5
    w0 = np.concatenate([ramp, [0, 0]])
    w1 = np.concatenate([[0, 0], ramp])
    np.testing.assert_allclose(out, w1 / (w0 + w1))


def test_stitcher_rejects_bad_channels() -> None:
    with pytest.raises(ValueError, match="channels"):
        Stitcher(TileGrid(10, 10, 8, 2), 0, Recorder())


def test_iter_batches() -> None:
    assert list(iter_batches(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(iter_batches([], 4)) == []
    grid = TileGrid(100, 100, 32, 0)
    batches = list(iter_batches(grid.tiles(), 5))
    assert [len(b) for b in batches] == [5, 5, 5, 1]
    assert [t.index for b in batches for t in b] == list(range(16))
    with pytest.raises(ValueError, match="batch_size"):
        list(iter_batches(range(3), 0))
