"""KDA phase 1 (Wang et al., GRSL 2025, III-A and IV-A): distil a frozen teacher into the student's backbone.

Readings of the paper, where it leaves a choice open:

- Outputs. O_S is the student's deepest stage through its 1×1 projection to the teacher's width; O_T is
  the teacher's final feature map (DINOv2 patch tokens, or a registry model's deepest encoder stage).
  The two grids differ (patch 14 vs stride 32, each padded bottom/right), so O_T is sampled bilinearly
  at the centres of the student's cells in pixel coordinates: the maps stay aligned however the padding
  falls, and for equal grids the sampling returns the teacher's cells unchanged.
- KL. "Output distributions" are softmaxes over channels at every location, at temperature T = 5;
  KL(teacher ‖ student) is summed over channels, averaged over locations and images, and multiplied by
  T² so its gradients keep the scale of an untempered loss (Hinton et al.).
- Adversarial game (Eq. 2, 3). "The discriminator maximises the MSE gap between D_T and D_S" is played
  as least-squares GAN: D is pushed to 1 on teacher outputs and 0 on (detached) student outputs, which
  bounds the gap it maximises. The student minimises MSE(D(O_S), D(O_T)) literally as Eq. 3 writes it,
  with D(O_T) a constant target; since D(O_T) ≈ 1 this is the LSGAN generator loss with the teacher's
  actual score as the target. Student loss: 0.6·KL + 0.4·MSE (Table I).
- Plain KD (Table III's "KD" rows) is 1.0·KL: the 0.6 of Eq. 3 only balanced KL against the
  adversarial term, and without it a constant factor would just rescale the learning rate.
- Learning rates (IV-A) "gradually decrease": cosine decay per batch from 5e-5 to 5e-8 (student) and
  5e-6 to 5e-9 (discriminator) over the whole phase, AdamW with weight decay 1e-2 (the paper names
  none). `TrainConfig.lr` is phase 2's (the supervised defaults fill it), so phase 1 takes its own
  rates as arguments; a different student rate moves the discriminator's with it (the paper's 10:1).
- Only the encoder and the projection learn: the decoder gets no gradient in this phase anyway, and
  leaving it out of AdamW keeps weight decay from shrinking it before phase 2.
- Resume stores the discriminator's head only; its frozen backbone is the teacher, rebuilt from the
  teacher weights, so a ViT-L is not copied into every resume file.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import InputError
from engine.models.checkpoint import load_model
from engine.models.kda import STRIDES
from engine.models.teachers import (
    DINOV2,
    PATCH,
    DINOv2Teacher,
    Discriminator,
    RegistryTeacher,
    build_dinov2_teacher,
)
from engine.training.config import TrainConfig
from engine.training.method import Batch, Method

TEMPERATURE = 5.0
KL_WEIGHT, ADV_WEIGHT = 0.6, 0.4  # Eq. 3 / Table I
KD_WEIGHT = 1.0
STUDENT_LR = (5e-5, 5e-8)
DISCRIMINATOR_LR = (5e-6, 5e-9)
WEIGHT_DECAY = 1e-2
STUDENT_STRIDE = STRIDES[-1]
_PROBE = 224  # divisible by 8, 14, 16 and 32: a registry teacher's stride shows as 224 / grid


def build_teacher(config: TrainConfig, in_channels: int) -> nn.Module:
    """The frozen teacher `config.teacher` names: a DINOv2 size or a Scarp checkpoint path."""
    spec = config.teacher
    if not spec:
        raise InputError("--teacher", f"distillation needs a teacher: {', '.join(DINOV2)} or a checkpoint")
    if spec in DINOV2:
        if in_channels != 3:
            # the training batch carries no band names to pick red, green and blue from
            raise InputError(
                f"--teacher {spec}",
                f"DINOv2 sees 3 bands (RGB) but the training data has {in_channels}; train on the "
                f"scene's RGB bands, or distil from a Scarp checkpoint trained on the same {in_channels} "
                "bands (--teacher PATH.safetensors)",
            )
        return build_dinov2_teacher(spec, config.teacher_weights)
    if spec.startswith("dinov2") and not Path(spec).exists():
        raise InputError(f"--teacher {spec}", f"unknown DINOv2 teacher; choose one of {', '.join(DINOV2)}")
    model, card = load_model(spec)
    if card.in_channels != in_channels:
        raise InputError(
            spec, f"the teacher was trained on {card.in_channels} bands but the data has {in_channels}"
        )
    try:
        return RegistryTeacher(model)
    except ValueError as exc:  # e.g. an smp baseline: no encoder_features to distil from
        raise InputError(spec, str(exc)) from None


def channel_kl(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float = TEMPERATURE
) -> torch.Tensor:
    """T²·KL(teacher ‖ student) of the per-location channel softmaxes, averaged over locations."""
    log_s = F.log_softmax(student.float() / temperature, dim=1)
    log_t = F.log_softmax(teacher.float() / temperature, dim=1)
    return (log_t.exp() * (log_t - log_s)).sum(dim=1).mean() * temperature**2


def sample_at_cells(
    features: torch.Tensor, stride: float, grid: tuple[int, int], cell: float = STUDENT_STRIDE
) -> torch.Tensor:
    """Bilinear samples of a map with `stride` px cells at the centres of a `grid` of `cell` px cells.

    Both maps start at the image's top-left pixel; beyond the source map's extent the border repeats.
    """
    n, _, h, w = features.shape
    ys = ((torch.arange(grid[0], device=features.device) + 0.5) * cell) / (h * stride) * 2 - 1
    xs = ((torch.arange(grid[1], device=features.device) + 0.5) * cell) / (w * stride) * 2 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    where = torch.stack([gx, gy], dim=-1).to(features.dtype).expand(n, -1, -1, -1)
    return F.grid_sample(features, where, mode="bilinear", padding_mode="border", align_corners=False)


def cosine_schedule(
    optimizer: torch.optim.Optimizer, start: float, end: float, steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-batch cosine decay from `start` to `end` over `steps`, then flat at `end`."""
    total = max(1, steps)

    def factor(step: int) -> float:
        progress = min(step, total) / total
        return (end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))) / start

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@contextmanager
def _no_parameter_grads(parameters: Sequence[nn.Parameter]) -> Iterator[None]:
    """Let gradients pass through a module to its input without filling its own .grad."""
    for p in parameters:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in parameters:
            p.requires_grad_(True)


def _distilled_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The encoder and the teacher projection: what O_S depends on."""
    parts = [getattr(model, name, None) for name in ("encoder", "to_teacher")]
    if any(part is None for part in parts):
        return [p for p in model.parameters() if p.requires_grad]
    return [p for part in parts for p in part.parameters() if p.requires_grad]


class DistillMethod(Method):
    """Phase 1: "kd" (KL only) or "kda" (KL + adversarial), optimisers "student" and "discriminator"."""

    name = "distill"

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        device: torch.device,
        dtype: torch.dtype,
        steps_per_epoch: int,
        *,
        teacher: nn.Module | None = None,
        mode: str | None = None,
        lr: float | None = None,
        lr_end: float | None = None,
    ):
        super().__init__(model, config, device, dtype, steps_per_epoch)
        self.mode = mode or config.distill
        if self.mode not in ("kd", "kda"):
            raise InputError("--distill", f"the distillation phase runs kd or kda, got {self.mode!r}")
        if not callable(getattr(model, "project_to_teacher", None)):
            raise InputError(
                f"--model {config.model}",
                "distillation needs a student with a teacher projection (kda_student)",
            )
        if teacher is None:
            teacher = build_teacher(config, config.in_channels)
        self.teacher = teacher.to(device)
        width = int(getattr(model, "teacher_channels", -1))
        if width != self.teacher.channels:
            raise InputError(
                "teacher_channels",
                f"the student projects to {width} channels but the teacher ({config.teacher}) gives "
                f"{self.teacher.channels}; build the student with the model option "
                f"teacher_channels={self.teacher.channels}",
            )
        self.teacher_stride = self._teacher_stride()
        steps = (config.distill_epochs or config.epochs) * steps_per_epoch
        decay = config.weight_decay if config.weight_decay is not None else WEIGHT_DECAY
        start = lr if lr is not None else STUDENT_LR[0]
        end = lr_end if lr_end is not None else STUDENT_LR[1] * start / STUDENT_LR[0]
        self.student_parameters = _distilled_parameters(model)
        opt = torch.optim.AdamW(self.student_parameters, lr=start, weight_decay=decay)
        self.optimizers["student"], self.schedulers["student"] = opt, cosine_schedule(opt, start, end, steps)
        self.discriminator: Discriminator | None = None
        if self.mode == "kda":
            self.discriminator = Discriminator(self.teacher).to(device)
            ratio = DISCRIMINATOR_LR[0] / STUDENT_LR[0]
            d_opt = torch.optim.AdamW(
                self.discriminator.trainable_parameters(), lr=start * ratio, weight_decay=decay
            )
            self.optimizers["discriminator"] = d_opt
            self.schedulers["discriminator"] = cosine_schedule(d_opt, start * ratio, end * ratio, steps)
            self.extra_modules["discriminator"] = self.discriminator.head

    def _teacher_stride(self) -> float:
        """Pixels per teacher cell: the patch for DINOv2, measured once for a registry model."""
        if isinstance(self.teacher, DINOv2Teacher):
            return float(PATCH)
        probe = torch.zeros(1, self.config.in_channels, _PROBE, _PROBE, device=self.device)
        return _PROBE / self.teacher.features(probe).shape[-1]

    def outputs(self, batch: Batch, grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(O_S, O_T), float32, both on the student's stage-4 grid."""
        self.model.train()
        with torch.set_grad_enabled(grad), self.autocast():
            o_s = self.model.project_to_teacher(self.model.encoder_features(batch.image)[-1])
        with torch.no_grad(), self.autocast():
            t = self.teacher.features(batch.image)
        o_t = sample_at_cells(t.float(), self.teacher_stride, tuple(o_s.shape[-2:]))
        return o_s.float(), o_t

    def discriminator_step(
        self, batch: Batch, outputs: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> dict[str, float]:
        """LSGAN step: D(O_T) → 1, D(O_S) → 0 with O_S detached, so only the head learns."""
        if self.discriminator is None:
            raise RuntimeError("kd distillation has no discriminator")
        o_s, o_t = outputs if outputs is not None else self.outputs(batch, grad=False)
        self.discriminator.train()
        with self.autocast():
            d_t = self.discriminator(o_t).float()
            d_s = self.discriminator(o_s.detach()).float()
        loss = 0.5 * (F.mse_loss(d_t, torch.ones_like(d_t)) + F.mse_loss(d_s, torch.zeros_like(d_s)))
        self.step(loss, "discriminator", self.discriminator.trainable_parameters())
        return {"disc": float(loss.detach())}

    def student_step(
        self, batch: Batch, outputs: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> dict[str, float]:
        """Eq. 3: 0.6·KL + 0.4·MSE(D(O_S), D(O_T)) for kda, KL alone for kd."""
        o_s, o_t = outputs if outputs is not None else self.outputs(batch)
        kl = channel_kl(o_s, o_t)
        losses = {"kl": float(kl.detach())}
        if self.discriminator is None:
            total = KD_WEIGHT * kl
        else:
            self.discriminator.train()
            with _no_parameter_grads(self.discriminator.trainable_parameters()), self.autocast():
                d_s = self.discriminator(o_s).float()
                with torch.no_grad():
                    d_t = self.discriminator(o_t).float()
            adv = F.mse_loss(d_s, d_t)
            total = KL_WEIGHT * kl + ADV_WEIGHT * adv
            losses["adv"] = float(adv.detach())
        self.step(total, "student", self.student_parameters)
        return {"loss": float(total.detach()), **losses}

    def train_step(self, batch: Batch) -> dict[str, float]:
        """One student forward serves both players: D learns first, then the student against the new D."""
        outputs = self.outputs(batch)
        losses: dict[str, float] = {}
        if self.discriminator is not None:
            losses.update(self.discriminator_step(batch, outputs))
        losses.update(self.student_step(batch, outputs))
        return losses
