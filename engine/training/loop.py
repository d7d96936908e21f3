"""The training loop: epochs, validation mIoU, early stopping, per-epoch checkpoints and resume.

Every epoch ends with an atomic write of the whole training state (`<out>.resume.pt`: model, method
state, counters), loaded back with `weights_only=True`. Each epoch's randomness is derived from
(seed, epoch), so a run killed with SIGKILL and resumed repeats the interrupted epoch exactly and
ends where an uninterrupted run would.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.devices import autocast
from engine.errors import InputError
from engine.metrics import ConfusionMatrix
from engine.store.files import atomic_write
from engine.training.config import TrainConfig
from engine.training.datasets import make_loader
from engine.training.method import IGNORE, Method


@dataclass(frozen=True)
class Progress:
    phase: str
    epoch: int  # 1-based
    epochs: int
    step: int  # 1-based within the epoch
    steps: int
    losses: dict[str, float]
    metrics: dict[str, Any] | None  # set once per epoch, after validation
    eta_s: float


ProgressCallback = Callable[[Progress], None]


@dataclass
class PhaseState:
    """What a resume needs beyond the weights; plain types only, so weights_only loading accepts it."""

    phase: str
    epochs_done: int = 0
    best_miou: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def resume_path(out: Path) -> Path:
    return out.with_suffix(".resume.pt")


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


@torch.inference_mode()
def evaluate(model: nn.Module, loader, device: torch.device, dtype: torch.dtype) -> ConfusionMatrix:
    """Confusion matrix of argmax predictions over a loader; IGNORE pixels do not count."""
    model.eval()
    matrix = ConfusionMatrix()
    for batch in loader:
        batch = batch.to(device)
        with autocast(device, dtype):
            logits = model(batch.image)
        pred = logits.argmax(dim=1).cpu().numpy()
        mask = batch.mask.cpu().numpy()
        valid = mask != IGNORE
        matrix.update(pred, np.where(valid, mask, 0), valid)
    return matrix


def run_phase(
    model: nn.Module,
    method: Method,
    train_view,
    val_view,
    config: TrainConfig,
    out: Path,
    state: PhaseState,
    *,
    epochs: int,
    save_best: Callable[[dict[str, Any]], None] | None,
    progress: ProgressCallback | None = None,
    validate: bool = True,
) -> PhaseState:
    """Train `epochs` epochs (continuing from `state`), checkpointing the full state after each one."""
    device = method.device
    seed_offset = {"distill": 10_000}.get(state.phase, 0)
    started = time.perf_counter()
    steps_done = 0
    steps_left_total = (epochs - state.epochs_done) * method.steps_per_epoch
    while state.epochs_done < epochs:
        epoch = state.epochs_done + 1
        epoch_started = time.perf_counter()
        seed_everything(config.seed * 1000 + seed_offset + epoch)
        loader = make_loader(
            train_view, config.batch_size, True, config.seed + seed_offset, epoch, config.workers
        )
        totals: dict[str, float] = {}
        count = 0
        seen = 0
        for step, batch in enumerate(loader, start=1):
            seen = step
            losses = method.train_step(batch.to(device))
            method.after_step()
            if math.isfinite(losses["loss"]):  # skipped (non-finite) steps are counted, not averaged
                for k, v in losses.items():
                    totals[k] = totals.get(k, 0.0) + v
                count += 1
            steps_done += 1
            if progress is not None:
                rate = (time.perf_counter() - started) / steps_done
                progress(
                    Progress(
                        state.phase,
                        epoch,
                        epochs,
                        step,
                        method.steps_per_epoch,
                        losses,
                        None,
                        rate * (steps_left_total - steps_done),
                    )
                )
        if seen == 0:
            raise InputError(
                "training data", f"yields no batch of {config.batch_size}; use a smaller --batch"
            )
        record: dict[str, Any] = {"epoch": epoch, **{k: v / max(count, 1) for k, v in totals.items()}}
        record["skipped_steps"] = method.skipped_steps
        record["seconds"] = time.perf_counter() - epoch_started
        if validate and val_view is not None:
            val_loader = make_loader(val_view, 1, False, config.seed, 0, config.workers)
            record.update(
                {
                    f"val_{k}": v
                    for k, v in evaluate(model, val_loader, device, method.dtype).to_json_dict().items()
                }
            )
            miou = record["val_miou"] if record["val_miou"] is not None else 0.0
            if miou > state.best_miou:
                state.best_miou, state.best_epoch, state.bad_epochs = miou, epoch, 0
                if save_best is not None:
                    save_best(record)
            else:
                state.bad_epochs += 1
        elif save_best is not None:
            save_best(record)
        state.history.append(record)
        state.epochs_done = epoch
        save_resume_state(out, model, method, state)
        if progress is not None:
            progress(
                Progress(
                    state.phase,
                    epoch,
                    epochs,
                    method.steps_per_epoch,
                    method.steps_per_epoch,
                    {k: v for k, v in record.items() if not k.startswith("val_") and k != "epoch"},
                    record,
                    (time.perf_counter() - started) / max(steps_done, 1) * (steps_left_total - steps_done),
                )
            )
        if validate and state.bad_epochs >= config.patience:
            break
    return state


def save_resume_state(out: Path, model: nn.Module, method: Method, state: PhaseState) -> None:
    payload = {
        "model": model.state_dict(),
        "method": method.state_dict(),
        "state": {
            "phase": state.phase,
            "epochs_done": state.epochs_done,
            "best_miou": state.best_miou,
            "best_epoch": state.best_epoch,
            "bad_epochs": state.bad_epochs,
            "history": state.history,
        },
    }
    with atomic_write(resume_path(out)) as tmp:
        torch.save(payload, tmp)


def load_resume_state(out: Path) -> dict[str, Any] | None:
    path = resume_path(out)
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged file must not crash with a traceback
        raise InputError(path, f"resume state is not readable ({str(exc).splitlines()[0]})") from exc


def batches_per_epoch(view, batch_size: int) -> int:
    return max(1, len(view) // batch_size)
