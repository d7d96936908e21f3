"""Where a model runs and in what precision: cuda, then mps, then cpu; bf16 where the hardware has it."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch

from engine.errors import InputError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def pick_device(preference: str = "auto") -> torch.device:
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda", "no CUDA GPU is visible to PyTorch on this machine")
    if preference == "mps" and not torch.backends.mps.is_available():
        raise InputError("--device mps", "Apple's MPS backend is not available on this machine")
    if preference not in ("cpu", "cuda", "mps"):
        raise InputError(f"--device {preference}", "use auto, cpu, cuda or mps")
    return torch.device(preference)


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: without them bf16 on a CPU is emulated and slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_precision(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The autocast dtype (float32 means no autocast)."""
    if precision not in PRECISIONS:
        raise InputError(f"--precision {precision}", f"use one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return torch.float32
    if precision == "fp16":
        if device.type == "cpu":
            raise InputError("--precision fp16", "fp16 autocast is for GPUs; use bf16 or fp32 on a CPU")
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_bf16():
        return torch.bfloat16
    return torch.float32


def autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
