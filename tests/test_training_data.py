"""Training data: datasets over the real data, the training/validation views, deterministic loading,
CenterRep, mix-up and band-selective colour jitter."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import api
from engine.errors import InputError
from engine.io.raster import open_scene
from engine.io.writers import write_raster
from engine.training.augment import OpticalJitter, build_augmentations, center_rep, mix_params, mixup
from engine.training.config import TrainConfig
from engine.training.datasets import (
    FolderDataset,
    L4SDataset,
    Labeled,
    Normaliser,
    TrainingView,
    UnlabeledPool,
    WorkspaceTiles,
    compute_statistics,
    make_loader,
)
from engine.training.method import IGNORE, Batch


@pytest.fixture(scope="module")
def bijie(data_dir: Path) -> Path:
    return data_dir / "bijie"


@pytest.fixture(scope="module")
def l4s(data_dir: Path) -> L4SDataset:
    return L4SDataset(data_dir / "landslide4sense" / "train")


def l4s_config(**changes) -> TrainConfig:
    return TrainConfig(model="unet", in_channels=14, **changes)


# --- datasets -------------------------------------------------------------------------------------


def test_bijie_splits(bijie: Path) -> None:
    train, val = FolderDataset(bijie, split="train"), FolderDataset(bijie, split="val")
    assert (len(train), len(val)) == (542, 174)
    assert not set(train.ids) & set(val.ids)
    assert train.ids == json.loads((bijie / "splits.json").read_text())["train"]
    for index in (0, 100, 541):
        image, mask = train[index]
        assert image.dtype == np.float32 and image.ndim == 3 and image.shape[0] == 3
        assert mask.dtype == np.uint8 and mask.shape == image.shape[1:]
        assert set(np.unique(mask)) <= {0, 1}
    assert 1 in train[0][1]  # ls_0000 is a landslide
    assert FolderDataset(bijie, ids=["nls_0000", "ls_0001"]).ids == ["nls_0000", "ls_0001"]


def test_folder_dataset_refuses_bad_layouts(bijie: Path, tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for stem in ("ls_0000", "ls_0001"):
        shutil.copy(bijie / "images" / f"{stem}.png", tmp_path / "images")
    shutil.copy(bijie / "masks" / "ls_0000.png", tmp_path / "masks")
    with pytest.raises(InputError, match=r"no mask for images.*ls_0001"):
        FolderDataset(tmp_path)
    assert len(FolderDataset(tmp_path, ids=["ls_0000"])) == 1
    separate = FolderDataset.from_folders(tmp_path / "images", bijie / "masks")
    assert separate.ids == ["ls_0000", "ls_0001"] and separate[1][1].shape == separate[1][0].shape[1:]
    with pytest.raises(InputError, match=r"splits\.json"):
        FolderDataset(tmp_path, split="train")
    with pytest.raises(InputError, match="no split 'test'"):
        FolderDataset(bijie, split="test")
    with pytest.raises(InputError, match="no image for ids"):
        FolderDataset(bijie, ids=["ls_9999"])


def test_l4s_dataset(l4s: L4SDataset) -> None:
    assert len(l4s) == 21
    assert l4s.optical_bands == list(range(12))
    image, mask = l4s[0]
    assert image.shape == (14, 128, 128) and image.dtype == np.float32
    assert mask.shape == (128, 128) and set(np.unique(mask)) <= {0, 1}


def test_workspace_tiles(bijie: Path, iburi_post: Path, tmp_path: Path) -> None:
    ws = api.open_workspace(tmp_path / "ws")
    bijie_scene = api.import_scene(ws, bijie / "images" / "ls_0000.png", mask=bijie / "masks" / "ls_0000.png")
    with open_scene(iburi_post) as scene:
        descriptor = scene.descriptor
        valid = scene.valid_mask()
    truth = np.zeros((descriptor.height, descriptor.width), dtype=np.uint8)
    truth[300:700, 200:900] = 1
    write_raster(tmp_path / "iburi_mask.tif", truth, descriptor)
    iburi = api.import_scene(ws, iburi_post, mask=tmp_path / "iburi_mask.tif")
    api.import_scene(ws, bijie / "images" / "ls_0001.png")  # no mask: not used

    tiles = WorkspaceTiles(ws, tile=512)
    assert set(tiles.mask_version_ids) == {bijie_scene.scene.id, iburi.scene.id}
    assert tiles.mask_version_ids[iburi.scene.id] == iburi.mask_version.id
    covered = np.zeros_like(truth, dtype=bool)
    for index, ref in enumerate(tiles.tiles):
        if ref.scene_id != iburi.scene.id:
            continue
        y, x, h, w = ref.window
        assert (h, w) == (512, 512)
        image, mask = tiles[index]
        assert image.shape == (3, 512, 512) and image.dtype == np.float32
        window_valid = valid[y : y + h, x : x + w]
        np.testing.assert_array_equal(mask[window_valid], truth[y : y + h, x : x + w][window_valid])
        assert (mask[~window_valid] == IGNORE).all() and np.isnan(image[:, ~window_valid]).all()
        covered[y : y + h, x : x + w] = True
    assert covered.all()
    small = [i for i, ref in enumerate(tiles.tiles) if ref.scene_id == bijie_scene.scene.id]
    assert len(small) == 1  # smaller than a tile: one native-size tile
    image, mask = tiles[small[0]]
    assert image.shape[1:] == mask.shape and 1 in mask

    edited = truth.copy()
    edited[:] = 0
    ws.save_mask_version(
        iburi.scene.id,
        lambda target: write_raster(target, edited, descriptor),
        parent_id=iburi.mask_version.id,
        source="correction",
    )
    corrected = WorkspaceTiles(ws, sources=("correction",))
    assert list(corrected.mask_version_ids) == [iburi.scene.id]
    assert all(1 not in corrected[i][1] for i in range(len(corrected)))


def test_unlabeled_pool(data_dir: Path) -> None:
    folder = data_dir / "landslide4sense" / "unlabeled" / "img"
    pool = UnlabeledPool.from_folder(folder)
    assert len(pool) == 14
    assert len(set(pool.keys)) == 14 and pool.keys == UnlabeledPool.from_folder(folder).keys
    key, image = pool[3]
    assert key == pool.keys[3] and key.startswith(sorted(p.name for p in folder.iterdir())[3])
    assert image.shape == (14, 128, 128)
    assert pool.index_of(key) == 3 and [item.key for item in pool.items()] == pool.keys

    label = np.zeros((128, 128), dtype=np.uint8)
    label[:10] = IGNORE
    label[50:60, 50:60] = 1
    labeled = Labeled(pool, {pool.keys[5]: label, pool.keys[1]: label})
    assert len(labeled) == 2
    image, mask = labeled[0]
    np.testing.assert_array_equal(mask, label)
    with pytest.raises(InputError, match="not in the pool"):
        Labeled(pool, {"elsewhere/0_0_1_1": label})


# --- views and loaders -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [96, 160])
def test_training_view_shapes(l4s: L4SDataset, size: int) -> None:
    config = l4s_config(size=size, centerrep=1.0)
    mean, std = compute_statistics(l4s)
    view = TrainingView(l4s, config, mean, std, train=True)
    for index in (0, 5):
        image, mask = view[index]
        assert image.shape == (14, size, size) and image.dtype == torch.float32
        assert mask.shape == (size, size) and mask.dtype == torch.long
        assert torch.isfinite(image).all()
        assert set(mask.unique().tolist()) <= {0, 1, IGNORE}
        assert (size > 128) == bool((mask == IGNORE).any())  # padding carries no label


def test_validation_view_is_full_and_deterministic(bijie: Path) -> None:
    data = FolderDataset(bijie, split="val")
    config = TrainConfig(model="unet", size=128)
    view = TrainingView(data, config, *compute_statistics(data, max_samples=8), train=False)
    raw_mask = data[0][1]
    image, mask = view[0]
    h, w = raw_mask.shape
    assert image.shape[1] % 32 == 0 and image.shape[2] % 32 == 0
    assert image.shape[1] - h < 32 and image.shape[2] - w < 32
    np.testing.assert_array_equal(mask[:h, :w].numpy(), raw_mask)
    assert (mask[h:] == IGNORE).all() and (mask[:, w:] == IGNORE).all()
    again = view[0]
    assert torch.equal(image, again[0]) and torch.equal(mask, again[1])
    batch = next(iter(make_loader(view, 4, shuffle=False, seed=0, epoch=0)))
    assert batch.image.shape[0] == 4 and batch.soft is None
    assert torch.equal(batch.image[0, :, : image.shape[1], : image.shape[2]], image)


@pytest.mark.parametrize("mode", ["dataset", "per_image"])
def test_normalisation_centres_valid_pixels(l4s: L4SDataset, mode: str) -> None:
    config = l4s_config(normalisation=mode)
    stats = compute_statistics(l4s) if mode == "dataset" else (None, None)
    view = TrainingView(l4s, config, *stats, train=False)
    samples = [view[i] for i in range(len(view))]
    if mode == "dataset":
        values = torch.cat([img[:, m != IGNORE] for img, m in samples], dim=1).double()
        assert values.mean(dim=1).abs().max() < 1e-3
        assert (values.std(dim=1) - 1).abs().max() < 1e-2
    else:
        for img, m in samples:
            assert img[:, m != IGNORE].double().mean(dim=1).abs().max() < 1e-3
    assert Normaliser.from_dict(view.normaliser.to_dict()).to_dict() == view.normaliser.to_dict()


def _batches(view: TrainingView, epoch: int, workers: int = 0) -> list[Batch]:
    return list(make_loader(view, 4, shuffle=True, seed=7, epoch=epoch, workers=workers))


def test_loader_is_determined_by_seed_and_epoch(l4s: L4SDataset) -> None:
    config = l4s_config(size=64, centerrep=0.5, mixup_alpha=0.4)
    view = TrainingView(l4s, config, *compute_statistics(l4s), train=True)
    first, again, other = _batches(view, 3), _batches(view, 3), _batches(view, 4)
    assert len(first) == 5  # 21 samples, batches of 4, the short last one dropped
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a.image, b.image) and torch.equal(a.mask, b.mask) and torch.equal(a.soft, b.soft)
    assert not all(torch.equal(a.image, b.image) for a, b in zip(first, other, strict=True))
    with_workers = _batches(view, 3, workers=2)  # the worker count must not change the data
    for a, b in zip(first, with_workers, strict=True):
        assert torch.equal(a.image, b.image) and torch.equal(a.soft, b.soft)


# --- augmentations -----------------------------------------------------------------------------------


def _coded_image(height: int = 100, width: int = 120) -> np.ndarray:
    """Every pixel's value tells where it came from: band·1e6 + y·1000 + x."""
    y, x = np.mgrid[:height, :width]
    return np.stack([b * 1_000_000 + y * 1000 + x for b in range(3)]).astype(np.float64)


def test_center_rep_pastes_background_at_the_landslide_centre() -> None:
    image = _coded_image()
    mask = np.zeros((100, 120), dtype=np.uint8)
    mask[40:80, 30:90] = 1  # bounding box 40 × 60, centre (60, 60)
    mask[0:5, 0:5] = IGNORE
    for seed in range(20):
        out_image, out_mask = center_rep(image, mask, np.random.default_rng(seed))
        changed = (out_image != image).any(axis=0)
        rows, cols = np.nonzero(changed)
        top, left = rows.min(), cols.min()
        ph, pw = rows.max() + 1 - top, cols.max() + 1 - left
        assert changed.sum() == ph * pw  # one rectangle
        assert 8 <= ph <= 12 and 12 <= pw <= 18  # 20–30 % of 40 and of 60
        assert abs(top + ph / 2 - 60) <= 0.5 and abs(left + pw / 2 - 60) <= 0.5
        assert (out_mask[changed] == 0).all() and (out_mask[~changed] == mask[~changed]).all()
        src_y = (out_image[0, changed] % 1_000_000 // 1000).astype(int)
        src_x = (out_image[0, changed] % 1000).astype(int)
        assert (mask[src_y, src_x] == 0).all()  # copied from background only
        np.testing.assert_array_equal(out_image[2, changed] - out_image[0, changed], 2_000_000)


def test_center_rep_leaves_samples_without_landslide() -> None:
    image, mask = _coded_image(), np.zeros((100, 120), dtype=np.uint8)
    out_image, out_mask = center_rep(image, mask, np.random.default_rng(0))
    np.testing.assert_array_equal(out_image, image)
    np.testing.assert_array_equal(out_mask, mask)
    full = np.ones_like(mask)  # no background to copy from
    out_image, out_mask = center_rep(image, full, np.random.default_rng(0))
    np.testing.assert_array_equal(out_image, image)
    np.testing.assert_array_equal(out_mask, full)


def _batch() -> Batch:
    generator = torch.Generator().manual_seed(0)
    mask = torch.randint(0, 2, (6, 16, 16), generator=generator)
    mask[:, :2] = IGNORE
    mask[0, 5] = IGNORE
    return Batch(image=torch.randn(6, 3, 16, 16, generator=generator), mask=mask)


def test_mixup_blends_images_and_labels() -> None:
    batch = _batch()
    lam, perm = mix_params(6, 0.4, np.random.default_rng(11))
    assert lam == np.random.default_rng(11).beta(0.4, 0.4) and 0 <= lam <= 1
    mixed = mixup(batch, 0.4, np.random.default_rng(11))
    assert mixed.image.shape == batch.image.shape and mixed.soft.shape == (6, 2, 16, 16)
    assert mixed.mask.shape == batch.mask.shape and mixed.mask.dtype == torch.long
    torch.testing.assert_close(mixed.image, lam * batch.image + (1 - lam) * batch.image[perm])
    defined = (batch.mask != IGNORE) & (batch.mask[perm] != IGNORE)
    sums = mixed.soft.sum(dim=1)
    torch.testing.assert_close(sums[defined], torch.ones(int(defined.sum())))
    assert (sums[~defined] == 0).all() and (mixed.mask[~defined] == IGNORE).all()
    assert torch.equal(mixed.mask[defined], mixed.soft.argmax(dim=1)[defined])
    assert (
        mixed.soft[:, 1][defined]
        == lam * (batch.mask[defined] == 1) + (1 - lam) * (batch.mask[perm][defined] == 1)
    ).all()
    seeded = [mixup(batch, 0.4, torch.Generator().manual_seed(3)).image for _ in range(2)]
    assert torch.equal(*seeded)
    assert mixup(batch, 0.0, np.random.default_rng(0)) is batch
    lams = [mix_params(2, 1e4, np.random.default_rng(s))[0] for s in range(5)]
    assert np.allclose(lams, 0.5, atol=0.02)  # a large α concentrates λ at 1/2


def test_colour_jitter_spares_slope_and_dem(l4s: L4SDataset) -> None:
    image = np.ascontiguousarray(l4s[0][0].transpose(1, 2, 0))
    jitter = OpticalJitter(l4s.optical_bands, p=1.0)
    jitter.set_random_seed(5)
    out = jitter(image=image)["image"]
    np.testing.assert_array_equal(out[..., 12:], image[..., 12:])
    assert not np.allclose(out[..., :12], image[..., :12])
    pipeline = build_augmentations(l4s_config(), l4s.optical_bands)
    [step] = [t for t in pipeline.transforms if isinstance(t, OpticalJitter)]
    assert step.bands == list(range(12))
    assert not any(
        isinstance(t, OpticalJitter) for t in build_augmentations(l4s_config(colour_jitter=False), [])
    )
