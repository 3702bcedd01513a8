"""`balancer run` and `balancer demo`: the pipeline from the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.config import EVALUATIONS, GENERATORS, POLICIES, PRESETS, RunConfig
from pipeline.errors import DatasetError


def add_pipeline_commands(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="balance a dataset zip and compare classifiers")
    run.add_argument(
        "dataset", type=Path, help="zip of <class>/<image> or train/<class>/... folders"
    )
    run.add_argument(
        "--out", type=Path, required=True, help="folder for report.json, balanced.zip, ..."
    )
    _add_config_options(run, default_preset="standard")
    run.set_defaults(func=run_command)

    demo = sub.add_parser("demo", help="run the MNIST 1/2/3 demo (10/300/300 training images)")
    demo.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder")
    demo.add_argument(
        "--dataset-only", action="store_true", help="only write the demo zip (e.g. to upload it)"
    )
    _add_config_options(demo, default_preset=None)
    demo.set_defaults(func=demo_command)


def _add_config_options(p: argparse.ArgumentParser, default_preset: str | None) -> None:
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=default_preset,
        help="iteration budget: quick (CPU-sized) or standard"
        + ("" if default_preset else " (default: standard on a GPU, quick on a CPU)"),
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--target", type=int, help="images per class after balancing (default: largest)")
    p.add_argument("--gan-iterations", type=int, help="GAN training iterations per class")
    p.add_argument("--epochs", type=int, help="classifier epochs")
    p.add_argument("--seeds", type=int, help="classifier seeds per method")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, help="working side length in px (multiple of 4)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="held-out share without test/")
    p.add_argument(
        "--generator",
        choices=list(GENERATORS),
        default="auto",
        help="per-class: a GAN per minority class; transfer: variation learned from all classes;"
        " translation: big-class images translated into the class (M2m); auto: the one a proxy"
        " test on this dataset's big classes supports (default)",
    )
    p.add_argument(
        "--evaluation",
        choices=list(EVALUATIONS),
        default="auto",
        help="holdout: the test/ folder or --test-fraction held out; cross-validation: stratified"
        " k-fold over every real image (zips without test/); auto: cross-validation when a"
        " minority class would get fewer than 10 held-out images (default)",
    )
    p.add_argument(
        "--synthetic-share",
        type=_share,
        default="auto",
        help="share of each minority class's missing images that are generated, 0..1 (the rest"
        " are repeated real images; 0 = plain oversampling); auto: what the proxy test supports",
    )
    p.add_argument(
        "--classifier-augment",
        choices=POLICIES,
        default="auto",
        help="random transform of every classifier's training batches, the same for every "
        "method: auto (= affine: rotation ±15°, scale 0.9-1.1, shift ±2 px), affine+flip "
        "(adds mirror images: only where a mirror keeps the class), none",
    )


def config_from_args(args: argparse.Namespace) -> RunConfig:
    preset = args.preset
    if preset is None:
        import torch

        preset = "standard" if args.device != "cpu" and torch.cuda.is_available() else "quick"
    return RunConfig(
        preset=preset,
        device=args.device,
        target=args.target,
        gan_iterations=args.gan_iterations,
        epochs=args.epochs,
        seeds=args.seeds,
        seed=args.seed,
        image_size=args.image_size,
        test_fraction=args.test_fraction,
        generator=args.generator,
        synthetic_share=args.synthetic_share,
        evaluation=args.evaluation,
        classifier_augment=args.classifier_augment,
    ).validated()


def _share(text: str) -> str | float:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"auto or a number from 0 to 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"auto or a number from 0 to 1, got {text!r}")
    return value


def run_command(args: argparse.Namespace) -> int:
    if not args.dataset.is_file():
        return _fail(f"{args.dataset}: no such file")
    return _run(args.dataset, args.out, args)


def demo_command(args: argparse.Namespace) -> int:
    from pipeline.demo import write_demo_zip

    args.out.mkdir(parents=True, exist_ok=True)
    zip_path = args.out / "mnist-1-2-3.zip"
    write_demo_zip(zip_path)
    print(f"demo dataset: {zip_path} (digits 1/2/3, 10/300/300 training, 200 test images each)")
    if args.dataset_only:
        return 0
    return _run(zip_path, args.out, args)


def _run(dataset: Path, out: Path, args: argparse.Namespace) -> int:
    from cli.progress import StageProgress
    from pipeline.run import run_pipeline

    try:
        config = config_from_args(args)
    except ValueError as exc:
        return _fail(str(exc))
    bar = StageProgress()
    try:
        report = run_pipeline(dataset, out, config, bar)
    except DatasetError as exc:
        bar.abort()
        return _fail(f"{dataset}: {exc}")
    except RuntimeError as exc:  # e.g. --device cuda without a GPU
        bar.abort()
        return _fail(str(exc))
    bar.close()
    print(format_report_table(report))
    print(f"\nwrote {out}/report.html, {out}/report.json, {out}/balanced.zip, {out}/samples.png")
    return 0


def format_report_table(report: dict) -> str:
    """Per-class before/after table (counts, accuracy per method with its 95 % interval), then
    the verdicts for the minority classes."""
    methods = list(report["methods"])
    width = 24  # "100.0% [100.0, 100.0]" fits
    head = f"{'class':<12}{'train':>7}{'synthetic':>11}{'test':>6}" + "".join(
        f"{m:>{width}}" for m in methods
    )
    lines = [head, "-" * len(head)]
    for c in report["classes"]:
        cells = [report["methods"][m]["per_class"][c["name"]] for m in methods]
        lines.append(
            f"{c['name'][:11]:<12}{c['train_count']:>7}{c['synthetic_count']:>11}{c['test_count']:>6}"
            + "".join(f"{_with_ci(f['accuracy'], f.get('accuracy_ci95')):>{width}}" for f in cells)
        )
    for key in ("accuracy", "balanced_accuracy", "macro_f1"):
        cells = [
            _with_ci(report["methods"][m][key], report["methods"][m].get(f"{key}_ci95"))
            for m in methods
        ]
        lines.append(f"{key:<36}" + "".join(f"{v:>{width}}" for v in cells))
    seeds = report["methods"][methods[0]].get("seeds", 1)
    lines.append(
        f"(test-set accuracy, mean over {seeds} seed(s), 95 % bootstrap interval in brackets; "
        f"{report['environment']['device']})"
    )
    aug = report.get("classifier_augmentation")
    if aug:
        lines.append(aug["description"][0].upper() + aug["description"][1:] + ".")
    lines += _verdict_lines(report.get("comparisons", {}), bool(aug) and aug["resolved"] != "none")
    return "\n".join(lines)


def _verdict_lines(comparisons: dict, augmented: bool) -> list[str]:
    """One line per minority class and comparison: verdict, difference, interval, note.

    Oversampling first: the control the GAN has to beat (with augmentation on, random
    oversampling + the same augmentation).
    """
    if not comparisons:
        return []
    lines = ["", "Did the GAN help? (per-class accuracy, GAN minus the alternative)"]
    control = "oversampling" + (" + augmentation" if augmented else "")
    for name, comp in comparisons.items():
        for other, label in (("oversample", control), ("baseline", "baseline")):
            d = comp.get(f"gan_vs_{other}")
            if d is None:
                continue
            lo, hi = d["difference_ci95"]
            line = (
                f"  class {name[:11]} vs {label}: {d['verdict']}, {_pts(d['difference'])} "
                f"(95 % CI {_pts(lo)} to {_pts(hi)})"
            )
            if other == "oversample" and d["verdict"] != "helped":
                line += "; the GAN did not beat it"
            lines.append(line + (f"; {d['note']}" if d.get("note") else ""))
    return lines


def _with_ci(x: float | None, ci: list | None) -> str:
    if ci is None or ci[0] is None:
        return _pct(x)
    return f"{_pct(x)} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _pts(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f} pts"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2
