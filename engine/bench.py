"""Benchmarks run from the CLI (`python -m engine bench ...`): their tables go into docs/, not tests."""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from engine.devices import autocast, cpu_has_bf16
from engine.models import ARCHITECTURES, build_model


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    for line in info.splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    bf16 = "with" if cpu_has_bf16() else "without"
    return f"{cpu}, {torch.get_num_threads()} threads, {bf16} AVX512-BF16/AMX, torch {torch.__version__}"


def count_flops(model: torch.nn.Module, size: int = 512, channels: int = 3) -> int:
    """FLOPs of one forward pass (a multiply-add counts 2), from torch's own operator counter."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, channels, size, size))
    return counter.get_total_flops()


def time_forward(
    model: torch.nn.Module, dtype: torch.dtype, size: int = 512, runs: int = 5, warmup: int = 2
) -> float:
    """Median ms of one batch-1 forward on the CPU, after warm-up."""
    x = torch.randn(1, 3, size, size).contiguous(memory_format=torch.channels_last)
    model = model.to(memory_format=torch.channels_last)
    device = torch.device("cpu")
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            start = time.perf_counter()
            with autocast(device, dtype):
                model(x)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def model_table(names: list[str] | None = None, size: int = 512, runs: int = 5) -> list[dict]:
    rows = []
    for name in names or list(ARCHITECTURES):
        torch.manual_seed(0)
        model = build_model(name).eval()
        decoder = getattr(model, "decoder_parameter_count", None)
        rows.append(
            {
                "model": name,
                "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
                "decoder_params_m": decoder() / 1e6 if decoder else None,
                "gflops": count_flops(model, size) / 1e9,
                "ms_fp32": time_forward(model, torch.float32, size, runs),
                "ms_bf16": time_forward(model, torch.bfloat16, size, runs),
            }
        )
    return rows


def markdown(rows: list[dict], size: int) -> str:
    lines = [
        f"| model | parameters (M) | GFLOPs at {size}² | CPU ms/tile fp32 | CPU ms/tile bf16 |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        params = f"{r['params_m']:.2f}"
        if r["decoder_params_m"] is not None:
            params += f" (decoder {r['decoder_params_m']:.3f})"
        lines.append(
            f"| {r['model']} | {params} | {r['gflops']:.1f} | {r['ms_fp32']:.0f} | {r['ms_bf16']:.0f} |"
        )
    return "\n".join(lines)


def training_throughput(
    name: str, size: int = 256, batch: int = 4, steps: int = 5, warmup: int = 2, precision: str = "fp32"
) -> float:
    """Images per second of full training steps (forward, loss, backward, optimiser) on the CPU."""
    from engine.training.config import TrainConfig
    from engine.training.method import Batch
    from engine.training.supervised import with_paper_defaults
    from engine.training.train import _method

    torch.manual_seed(0)
    config = with_paper_defaults(TrainConfig(model=name, batch_size=batch, size=size, precision=precision))
    device = torch.device("cpu")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = build_model(name).to(memory_format=torch.channels_last)
    method = _method("train", model, config, device, dtype, steps + warmup, None)
    mask = torch.zeros(batch, size, size, dtype=torch.long)
    mask[:, size // 4 : size // 2, size // 4 : size // 2] = 1  # a landslide, so MRIFE has edge blocks
    data = Batch(torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last), mask)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        method.train_step(data)
        method.after_step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def training_table(names: list[str] | None, size: int, batch: int, steps: int) -> str:
    lines = [f"| model | images/s fp32 ({size}², batch {batch}) | images/s bf16 |", "|---|---:|---:|"]
    for name in names or list(ARCHITECTURES):
        fp32 = training_throughput(name, size, batch, steps, precision="fp32")
        bf16 = training_throughput(name, size, batch, steps, precision="bf16")
        lines.append(f"| {name} | {fp32:.2f} | {bf16:.2f} |")
    return "\n".join(lines)


PROFILE_GROUPS = {
    "convolutions": ("aten::mkldnn_convolution", "aten::_convolution", "aten::convolution"),
    "attention (scaled dot product)": ("aten::_scaled_dot_product_flash_attention_for_cpu",),
    "matrix products (linear layers)": ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm"),
    "copies and dtype casts": ("aten::copy_", "aten::_to_copy", "aten::clone"),
    "upsampling": ("aten::upsample_bilinear2d", "aten::upsample_nearest2d"),
    "norms and activations": (
        "aten::native_batch_norm", "aten::native_layer_norm", "aten::gelu", "aten::clamp_min_",
        "aten::relu_", "aten::hardswish_", "aten::sigmoid",
    ),
}  # fmt: skip


def profile_shares(
    name: str, precision: str = "bf16", batch: int = 1, size: int = 512, runs: int = 10
) -> tuple[float, dict[str, float]]:
    """Where a forward's CPU time goes: (ms per forward, {group: share of the self time}), from
    torch.profiler over `runs` forwards after 3 warm-ups, the way the inference bench runs a model."""
    from torch.profiler import ProfilerActivity, profile

    from engine.bench_infer_run import research_member

    device, dtype = torch.device("cpu"), torch.bfloat16 if precision == "bf16" else torch.float32
    model = research_member(name).model.to(memory_format=torch.channels_last).eval()
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(3):
            with autocast(device, dtype):
                model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                with autocast(device, dtype):
                    model(x)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    shares = {
        group: sum(e.self_cpu_time_total for e in events if e.key in ops) / total
        for group, ops in PROFILE_GROUPS.items()
    }
    shares["everything else"] = 1 - sum(shares.values())
    return total / runs / 1e3, shares
