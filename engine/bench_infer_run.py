"""One end-to-end measurement of the inference benchmark, in a process of its own so that its peak RSS
is its own: `python -m engine.bench_infer_run ARCH SCENE ours|naive ...`. Also the naive baseline,
and which weights each research model is measured with."""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.inference import Member, PredictOptions, predict_scene, prepare, resolve_models, scene_grid
from engine.io.raster import open_scene
from engine.io.writers import write_raster
from engine.models import RESEARCH_MODELS
from engine.models.checkpoint import ModelCard
from engine.models.shipped import ASSETS, shipped_names
from engine.tiling import blend_weights, pad_tile


def research_member(architecture: str) -> Member:
    """The shipped 3-band checkpoint of an architecture, or a random-weight one (same speed)."""
    for name in shipped_names():
        card = ModelCard.from_file(ASSETS / f"{name}.json")
        if card.architecture == architecture and card.in_channels == 3:
            return resolve_models(name, 3)[0]
    torch.manual_seed(0)
    return resolve_models(architecture, 3)[0]


# ---------------------------------------------------------------------------------------------------
# The naive baseline


def naive_predict(
    member: Member, scene_path: Path, mask_out: Path, probabilities_out: Path, tile=512, overlap=64
):
    """The whole-scene, one-tile-at-a-time, fp32 way; same grid and blending as `predict_scene`."""
    model = member.model.to(memory_format=torch.contiguous_format).eval()
    with open_scene(scene_path) as scene:
        d = scene.descriptor
        raw = scene.read()  # the whole scene
        valid = scene.valid(raw)
        image = raw[list(member.bands)].astype(np.float32)
    image = (image - member.mean[:, None, None]) / member.std[:, None, None]
    image[:, ~valid] = 0.0
    grid = scene_grid(d, PredictOptions(tile=tile, overlap=overlap))
    weights = blend_weights(grid.tile, grid.overlap).astype(np.float32)
    total = np.zeros((d.height, d.width), np.float32)
    weight = np.zeros((d.height, d.width), np.float32)
    with torch.no_grad():
        for t in grid.tiles():
            y, x, h, w = grid.source_window(t)
            x_tile = torch.from_numpy(
                np.ascontiguousarray(pad_tile(image[:, y : y + h, x : x + w], grid.tile))
            )
            probability = torch.softmax(model(x_tile[None]), dim=1)[0, 1].numpy()
            total[y : y + h, x : x + w] += probability[:h, :w] * weights[:h, :w]
            weight[y : y + h, x : x + w] += weights[:h, :w]
    probability = np.where(valid, total / weight, np.nan).astype(np.float32)
    write_raster(mask_out, ((probability >= 0.5) & valid).astype(np.uint8), d)
    write_raster(probabilities_out, probability, d, nodata=float("nan"))
    return len(grid)


# ---------------------------------------------------------------------------------------------------
# End to end, in a child process


@dataclass(frozen=True)
class EndToEnd:
    seconds: float  # median of the timed runs
    runs: int
    peak_rss_mb: float
    tiles: int


def end_to_end(
    architecture: str, scene: Path, mode: str, runs: int, options: PredictOptions, warmup: Path
) -> EndToEnd:
    """Median seconds and the peak RSS of a child that loads the model, warms up, then times `runs`."""
    command = [
        sys.executable, "-m", "engine.bench_infer_run", architecture, str(scene), mode,
        "--runs", str(runs), "--warmup", str(warmup), "--batch", str(options.batch),
        "--precision", options.precision, "--device", options.device,
    ]  # fmt: skip
    if options.threads:
        command += ["--threads", str(options.threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child failed: {' '.join(command)}\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return EndToEnd(statistics.median(result["seconds"]), runs, result["peak_rss_mb"], result["tiles"])


def _child(args: argparse.Namespace) -> None:
    options = PredictOptions(
        batch=args.batch, precision=args.precision, device=args.device, threads=args.threads
    )
    member = research_member(args.architecture)
    seconds = []
    tiles = 0
    with tempfile.TemporaryDirectory(prefix="scarp-bench-") as tmp:
        out = Path(tmp)
        for i, scene in enumerate([args.warmup] + [args.scene] * args.runs):
            start = time.perf_counter()
            if args.mode == "naive":
                with open_scene(scene) as opened:
                    prepare(member, opened)
                tiles = naive_predict(member, scene, out / "mask.tif", out / "prob.tif")
            else:
                tiles = predict_scene([member], scene, out / "mask.tif", out / "prob.tif", options).tiles
            if i > 0:
                seconds.append(time.perf_counter() - start)
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "tiles": tiles}))


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss across
    fork and exec, so a child would report its parent's peak when that was higher."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # elsewhere: bytes on macOS, KiB on BSD
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def main(argv: list[str] | None = None) -> None:
    run = argparse.ArgumentParser(
        prog="python -m engine.bench_infer_run",
        description="one end-to-end measurement (used by the benchmark)",
    )
    run.add_argument("architecture", choices=RESEARCH_MODELS)
    run.add_argument("scene", type=Path)
    run.add_argument("mode", choices=("ours", "naive"))
    run.add_argument("--runs", type=int, default=5)
    run.add_argument("--warmup", type=Path, required=True)
    run.add_argument("--batch", type=int, default=4)
    run.add_argument("--precision", default="auto")
    run.add_argument("--device", default="auto")
    run.add_argument("--threads", type=int)
    _child(run.parse_args(argv))


if __name__ == "__main__":
    main()
