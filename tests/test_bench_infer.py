"""The inference benchmark's own parts: the mosaic, the report section, and one end-to-end child."""

from __future__ import annotations

import json

import numpy as np
import rasterio

from engine.bench_infer import Measurements, _mirror, build_mosaic
from engine.bench_infer_report import markdown, targets, write_section
from engine.bench_infer_run import EndToEnd, end_to_end, peak_rss_mb
from engine.inference import PredictOptions


def test_mirror_indices_fold_back_without_a_seam():
    assert _mirror(3, 8).tolist() == [0, 1, 2, 2, 1, 0, 0, 1]


def test_mosaic_keeps_pixels_and_georeferencing(tmp_path, iburi_post):
    out = build_mosaic(iburi_post, tmp_path / "m.tif", 2100)
    with rasterio.open(iburi_post) as src, rasterio.open(out) as ds:
        assert (ds.width, ds.height, ds.count) == (2100, 2100, src.count)
        assert ds.crs == src.crs and ds.transform == src.transform
        original = src.read()
        h, w = original.shape[1:]
        np.testing.assert_array_equal(ds.read(window=((0, h), (0, w))), original)
        # the next copy to the right is the mirror image, starting with the last column again
        right = ds.read(window=((0, h), (w, 2100)))
        np.testing.assert_array_equal(right, original[:, :, ::-1][:, :, : 2100 - w])
    assert build_mosaic(iburi_post, out, 2100) == out  # reused, not rebuilt


def test_write_section_replaces_only_its_own_part(tmp_path):
    doc = tmp_path / "B.md"
    doc.write_text("# Benchmarks\n\nhand-written\n")
    write_section(doc, "inference-cpu", "first")
    write_section(doc, "other", "kept")
    write_section(doc, "inference-cpu", "second")
    text = doc.read_text()
    assert "hand-written" in text and "kept" in text and "second" in text and "first" not in text
    assert text.count("<!-- bench:inference-cpu -->") == 1


def _report(device="cpu"):
    ours = {"seconds": 2.0, "mpx_per_s": 0.5, "peak_rss_mb": 600.0, "tiles": 12}
    naive = {"seconds": 6.0, "mpx_per_s": 0.1667, "peak_rss_mb": 700.0, "tiles": 12}
    run = {"precision": "bf16", "batch": 1, "tiles_per_s": 11.0}
    return {
        "device": device,
        "machine": "test CPU",
        "date": "2026-11-21",
        "runs": 5,
        "peak_gflops": {"fp32": 190.0, "bf16": 410.0},
        "models": [
            {
                "model": "kda_student",
                "weights": "kda_student_bijie",
                "gflops_per_tile": 10.7,
                "runs": [run],
                "best": run,
                "fraction_of_peak": 10.7 * 11 / 410,
                "fraction_of_bf16_peak": 10.7 * 11 / 410,
            }
        ],
        "end_to_end": [
            {
                "model": "kda_student",
                "scene": "16384²",
                "mpx": 268.4,
                "ours": ours,
                "naive": naive,
                "speedup": 3.0,
            }
        ],
        "training": [{"model": "kda_student", "images_per_s": {"fp32": 8.8, "bf16": 11.1}}],
    }


def test_markdown_has_every_figure():
    text = markdown(_report(), "python -m engine bench infer")
    for figure in ("bf16 410 GFLOP/s", "29%", "| 11.00 |", "**3.00×**", "| 600 |", "| 8.80 | 11.10 |"):
        assert figure in text, figure
    assert "| kda_student model only ≥ 50 % of what the bf16 peak allows | 29% | **no** |" in text


def test_targets_are_checked_against_the_figures():
    report = _report()
    small = {**report["end_to_end"][0], "scene": "4096²", "mpx": 16.8}
    small["ours"] = {**small["ours"], "peak_rss_mb": 400.0}
    report["end_to_end"].insert(0, small)
    met = {target: ok for target, _, ok in targets(report)}
    assert met == {
        "kda_student end to end on 16384²: ≥ 3× the naive way": True,
        "peak RSS on 16384² ≤ 1.5 GB": True,
        "peak RSS on 16384² ≤ 1.3× that on 4096²": False,  # 600 / 400 MB
        "kda_student model only ≥ 50 % of what the bf16 peak allows": False,
    }
    gpu = {target: ok for target, _, ok in targets(_report("cuda"))}
    assert gpu["kda_student model only ≥ 2000 tiles/s at 512²"] is False


def test_end_to_end_child_reports_its_own_time_and_memory(iburi_post):
    """The child's peak is its own, not its parent's: Linux carries ru_maxrss across fork and exec."""
    ballast = np.ones(2**30 // 8)  # 1 GiB in this process, touched, when the child is started
    result = end_to_end("kda_student", iburi_post, "ours", 1, PredictOptions(batch=2), iburi_post)
    assert isinstance(result, EndToEnd)
    assert result.tiles == 12 and result.seconds > 0
    assert 100 < result.peak_rss_mb < peak_rss_mb() - 500, (result.peak_rss_mb, peak_rss_mb())
    del ballast


def test_a_stopped_benchmark_goes_on_where_it_stopped(tmp_path):
    path = tmp_path / "partial.json"
    calls = []

    def measure(x):
        calls.append(x)
        return x * 2

    first = Measurements(path, {"machine": "m", "code": "a"})
    assert first.get("one", measure, 1) == 2 and first.get("one", measure, 1) == 2
    again = Measurements(path, {"machine": "m", "code": "a"})  # a new run after a stop
    assert again.get("one", measure, 1) == 2 and again.get("two", measure, 2) == 4
    assert calls == [1, 2]
    changed = Measurements(path, {"machine": "m", "code": "b"})  # other code: nothing is reused
    assert changed.get("one", measure, 1) == 2 and calls == [1, 2, 1]
    changed.finish()
    assert not path.exists()


def test_a_saved_report_is_rendered_without_measuring(tmp_path, capsys):
    from engine.cli import main

    saved = tmp_path / "bench_infer_cpu.json"
    saved.write_text(json.dumps({**_report(), "command": "python -m engine bench infer --runs 7"}))
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n")
    assert main(["bench", "infer", "--render", str(saved), "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert "<!-- bench:inference-cpu -->" in text and "`python -m engine bench infer --runs 7`" in text
    assert "**3.00×**" in text


def test_profile_shares_add_up_and_find_the_convolutions():
    from engine.bench import profile_shares

    ms, shares = profile_shares("kda_student", "fp32", batch=1, size=64, runs=1)
    assert ms > 0 and abs(sum(shares.values()) - 1) < 1e-9
    assert shares["convolutions"] > 0.05 and shares["matrix products (linear layers)"] > 0
