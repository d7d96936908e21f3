"""From raw samples to model batches: normalise, augment or pad, and load with randomness that depends
only on (seed, epoch), so that a resumed run repeats its epoch exactly, whatever the worker count.

Each sample gets its own seed, drawn with the shuffle order from one generator seeded seed·1000+epoch;
the augmentations of a sample depend on that seed alone, never on which worker ran it or in what order.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from engine.errors import InputError
from engine.training.augment import build_augmentations, center_rep, fold_indices, mixup
from engine.training.config import TrainConfig
from engine.training.data_normalise import Normaliser
from engine.training.method import IGNORE, Batch

VALIDATION_MULTIPLE = 32  # the deepest stride of the supported networks: every size divides cleanly


def dataset_optical_bands(dataset: Any, channels: int) -> list[int]:
    """The optical bands a dataset declares (the first child's for a ConcatDataset); all bands else."""
    bands = getattr(dataset, "optical_bands", None)
    if bands is None:
        for child in getattr(dataset, "datasets", ()):
            bands = dataset_optical_bands(child, channels)
            break
    return list(range(channels)) if bands is None else [int(b) for b in bands]


def pad_to_multiple(
    image: np.ndarray, mask: np.ndarray, multiple: int = VALIDATION_MULTIPLE
) -> tuple[np.ndarray, np.ndarray]:
    """Pad bottom/right with a mirrored image and an IGNORE mask: metrics then count real pixels only."""
    h, w = mask.shape
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return image, mask
    image = np.take(image, fold_indices(h, 0, ph), axis=1)
    image = np.take(image, fold_indices(w, 0, pw), axis=2)
    return image, np.pad(mask, ((0, ph), (0, pw)), constant_values=IGNORE)


class TrainingView(Dataset):
    """A dataset as the network sees it: (image float32 (C, S, S) normalised with NaN → 0, mask long).

    Training: optional CenterRep on the whole sample (so the landslide is not cut by the crop first),
    then random scale, pad/crop to config.size, flips, rot90 and jitter of the optical bands.
    Validation is deterministic and sees every pixel: the full image, padded to a multiple of 32 with
    an IGNORE mask, so its metrics are honest; `collate` pads a batch to its largest member, so any
    batch size works, and batch size 1 wastes no compute on padding.
    mean/std are required for config.normalisation "dataset" and ignored for "per_image".
    Keys are an index, or (index, sample seed) as make_loader's sampler gives them.
    """

    def __init__(
        self,
        dataset: Any,
        config: TrainConfig,
        mean: Sequence[float] | np.ndarray | None = None,
        std: Sequence[float] | np.ndarray | None = None,
        train: bool = True,
        optical_bands: Sequence[int] | None = None,
    ):
        self.dataset = dataset
        self.config = config
        self.train = train
        if config.normalisation == "per_image":
            self.normaliser = Normaliser()
        elif mean is None or std is None:
            raise InputError("normalisation", "dataset normalisation needs mean and std (compute_statistics)")
        else:
            self.normaliser = Normaliser(mean, std)
        channels = int(config.in_channels)
        self.optical_bands = (
            [int(b) for b in optical_bands]
            if optical_bands is not None
            else dataset_optical_bands(dataset, channels)
        )
        self.augment = build_augmentations(config, self.optical_bands) if train else None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(key, tuple):
            index, seed = int(key[0]), int(key[1])
        else:
            index = int(key)
            seed = int(np.random.SeedSequence([int(self.config.seed), index]).generate_state(1)[0])
        image, mask = self.dataset[index]
        if image.shape[0] != self.config.in_channels:
            raise InputError(
                "training data",
                f"sample {index} has {image.shape[0]} bands; the model takes {self.config.in_channels}",
            )
        mask = np.array(mask, dtype=np.uint8)
        mask[~np.isfinite(image).all(axis=0)] = IGNORE
        image = np.nan_to_num(self.normaliser(image), nan=0.0, posinf=0.0, neginf=0.0)
        if self.train:
            image, mask = self._augment(image, mask, seed)
        else:
            image, mask = pad_to_multiple(image, mask)
        image = np.ascontiguousarray(image, dtype=np.float32)
        return torch.from_numpy(image), torch.from_numpy(mask.astype(np.int64))

    def _augment(self, image: np.ndarray, mask: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        if rng.random() < self.config.centerrep:
            image, mask = center_rep(image, mask, rng)
        assert self.augment is not None
        self.augment.set_random_seed(int(rng.integers(2**31)))
        out = self.augment(image=np.ascontiguousarray(image.transpose(1, 2, 0)), mask=mask)
        result = out["image"]
        if result.ndim == 2:  # single-band images may lose their channel axis in OpenCV
            result = result[..., None]
        return result.transpose(2, 0, 1), out["mask"]


def collate(samples: Sequence[tuple[Any, ...]]) -> Batch:
    """Stack (image, mask[, seed]) samples, padding to the largest: zeros (the mean) and IGNORE."""
    height = max(s[1].shape[-2] for s in samples)
    width = max(s[1].shape[-1] for s in samples)
    channels = samples[0][0].shape[0]
    images = torch.zeros((len(samples), channels, height, width), dtype=torch.float32)
    masks = torch.full((len(samples), height, width), IGNORE, dtype=torch.long)
    for i, sample in enumerate(samples):
        image, mask = sample[0], sample[1]
        images[i, :, : image.shape[-2], : image.shape[-1]] = image
        masks[i, : mask.shape[-2], : mask.shape[-1]] = mask
    return Batch(image=images, mask=masks)


class _Collate:
    """collate, then mix-up seeded by the batch's own sample seeds (a class, so workers can pickle it)."""

    def __init__(self, mixup_alpha: float):
        self.mixup_alpha = mixup_alpha

    def __call__(self, samples: Sequence[tuple[Any, ...]]) -> Batch:
        batch = collate(samples)
        if self.mixup_alpha > 0:  # even a batch of one gets soft labels: every batch has the same form
            seeds = [int(s[2]) for s in samples if len(s) > 2]
            batch = mixup(batch, self.mixup_alpha, np.random.default_rng(seeds))
        return batch


class _Seeded(Dataset):
    """Passes each sample's seed on to the collate function."""

    def __init__(self, view: TrainingView):
        self.view = view

    def __len__(self) -> int:
        return len(self.view)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        image, mask = self.view[key]
        return image, mask, int(key[1])


class EpochSampler(Sampler):
    """(index, sample seed) pairs in an order fixed by (seed, epoch): the same epoch, the same data."""

    def __init__(self, length: int, shuffle: bool, seed: int, epoch: int):
        self.length = length
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        order = (
            torch.randperm(self.length, generator=generator) if self.shuffle else torch.arange(self.length)
        )
        seeds = torch.randint(0, 2**62, (self.length,), generator=generator)
        yield from zip(order.tolist(), seeds.tolist(), strict=True)


def _init_worker(worker_id: int) -> None:
    """Seed the global generators too (from the loader's seeded generator), for any library using them.

    Thread counts stay as they are: torch already runs workers single-threaded, and changing OpenCV's
    thread count in a forked worker deadlocks on the pool state inherited from the parent.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    view: TrainingView,
    batch_size: int,
    shuffle: bool,
    seed: int,
    epoch: int,
    workers: int = 0,
    *,
    mixup_alpha: float | None = None,
    drop_last: bool | None = None,
) -> DataLoader:
    """A DataLoader of `Batch`es, fully determined by (seed, epoch).

    mixup_alpha None takes config.mixup_alpha for a training view (0 for validation). drop_last None
    drops a short last batch in training (a batch of one breaks batch norm) when a full one exists.
    """
    if len(view) == 0:
        raise InputError("training data", "has no samples")
    if batch_size < 1:
        raise InputError("batch size", f"must be ≥ 1, got {batch_size}")
    alpha = (view.config.mixup_alpha if view.train else 0.0) if mixup_alpha is None else float(mixup_alpha)
    if drop_last is None:
        drop_last = view.train and len(view) >= batch_size
    return DataLoader(
        _Seeded(view),
        batch_size=batch_size,
        sampler=EpochSampler(len(view), shuffle, seed, epoch),
        num_workers=int(workers),
        collate_fn=_Collate(alpha),
        worker_init_fn=_init_worker if workers else None,
        generator=torch.Generator().manual_seed(int(seed) * 1000 + int(epoch)),
        drop_last=drop_last,
    )
