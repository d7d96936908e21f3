"""MRIFE training (He et al., 2024, III-C/D): Loss = α·L_rec + β·L_cons + γ·L_CE, then an EMA teacher step.

Readings of the paper, where it leaves a choice open:

- Pairs. "Two different landslide samples" form a pair; the batch is cut into pairs (2k, 2k+1), so the
  batch size must be even. A sample without edge blocks (a non-landslide crop) masks nothing and adds
  nothing to L_rec or L_cons; its pair still counts in the averages, so such batches weigh less.
- L_rec (Eq. 2, 3). Per image, the mean squared error between the student's features of the masked
  image and the teacher's features of the original, over the masked blocks and all channels; the two
  images of a pair are summed (Eq. 3) and pairs averaged. Eq. 2's 1/n is read as this mean.
- L_cons (Eq. 4-6). For the pair (1, 2), the student's L2-normalised features at the masked blocks of
  image 1 and the teacher's at the masked blocks of image 2 are pooled; edge blocks are class 1 and
  background blocks class 0. Every point is an anchor: each other point of its class is a positive and
  enters Eq. 5 as −log(e^{s_ij} / (e^{s_ij} + Σ_k e^{s_ik})), with k over the other class and s the
  cosine similarity over τ. The indicator of Eq. 5 is read as excluding j = i (its prose inverts it).
  Terms are averaged over positives per anchor and over anchors (the paper's Σ_i would make the loss,
  and so β, grow with the crop size); anchors without positives are skipped, and an empty or one-class
  set gives zero. The two directions are summed (Eq. 6), pairs averaged. Teacher points carry no
  gradient; they are the fixed side of the contrast.
- L_CE (Eq. 7): pixel cross-entropy with IGNORE (255) left out; mix-up's soft targets when present.
  IGNORE pixels do not count as landslide when the blocks are classified.
- Histogram equalisation (IV-B) runs per image and band on the normalised input: each value is replaced
  by its mid-rank CDF, rescaled to zero mean and unit variance so the network keeps the scale it is fed
  otherwise. Ranks do not change under a per-band affine normalisation, so this equals equalising the
  raw bands.
- Optimiser (IV, Table II): SGD, lr 0.007, momentum 0.9, weight decay 5e-4, unless `--optimizer`
  names another (AdamW learns faster from random weights). The paper names no schedule: DeepLab's
  poly decay (power 0.9) from lr to lr_end (default 0) over the run, per batch.
- EMA (Eq. 1) with the model's λ (0.996) after every optimiser step, through `after_step`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import InputError
from engine.training.config import TrainConfig
from engine.training.method import IGNORE, Batch, Method
from engine.training.supervised import build_optimizer

LR = 7e-3
WEIGHT_DECAY = 5e-4
POLY_POWER = 0.9
_FAR = -1e9  # stands for exp(−∞) where a set is empty, without −inf's NaN gradients


def poly_schedule(
    optimizer: torch.optim.Optimizer, start: float, end: float, steps: int, power: float = POLY_POWER
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-batch lr = end + (start − end)·(1 − t/T)^power, flat at `end` after T steps."""
    total = max(1, steps)

    def factor(step: int) -> float:
        return (end + (start - end) * (1.0 - min(step, total) / total) ** power) / start

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def equalise_histograms(image: torch.Tensor) -> torch.Tensor:
    """Per image and band, values → mid-rank CDF in (0, 1) → zero mean, unit variance (uniform)."""
    n, c, h, w = image.shape
    flat = image.detach().float().reshape(n * c, h * w).contiguous()
    ordered = flat.sort(dim=1).values
    below = torch.searchsorted(ordered, flat, right=False)
    upto = torch.searchsorted(ordered, flat, right=True)
    cdf = (below + upto).float() / (2 * h * w)  # ties share a value; a constant band maps to 0.5
    return ((cdf - 0.5) * math.sqrt(12.0)).reshape(n, c, h, w).to(image.dtype)


def supervised_contrast(features: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 5 over one pooled set: features (M, C), labels (M,); see the module notes for the reading."""
    if features.shape[0] < 2:
        return features.sum() * 0.0
    z = F.normalize(features.float(), dim=1)
    sim = z @ z.T / temperature
    same = labels[:, None] == labels[None, :]
    positive = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    negatives = torch.logsumexp(sim.masked_fill(same, _FAR), dim=1, keepdim=True)  # log Σ_k e^{s_ik}
    terms = torch.logaddexp(sim, negatives) - sim  # −log(e^{s_ij} / (e^{s_ij} + Σ_k e^{s_ik}))
    counts = positive.sum(dim=1)
    per_anchor = (terms * positive).sum(dim=1) / counts.clamp(min=1)
    anchors = counts > 0
    if not anchors.any():
        return features.sum() * 0.0
    return per_anchor[anchors].mean()


def reconstruction_loss(student: torch.Tensor, teacher: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Eq. 2-3: per-image MSE at masked blocks, summed within each pair, averaged over pairs."""
    squared = (student.float() - teacher.float()).pow(2).mean(dim=1)  # (N, Hb, Wb), mean over channels
    weight = masked.to(squared.dtype)
    per_image = (squared * weight).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp(min=1)
    return per_image.sum() / (student.shape[0] // 2)


def pair_contrast_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    masked: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Eq. 6 for every pair (2k, 2k+1): student(a) vs teacher(b) plus student(b) vs teacher(a), averaged."""
    total = student.sum() * 0.0
    pairs = student.shape[0] // 2
    for k in range(pairs):
        for a, b in ((2 * k, 2 * k + 1), (2 * k + 1, 2 * k)):
            points = torch.cat(
                [student[a].permute(1, 2, 0)[masked[a]], teacher[b].permute(1, 2, 0)[masked[b]].detach()]
            )
            classes = torch.cat([labels[a][masked[a]], labels[b][masked[b]]])
            total = total + supervised_contrast(points, classes, temperature)
    return total / pairs


def segmentation_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Cross-entropy over pixels that count; zero (not NaN) when none does."""
    valid = batch.mask != IGNORE
    if not valid.any():
        return logits.sum() * 0.0
    if batch.soft is not None:
        per_pixel = -(batch.soft.float() * F.log_softmax(logits.float(), dim=1)).sum(dim=1)
        return per_pixel[valid].mean()
    return F.cross_entropy(logits.float(), batch.mask, ignore_index=IGNORE)


class MRIFEMethod(Method):
    """Segmentation, masked feature modelling and SFCE in one SGD step; the teacher follows by EMA."""

    name = "mrife"

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        device: torch.device,
        dtype: torch.dtype,
        steps_per_epoch: int,
    ):
        super().__init__(model, config, device, dtype, steps_per_epoch)
        _check_even(config.batch_size)
        if not callable(getattr(model, "forward_train", None)) or not callable(
            getattr(model, "update_teacher", None)
        ):
            raise InputError(f"--model {config.model}", "MRIFE training needs the mrife model")
        if len(config.mrife_weights) != 3:
            raise InputError("mrife_weights", f"needs three weights (α, β, γ), got {config.mrife_weights}")
        if config.mrife_temperature <= 0:
            raise InputError("mrife_temperature", f"must be > 0, got {config.mrife_temperature}")
        self.alpha, self.beta, self.gamma = (float(v) for v in config.mrife_weights)
        self.temperature = float(config.mrife_temperature)
        self.trainable = [p for p in model.parameters() if p.requires_grad]  # the EMA teacher is frozen
        start = config.lr if config.lr is not None else LR
        end = config.lr_end if config.lr_end is not None else 0.0
        paper = config.replace(
            optimizer=config.optimizer or "sgd",
            weight_decay=config.weight_decay if config.weight_decay is not None else WEIGHT_DECAY,
        )
        opt = build_optimizer(paper, [{"params": self.trainable, "lr": start}])
        steps = config.epochs * steps_per_epoch
        self.optimizers["model"], self.schedulers["model"] = opt, poly_schedule(opt, start, end, steps)

    def losses(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """All terms with their graphs, so tests and callers can inspect them before stepping."""
        _check_even(batch.image.shape[0])
        image = equalise_histograms(batch.image) if self.config.histogram_equalisation else batch.image
        self.model.train()
        with self.autocast():
            out = self.model.forward_train(image, batch.mask == 1, generator)
        student, teacher = out["student_features"].float(), out["teacher_features"].float()
        masked, labels = out["masked"], out["block_labels"]
        rec = reconstruction_loss(student, teacher, masked)
        cons = pair_contrast_loss(student, teacher, masked, labels, self.temperature)
        ce = segmentation_loss(out["logits"].float(), batch)
        total = self.alpha * rec + self.beta * cons + self.gamma * ce
        return {"loss": total, "rec": rec, "cons": cons, "ce": ce}

    def train_step(self, batch: Batch) -> dict[str, float]:
        losses = self.losses(batch)
        self.step(losses["loss"], "model", self.trainable)
        return {k: float(v.detach()) for k, v in losses.items()}

    def after_step(self) -> None:
        """θ_t ← λθ_t + (1 − λ)θ_s after each optimiser step (Eq. 1)."""
        self.model.update_teacher()


def _check_even(size: int) -> None:
    if size % 2:
        raise InputError(
            "--batch",
            f"MRIFE contrasts samples in pairs (2k, 2k+1), so the batch size must be even, got {size}",
        )
