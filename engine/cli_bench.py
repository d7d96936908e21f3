"""`python -m engine bench ...`: the benchmarks whose tables go into docs/ (models, training, profile,
accuracy, whole-scene inference, and the training studies of `cli_train`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from engine import cli_train


def add_commands(commands) -> None:
    bench = commands.add_parser("bench", help="benchmarks whose tables go into docs/")
    bench_kinds = bench.add_subparsers(dest="bench", required=True, metavar="KIND")
    bench_models = bench_kinds.add_parser(
        "models", help="parameters, GFLOPs and CPU ms per tile of each model"
    )
    bench_models.add_argument("--size", type=int, default=512)
    bench_models.add_argument("--runs", type=int, default=5, help="timed runs after 2 warm-up runs; median")
    bench_models.add_argument("--only", nargs="*", help="some of the registry's models")
    bench_models.set_defaults(run=_bench_models)
    bench_train = bench_kinds.add_parser("train", help="training images/s of each model on this machine")
    bench_train.add_argument("--size", type=int, default=256)
    bench_train.add_argument("--batch", type=int, default=4)
    bench_train.add_argument("--steps", type=int, default=5, help="timed steps after 2 warm-up steps; median")
    bench_train.add_argument("--only", nargs="*", help="some of the registry's models")
    bench_train.set_defaults(run=_bench_train)
    bench_profile = bench_kinds.add_parser("profile", help="where one model's forward spends its CPU time")
    bench_profile.add_argument("--model", default="kda_student", help="a research model")
    bench_profile.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    bench_profile.add_argument("--batch", type=int, default=1)
    bench_profile.set_defaults(run=_bench_profile)
    bench_accuracy = bench_kinds.add_parser(
        "accuracy", help="write docs/ACCURACY.md (shipped models on Bijie val)"
    )
    bench_accuracy.add_argument("--bijie", type=Path, default=Path("../shared/data/bijie"))
    bench_accuracy.add_argument("--out", type=Path, default=Path("docs/ACCURACY.md"))
    bench_accuracy.add_argument(
        "--add",
        type=Path,
        action="append",
        default=[],
        metavar="CKPT",
        help="first score this trained checkpoint that is not shipped and keep its row (repeatable)",
    )
    bench_accuracy.set_defaults(run=_bench_accuracy)
    bench_infer = bench_kinds.add_parser(
        "infer", help="whole-scene inference speed and memory against the naive way (docs/BENCHMARKS.md)"
    )
    bench_infer.add_argument("--quick", action="store_true", help="a one-minute smoke run on small scenes")
    bench_infer.add_argument("--device", default="auto", help="auto, cpu or cuda")
    bench_infer.add_argument("--runs", type=int, default=5, help="timed runs after a warm-up; median")
    bench_infer.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    bench_infer.add_argument("--large", type=int, default=16384, help="side of the large mosaic, px")
    bench_infer.add_argument(
        "--cache", type=Path, default=Path(".cache/bench"), help="where mosaics are kept"
    )
    bench_infer.add_argument("--doc", type=Path, default=Path("docs/BENCHMARKS.md"), help="report to update")
    bench_infer.add_argument(
        "--json", type=Path, help="where the raw figures go (default: docs/results/bench_infer_DEVICE.json)"
    )
    bench_infer.add_argument(
        "--render", type=Path, metavar="JSON", help="measure nothing: write the section from a saved report"
    )
    bench_infer.set_defaults(run=_bench_infer)
    cli_train.add_study_commands(bench_kinds)


def _bench_models(args: argparse.Namespace) -> int:
    from engine import bench

    rows = bench.model_table(args.only, args.size, args.runs)
    print(f"machine: {bench.machine()}")
    print(bench.markdown(rows, args.size))
    return 0


def _bench_profile(args: argparse.Namespace) -> int:
    from engine.bench import profile_shares

    ms, shares = profile_shares(args.model, args.precision, args.batch)
    print(f"{args.model}, {args.precision}, batch {args.batch}, 512²: {ms:.1f} ms of CPU time per forward")
    for group, share in sorted(shares.items(), key=lambda item: -item[1]):
        print(f"  {share:6.1%}  {group}")
    return 0


def _bench_train(args: argparse.Namespace) -> int:
    from engine import bench

    print(f"machine: {bench.machine()}")
    print(bench.training_table(args.only, args.size, args.batch, args.steps))
    return 0


def _bench_infer(args: argparse.Namespace) -> int:
    from engine import bench_infer, bench_infer_report
    from engine.store.files import atomic_write_text

    if args.render is not None:
        report = json.loads(args.render.read_text())
        command = report["command"]
    else:
        report = bench_infer.run_benchmark(
            quick=args.quick,
            device_name=args.device,
            runs=args.runs,
            cache=args.cache,
            large=args.large,
            threads=args.threads,
            log=lambda line: print(line, flush=True),
        )
        flags = [
            f"--{name} {value}"
            for name, value, default in (
                ("device", args.device, "auto"),
                ("runs", args.runs, 5),
                ("threads", args.threads, None),
                ("large", args.large, 16384),
            )
            if value != default
        ]
        command = report["command"] = " ".join(["python -m engine bench infer", *flags])
    body = bench_infer_report.markdown(report, command)
    print(body)
    if args.quick:  # a smoke run is not a figure to publish
        return 0
    if args.render is None:
        raw = args.json or Path(f"docs/results/bench_infer_{report['device']}.json")
        raw.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(raw, json.dumps(report, indent=2) + "\n")
        print(f"wrote {raw}")
    bench_infer_report.write_section(
        args.doc, bench_infer_report.SECTION.format(device=report["device"]), body
    )
    print(f"wrote {args.doc}")
    return 0


def _bench_accuracy(args: argparse.Namespace) -> int:
    from engine.accuracy import record, report
    from engine.store.files import atomic_write_text

    for checkpoint in args.add:
        entry = record(checkpoint, args.bijie)
        print(f"recorded {checkpoint.stem}: val mIoU {100 * entry['metrics']['miou']:.2f}")
    atomic_write_text(args.out, report(args.bijie))
    print(f"wrote {args.out}")
    return 0
