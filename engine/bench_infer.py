"""`python -m engine bench infer`: whole-scene inference speed and memory, ours against the naive way.

The naive baseline is what a typical script does: read the whole scene into one array, run one tile
at a time in fp32 (NCHW, `torch.no_grad`), and hold the whole probability output in memory until it
is written. It runs the same tile grid and blending as Scarp, so both produce the same map and the
ratio measures engineering, not less work. Each end-to-end figure comes from a fresh child process
(`engine.bench_infer_run`) so that its peak RSS is its own.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import rasterio
import torch

from engine.bench import count_flops, machine, training_throughput
from engine.bench_infer_run import end_to_end, research_member
from engine.devices import autocast, cpu_has_bf16, pick_device
from engine.inference import PredictOptions
from engine.models import RESEARCH_MODELS
from engine.store.files import atomic_write, atomic_write_text

IBURI = Path("../shared/data/iburi_s2/post_event_S2_RGB_B4B3B2.tif")


# ---------------------------------------------------------------------------------------------------
# Scenes


def build_mosaic(source: Path, out: Path, size: int) -> Path:
    """A size × size tiled GeoTIFF made of mirrored copies of `source`, written band of rows by band.

    Mirroring (not plain repetition) keeps the mosaic free of seams, so it looks like one large scene
    to a model. It keeps the source's pixel size and origin. An existing file of the right size is
    reused: building the 16384² mosaic takes about a minute.
    """
    if out.is_file():
        with rasterio.open(out) as ds:
            if (ds.width, ds.height) == (size, size):
                return out
    with rasterio.open(source) as src:
        data = src.read()
        profile = {
            "driver": "GTiff",
            "width": size,
            "height": size,
            "count": src.count,
            "dtype": src.dtypes[0],
            "crs": src.crs,
            "transform": src.transform,
            "nodata": src.nodata,
            "compress": "deflate",
            "tiled": True,
            "blockxsize": 512,
            "blockysize": 512,
            "BIGTIFF": "IF_SAFER",
        }
    cols = _mirror(data.shape[2], size)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        for y in range(0, size, 512):
            rows = _mirror(data.shape[1], size)[y : y + 512]
            dst.write(data[:, rows][:, :, cols], window=((y, y + len(rows)), (0, size)))
    return out


def _mirror(length: int, size: int) -> np.ndarray:
    """Indices 0..length-1, then back down, and so on: mirrored copies that meet without a seam."""
    k = np.arange(size) % (2 * length)
    return np.where(k < length, k, 2 * length - 1 - k)


# ---------------------------------------------------------------------------------------------------
# Models and their cost


def model_tiles_per_s(
    model: torch.nn.Module, device: torch.device, dtype: torch.dtype, batch: int, runs: int, size: int = 512
) -> float:
    """Median tiles/s of the model alone on random (batch, 3, size, size) input, after 2 warm-ups."""
    model = model.to(device, memory_format=torch.channels_last).eval()
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        for i in range(runs + 2):
            _sync(device)
            start = time.perf_counter()
            with autocast(device, dtype):
                model(x)
            _sync(device)
            if i >= 2:
                times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def matmul_peak(device: torch.device, dtype: torch.dtype, runs: int = 5) -> float:
    """This machine's measured matmul GFLOP/s in `dtype` (best of the timed runs of large squares)."""
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = math.inf
    for i in range(runs + 2):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        if i >= 2:
            best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------------
# The whole benchmark


class Measurements:
    """The finished measurements of one benchmark, kept on disk as they are made, so a run that is
    stopped (an hour on a CPU) goes on where it stopped. Saved ones are reused only when the machine,
    the settings and the code being measured are the same."""

    def __init__(self, path: Path | None, header: dict, log=print) -> None:
        self.path, self.header, self.done = path, header, {}
        if path is not None and path.is_file():
            saved = json.loads(path.read_text())
            if saved.get("header") == header:
                self.done = saved["done"]
                log(f"resuming: {len(self.done)} measurements already made ({path})")

    def get(self, key: str, measure, *args):
        """The saved value of `key`, or `measure(*args)`, saved."""
        if key not in self.done:
            self.done[key] = measure(*args)
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(self.path, json.dumps({"header": self.header, "done": self.done}))
        return self.done[key]

    def finish(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _code_version() -> str:
    """A digest of the code the benchmark measures: the pipeline, the tiling and the models."""
    root = Path(__file__).resolve().parent
    files = [
        root / "inference.py",
        root / "tiling.py",
        Path(__file__),
        root / "bench_infer_run.py",
        *sorted((root / "models").glob("*.py")),
    ]
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:16]


def run_benchmark(
    *,
    quick: bool = False,
    device_name: str = "auto",
    runs: int = 5,
    cache: Path = Path(".cache/bench"),
    iburi: Path = IBURI,
    large: int = 16384,
    small: int = 4096,
    threads: int | None = None,
    log=print,
) -> dict:
    """Measure everything, returning a JSON-able report; `quick` is a minute-long smoke run.

    Measurements are kept in `cache` as they are made, and a later run with the same settings on the
    same machine and code reuses them: a stopped benchmark goes on where it stopped.
    """
    device = pick_device(device_name)
    if quick:
        runs, large, small = 1, 1536, 1024
    models = ("kda_student",) if quick else RESEARCH_MODELS
    precisions = [torch.float32, torch.bfloat16]
    if device.type == "cuda":
        precisions.append(torch.float16)
    batches = (1, 4) if device.type == "cpu" else (8, 32, 64, 128)
    if quick:
        batches = batches[:1]
    report: dict = {
        "machine": machine() if device.type == "cpu" else torch.cuda.get_device_name(device),
        "device": device.type,
        "runs": runs,
        "date": time.strftime("%Y-%m-%d"),
        "bf16_native": cpu_has_bf16() if device.type == "cpu" else True,
    }
    header = {
        "machine": report["machine"],
        "runs": runs,
        "quick": quick,
        "large": large,
        "small": small,
        "threads": threads,
        "code": _code_version(),
    }
    saved = Measurements(None if quick else cache / f"bench_infer_{device.type}.partial.json", header, log)

    log("matmul peak …")
    report["peak_gflops"] = saved.get(
        "peak", lambda: {_name(p): matmul_peak(device, p, runs) for p in precisions}
    )
    log(f"  {report['peak_gflops']}")

    report["models"] = []
    for architecture in models:
        member = research_member(architecture)
        gflops = saved.get(f"gflops/{architecture}", _gflops_per_tile, member.model)
        rows = []
        for precision in precisions:
            for batch in batches:
                rate = saved.get(
                    f"model/{architecture}/{_name(precision)}/{batch}",
                    model_tiles_per_s,
                    member.model,
                    device,
                    precision,
                    batch,
                    runs,
                )
                rows.append({"precision": _name(precision), "batch": batch, "tiles_per_s": rate})
                log(f"{architecture} {_name(precision)} batch {batch}: {rate:.2f} tiles/s")
        best = max(rows, key=lambda r: r["tiles_per_s"])
        peak = report["peak_gflops"][best["precision"]]
        report["models"].append(
            {
                "model": architecture,
                "weights": member.label,
                "gflops_per_tile": gflops,
                "runs": rows,
                "best": best,
                "fraction_of_peak": gflops * best["tiles_per_s"] / peak,
                "fraction_of_bf16_peak": gflops * best["tiles_per_s"] / report["peak_gflops"]["bf16"],
            }
        )
        member.model.cpu()

    # End to end: our pipeline with the best model-only settings, the naive way beside it.
    scenes = [("Iburi", iburi)]
    scenes.append((f"{small}²", build_mosaic(iburi, cache / f"iburi_mosaic_{small}.tif", small)))
    scenes.append((f"{large}²", build_mosaic(iburi, cache / f"iburi_mosaic_{large}.tif", large)))
    report["end_to_end"] = []
    for entry in report["models"]:
        best = entry["best"]
        options = PredictOptions(
            batch=best["batch"], precision=best["precision"], device=device.type, threads=threads
        )
        for label, scene in scenes:
            if label != "Iburi" and entry["model"] != "kda_student":
                continue  # whole mosaics only for the default model: hours for the others on a CPU
            with rasterio.open(scene) as ds:
                mpx = ds.width * ds.height / 1e6
            row = {"model": entry["model"], "scene": label, "mpx": mpx, "options": vars(options).copy()}
            for mode in ("ours", "naive"):
                log(f"end to end: {entry['model']} on {label}, {mode} …")
                result = saved.get(
                    f"e2e/{entry['model']}/{label}/{mode}/{best['precision']}/{best['batch']}",
                    _end_to_end_record,
                    entry["model"],
                    scene,
                    mode,
                    runs,
                    options,
                    iburi,
                )
                row[mode] = {**result, "mpx_per_s": mpx / result["seconds"]}
                log(f"  {mpx / result['seconds']:.3f} Mpx/s, peak RSS {result['peak_rss_mb']:.0f} MB")
            row["speedup"] = row["ours"]["mpx_per_s"] / row["naive"]["mpx_per_s"]
            report["end_to_end"].append(row)

    report["training"] = []
    if not quick and device.type == "cpu":
        for architecture in models:
            rates = {
                p: saved.get(
                    f"train/{architecture}/{p}",
                    training_throughput,
                    architecture,
                    256,
                    4,
                    runs,
                    2,
                    p,
                )
                for p in ("fp32", "bf16")
            }
            report["training"].append({"model": architecture, "images_per_s": rates})
            log(f"training {architecture}: {rates}")
    saved.finish()
    return report


def _gflops_per_tile(model: torch.nn.Module) -> float:
    return count_flops(model.float().cpu(), 512, 3) / 1e9


def _end_to_end_record(*args) -> dict:
    return asdict(end_to_end(*args))


def _name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
