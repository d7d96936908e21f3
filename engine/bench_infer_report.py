"""The `docs/BENCHMARKS.md` section of `python -m engine bench infer`: the tables, and each of the
issue's targets checked against the figures of the same run."""

from __future__ import annotations

from pathlib import Path

from engine.store.files import atomic_write_text

SECTION = "inference-{device}"


def targets(report: dict) -> list[tuple[str, str, bool]]:
    """(target, what was measured, met) for each target that the report has the figures for."""
    checks = []
    kda = next((m for m in report["models"] if m["model"] == "kda_student"), None)
    mosaics = sorted(
        (r for r in report["end_to_end"] if r["model"] == "kda_student" and r["scene"] != "Iburi"),
        key=lambda r: r["mpx"],
    )
    if mosaics:
        large = mosaics[-1]
        checks.append(
            (
                f"kda_student end to end on {large['scene']}: ≥ 3× the naive way",
                f"{large['speedup']:.2f}×",
                large["speedup"] >= 3,
            )
        )
        rss = large["ours"]["peak_rss_mb"]
        checks.append((f"peak RSS on {large['scene']} ≤ 1.5 GB", f"{rss:.0f} MB", rss <= 1536))
    if len(mosaics) > 1:
        small, large = mosaics[0], mosaics[-1]
        growth = large["ours"]["peak_rss_mb"] / small["ours"]["peak_rss_mb"]
        checks.append(
            (
                f"peak RSS on {large['scene']} ≤ 1.3× that on {small['scene']}",
                f"{growth:.2f}×",
                growth <= 1.3,
            )
        )
    if kda is not None:
        share = kda["fraction_of_bf16_peak"]
        checks.append(
            ("kda_student model only ≥ 50 % of what the bf16 peak allows", f"{share:.0%}", share >= 0.5)
        )
        if report["device"] == "cuda":
            rate = kda["best"]["tiles_per_s"]
            checks.append(("kda_student model only ≥ 2000 tiles/s at 512²", f"{rate:.0f}", rate >= 2000))
    return checks


def markdown(report: dict, command: str) -> str:
    """The BENCHMARKS.md section for one report."""
    peaks = report["peak_gflops"]
    lines = [
        f"Machine: {report['machine']}; {report['date']}. Command: `{command}`.",
        f"Every figure is the median of {report['runs']} runs after a warm-up.",
        "",
        "Measured matmul peak (2048² square matmuls on a CPU, 8192² on a GPU): "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items())
        + ".",
        "",
        "**Model only**, 512² tiles, 3 bands, best batch and precision"
        " (on a GPU, the share of the bf16 peak is the MFU):",
        "",
        "| model | weights | GFLOPs/tile | best | tiles/s | of that precision's peak | of the bf16 peak |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for m in report["models"]:
        b = m["best"]
        lines.append(
            f"| {m['model']} | {m['weights']} | {m['gflops_per_tile']:.1f}"
            f" | {b['precision']}, batch {b['batch']} | {b['tiles_per_s']:.2f}"
            f" | {m['fraction_of_peak']:.0%} | {m['fraction_of_bf16_peak']:.0%} |"
        )
    lines += [
        "",
        "All model-only runs (tiles/s):",
        "",
        "| model | "
        + " | ".join(f"{r['precision']} b{r['batch']}" for r in report["models"][0]["runs"])
        + " |",
        "|---|" + "---:|" * len(report["models"][0]["runs"]),
    ]
    for m in report["models"]:
        lines.append(f"| {m['model']} | " + " | ".join(f"{r['tiles_per_s']:.2f}" for r in m["runs"]) + " |")
    lines += [
        "",
        "**End to end** (read, normalise, infer, blend, write the mask and the probability GeoTIFFs):",
        "",
        "| model | scene | Mpx | ours Mpx/s | ours peak RSS (MB) | naive Mpx/s | naive peak RSS (MB)"
        " | ours/naive |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["end_to_end"]:
        o, n = r["ours"], r["naive"]
        lines.append(
            f"| {r['model']} | {r['scene']} | {r['mpx']:.1f} | {o['mpx_per_s']:.3f}"
            f" | {o['peak_rss_mb']:.0f} | {n['mpx_per_s']:.3f} | {n['peak_rss_mb']:.0f}"
            f" | **{r['speedup']:.2f}×** |"
        )
    if report["training"]:
        lines += [
            "",
            "**Training** throughput (full steps with each model's default method and loss,"
            " 256² crops, batch 4):",
            "",
            "| model | images/s fp32 | images/s bf16 |",
            "|---|---:|---:|",
        ]
        for t in report["training"]:
            rates = t["images_per_s"]
            lines.append(f"| {t['model']} | {rates['fp32']:.2f} | {rates['bf16']:.2f} |")
    checks = targets(report)
    if checks:
        lines += ["", "**Targets**, checked against the figures above:", "", "| target | measured | met |"]
        lines.append("|---|---:|---|")
        lines += [f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, m, ok in checks]
    return "\n".join(lines)


def write_section(doc: Path, name: str, body: str) -> None:
    """Replace (or append) the part of `doc` between `<!-- bench:name -->` and `<!-- /bench:name -->`."""
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = doc.read_text() if doc.is_file() else ""
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write_text(doc, text)
