"""Pseudo-label selection: which pixels of a model's own predictions are trusted enough to train on.

Pure functions on landslide-probability maps (…, H, W); the round orchestration lives elsewhere. Three
selection modes follow the 2022 Landslide4Sense winners: a fixed confidence threshold (first place,
p = 0.7, refined over rounds), the top λ % most confident pixels (second place), and Monte Carlo
dropout uncertainty with class-balanced keeping (third place: 10 passes, dropout 0.3, the 90 % of
background and 70 % of landslide pixels with the lowest variance).

Conventions: a pixel is predicted landslide when p ≥ 0.5; unselected pixels are IGNORE (255); NaN
probabilities (nodata) are never selected. A numpy input gives a numpy uint8 mask, a tensor input a
long tensor on its device (what `Batch.mask` holds). Fractions become counts rounded half up.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import InputError
from engine.training.losses import round_half_up
from engine.training.method import IGNORE

ArrayLike = torch.Tensor | np.ndarray


def _as_tensor(x: ArrayLike) -> tuple[torch.Tensor, bool]:
    """Keep the input's float dtype: comparing float32 0.7 with the Python 0.7 must say equal."""
    is_numpy = isinstance(x, np.ndarray)
    t = torch.from_numpy(np.ascontiguousarray(x)) if is_numpy else x
    if not isinstance(t, torch.Tensor):
        raise InputError("probabilities", f"expected a tensor or numpy array, got {type(x).__name__}")
    if not t.is_floating_point():
        t = t.float()
    return t, is_numpy


def _as_mask(mask: torch.Tensor, is_numpy: bool) -> ArrayLike:
    return mask.to(torch.uint8).cpu().numpy() if is_numpy else mask.long()


def _check_fraction(name: str, value: float, low_open: bool = True) -> None:
    ok = (0.0 < value <= 1.0) if low_open else (0.0 <= value <= 1.0)
    if not ok:
        raise InputError(name, f"must be in {'(0' if low_open else '[0'}, 1], got {value}")


def select_threshold(prob: ArrayLike, t: float = 0.7) -> ArrayLike:
    """p ≥ t → landslide, 1 − p ≥ t → background, the uncertain middle → IGNORE.

    The background test is written on 1 − p so both classes have the same inclusive boundary.
    """
    if not 0.5 <= t <= 1.0:
        raise InputError("threshold", f"must be in [0.5, 1] so the two classes cannot overlap, got {t}")
    p, is_numpy = _as_tensor(prob)
    mask = torch.full(p.shape, IGNORE, dtype=torch.long, device=p.device)
    mask[(1.0 - p) >= t] = 0
    mask[p >= t] = 1  # at t = 0.5 a p of exactly 0.5 goes to landslide, as argmax does here
    return _as_mask(mask, is_numpy)


def select_top_percent(prob: ArrayLike, percent: float) -> ArrayLike:
    """The `percent` % most confident pixels (confidence max(p, 1 − p)) over all the given maps keep
    their predicted label. Ties go to the earlier pixel in C order, so the result never depends on
    the sort implementation."""
    if not 0.0 < percent <= 100.0:
        raise InputError("percent", f"must be in (0, 100], got {percent}")
    p, is_numpy = _as_tensor(prob)
    flat = p.reshape(-1)
    finite = ~torch.isnan(flat)
    confidence = torch.maximum(flat, 1.0 - flat).masked_fill(~finite, float("-inf"))
    k = round_half_up(int(finite.sum()) * percent / 100.0)
    order = torch.argsort(confidence, descending=True, stable=True)[:k]
    mask = torch.full_like(flat, IGNORE, dtype=torch.long)
    mask[order] = (flat[order] >= 0.5).long()
    return _as_mask(mask.view(p.shape), is_numpy)


def select_mc_dropout(
    mean_prob: ArrayLike, variance: ArrayLike, keep_background: float = 0.9, keep_landslide: float = 0.7
) -> ArrayLike:
    """Class-balanced selection (CBST-style): per predicted class, keep the given share of its pixels
    with the LOWEST variance, so rare landslides are not crowded out by confident background.
    Ties go to the earlier pixel in C order."""
    _check_fraction("keep_background", keep_background, low_open=False)
    _check_fraction("keep_landslide", keep_landslide, low_open=False)
    mean, is_numpy = _as_tensor(mean_prob)
    var, _ = _as_tensor(variance)
    if mean.shape != var.shape:
        raise InputError("variance", f"shape {tuple(var.shape)} does not match the mean {tuple(mean.shape)}")
    var = var.to(mean.device)
    flat_mean, flat_var = mean.reshape(-1), var.reshape(-1)
    usable = ~(torch.isnan(flat_mean) | torch.isnan(flat_var))
    landslide = flat_mean >= 0.5
    mask = torch.full(flat_mean.shape, IGNORE, dtype=torch.long, device=mean.device)
    for label, members, keep in ((0, ~landslide, keep_background), (1, landslide, keep_landslide)):
        members = members & usable
        k = round_half_up(int(members.sum()) * keep)
        if k == 0:
            continue
        order = torch.argsort(flat_var.masked_fill(~members, float("inf")), stable=True)[:k]
        mask[order] = label
    return _as_mask(mask.view(mean.shape), is_numpy)


def merge_with_human(pseudo: ArrayLike, human: ArrayLike | None) -> ArrayLike:
    """A person's correction is ground truth: wherever the human mask is defined it wins, elsewhere
    the pseudo-label stays. The result has the pseudo mask's type."""
    p, is_numpy = _as_tensor(pseudo)
    p = p.long()
    if human is not None:
        h, _ = _as_tensor(human)
        h = h.to(p.device).long()
        if h.shape != p.shape:
            raise InputError(
                "human mask", f"shape {tuple(h.shape)} does not match the pseudo mask {tuple(p.shape)}"
            )
        p = torch.where(h != IGNORE, h, p)
    return _as_mask(p, is_numpy)


def refine_threshold(t: float = 0.7, round_index: int = 0, step: float = 0.05, limit: float = 0.95) -> float:
    """The threshold for round `round_index` (0 = the first pseudo-labelling round): t + step · round,
    capped at `limit`, never below t.

    The first-place L4S 2022 team kept p = 0.7 in every round and got the refinement from each round's
    better model; `step=0` reproduces that. Tightening by default trades coverage for precision as
    later, more confident models would otherwise let more of their own mistakes through.
    """
    if round_index < 0:
        raise InputError("round", f"must be ≥ 0, got {round_index}")
    if step < 0:
        raise InputError("threshold step", f"must be ≥ 0, got {step}")
    if not 0.5 <= t <= 1.0 or not 0.5 <= limit <= 1.0:
        raise InputError("threshold", f"t and limit must be in [0.5, 1], got {t} and {limit}")
    return max(t, round(min(t + step * round_index, limit), 10))


# model -> (first, last) Conv2d in execution order; weak so a dropped model is not kept alive
_CONV_ENDS: weakref.WeakKeyDictionary[nn.Module, tuple[nn.Conv2d, nn.Conv2d]] = weakref.WeakKeyDictionary()


def _conv_ends(model: nn.Module, probe: torch.Tensor) -> tuple[nn.Conv2d, nn.Conv2d]:
    """The first and last Conv2d a forward pass runs (registration order can differ). Found by one
    probe pass and remembered per model, since a pool is labelled one image per call."""
    ends = _CONV_ENDS.get(model)
    if ends is not None:
        return ends
    order: list[nn.Conv2d] = []
    handles = [
        m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    try:
        model(probe)
    finally:
        for h in handles:
            h.remove()
    if not order:
        raise InputError("model", "has no Conv2d layer to attach MC dropout to")
    _CONV_ENDS[model] = ends = (order[0], order[-1])
    return ends


def _dropout(x: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    keep = torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float32) >= p
    return x * keep.to(x.dtype) / (1.0 - p)


@torch.no_grad()
def mc_dropout_probabilities(
    model: nn.Module,
    images: torch.Tensor,
    passes: int = 10,
    p: float = 0.3,
    *,
    where: str = "last",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean landslide probability and its per-pixel variance over `passes` dropout-perturbed passes,
    each (N, H, W) float32 on the device `images` came on (the model may sit elsewhere).

    The registry models have no dropout at useful places, and train() mode would also switch on
    DropPath and update BatchNorm statistics, so the model runs in eval() and element-wise dropout
    (rate p, scaled by 1/(1 − p)) is injected by a temporary hook: `where="last"` (default) drops the
    input features of the last Conv2d a forward pass runs, the classifier in every registry model;
    `where="first"` drops the output of the first Conv2d, the placement of the L4S third-place team.
    The convolutions are found by one probe pass on the first image (cached per model). Hooks are
    removed and every module's train/eval flag restored afterwards, even on error. Variance is the
    population variance (divide by `passes`). Random masks come from `generator` (on the model's
    device), else the global torch RNG, so a torch.manual_seed before the call makes it reproducible.
    """
    if passes < 2:
        raise InputError("passes", f"MC dropout needs ≥ 2 passes for a variance, got {passes}")
    if not 0.0 <= p < 1.0:
        raise InputError("dropout rate", f"must be in [0, 1), got {p}")
    if where not in ("first", "last"):
        raise InputError("where", f"must be 'first' or 'last', got {where!r}")
    if images.dim() != 4:
        raise InputError("images", f"must be (N, C, H, W), got shape {tuple(images.shape)}")
    home = images.device
    parameter = next(model.parameters(), None)
    if parameter is not None:
        images = images.to(parameter.device)

    flags = [(m, m.training) for m in model.modules()]
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        model.eval()
        first, last = _conv_ends(model, images[:1])
        if where == "last":
            handles.append(last.register_forward_pre_hook(lambda _m, a: (_dropout(a[0], p, generator),)))
        else:
            handles.append(first.register_forward_hook(lambda _m, _i, out: _dropout(out, p, generator)))
        mean = m2 = None
        for i in range(passes):
            logits = model(images).float()
            prob = torch.sigmoid(logits[:, 0]) if logits.shape[1] == 1 else F.softmax(logits, dim=1)[:, 1]
            if mean is None:
                mean, m2 = prob.clone(), torch.zeros_like(prob)
            else:  # Welford: stable without keeping every pass in memory
                delta = prob - mean
                mean += delta / (i + 1)
                m2 += delta * (prob - mean)
    finally:
        for h in handles:
            h.remove()
        for module, flag in flags:
            module.training = flag
    return mean.to(home), (m2 / passes).clamp_min(0.0).to(home)
