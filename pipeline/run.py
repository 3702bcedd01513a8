"""The pipeline's one entry point: dataset zip in, report + balanced zip + samples out."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from pipeline.archive import ArchiveLimits
from pipeline.augment import augmentation_report
from pipeline.balance import Balanced, oversampled_indices, synthesize
from pipeline.classifier import SmallCNN, predict, train_on_pools
from pipeline.config import RunConfig
from pipeline.crossval import (
    FoldResult,
    cross_validate,
    merged,
    report_section,
    resolve_evaluation,
)
from pipeline.dataset import ImageDataset, load_dataset
from pipeline.engine import job_lane
from pipeline.evaluation import METHODS, evaluate_with_intervals
from pipeline.outputs import write_outputs
from pipeline.quality import QualityResult, assess_quality, method_description

if TYPE_CHECKING:
    from pipeline.output_pool import OutputPool

# progress(stage, fraction): stage is one of STAGES; fraction is the whole job's progress, 0..1.
# The callback may raise (e.g. to cancel a job); the exception propagates and nothing is left
# half-written in out_dir.
ProgressFn = Callable[[str, float], None]

STAGES = ("validating", "training_gan", "training_classifier", "evaluating", "packaging")
# Where each stage starts and ends on the 0..1 progress scale.
STAGE_SPANS = {
    "validating": (0.0, 0.05),
    "training_gan": (0.05, 0.6),
    "training_classifier": (0.6, 0.9),
    "evaluating": (0.9, 0.95),
    "packaging": (0.95, 1.0),
}


@dataclass
class Comparison:
    """The trained classifiers and their test predictions, one row per (method, seed) member."""

    model: SmallCNN  # stacked: member m was trained for (method_of[m], seed_of[m])
    preds: np.ndarray  # int64 [M, T] predicted class of every test image
    method_of: list[str]
    seed_of: list[int]

    def member(self, method: str, seed: int) -> int:
        pairs = list(zip(self.method_of, self.seed_of, strict=True))
        return pairs.index((method, seed))


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cpu")


def run_pipeline(
    dataset_zip: Path,
    out_dir: Path | None,
    config: RunConfig,
    progress: ProgressFn | None = None,
    limits: ArchiveLimits | None = None,
    outputs: OutputPool | None = None,
) -> dict:
    """Balance the dataset, compare classifiers, write report.json, balanced.zip, samples.png.

    out_dir None: return the report and write nothing (benchmarks, which need the figures only).
    outputs: write the files in that pool's processes (a worker running several jobs at once);
    None: in this thread. On CUDA the job's kernels run on a stream lane of its own, so jobs
    running at once in one process overlap on the GPU (pipeline/engine.py).
    """
    cfg = config.resolved().validated()
    device = pick_device(cfg.device)
    with job_lane(device):
        return _run(Path(dataset_zip), out_dir, cfg, device, progress, limits, outputs)


def _run(
    dataset_zip: Path,
    out_dir: Path | None,
    cfg: RunConfig,
    device: torch.device,
    progress: ProgressFn | None,
    limits: ArchiveLimits | None,
    outputs: OutputPool | None,
) -> dict:
    report_progress = _progress_reporter(progress)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    report_progress("validating", 0.0)
    ds = load_dataset(dataset_zip, cfg.test_fraction, cfg.seed, cfg.image_size, limits)
    timings["loading_seconds"] = time.perf_counter() - t0
    evaluation, why = resolve_evaluation(cfg, ds, _minority(ds, cfg)[1])
    if evaluation == "cross-validation":
        ds = merged(ds)  # every real image trains the final run and is tested once in a fold
    target, minority = _minority(ds, cfg)
    counts = ds.train_counts()

    t = time.perf_counter()
    need = {c: target - counts[c] for c in minority}
    balanced = synthesize(ds, need, cfg, device, report_progress)  # what balanced.zip holds
    synthetic = balanced.synthetic
    timings["gan_seconds"] = time.perf_counter() - t

    t = time.perf_counter()
    cv = None
    if evaluation == "holdout":
        comparison = compare_classifiers(ds, balanced, target, cfg, device, report_progress)
        scored = Scored(comparison.preds, ds.test_labels.numpy(), None, comparison, ds, synthetic)
    else:
        cv = cross_validate(ds, cfg.seed, lambda *fold: _fold_job(*fold, cfg, device, progress))
        scored = Scored(cv.preds, cv.labels, cv.strata, *cv.first.extra)
    timings["classifier_seconds"] = time.perf_counter() - t

    t = time.perf_counter()
    assessed = assess(scored, minority, cfg, report_progress)
    timings["evaluation_seconds"] = time.perf_counter() - t
    test_counts = np.bincount(scored.labels, minlength=len(ds.class_names)).tolist()

    report = {
        "dataset": {
            "name": Path(dataset_zip).name,
            "image_size": [ds.image_size, ds.image_size],
            "channels": ds.channels,
            "test_source": ds.test_source,
            "warnings": ds.warnings,
        },
        "classes": [
            {
                "name": name,
                "train_count": counts[i],
                "synthetic_count": len(synthetic.get(i, ())),
                "repeated_real_count": len(balanced.copies.get(i, ())),
                "test_count": test_counts[i],
            }
            for i, name in enumerate(ds.class_names)
        ],
        "target": target,
        "evaluation": report_section(evaluation, why, cv),
        "classifier_augmentation": augmentation_report(cfg.classifier_augment),
        **assessed.sections,
        "gan": balanced.info,
        "timings": timings,
        "environment": _environment(device),
        "config": cfg.to_dict(),
    }
    report_progress("packaging", 0.0)
    if out_dir is None:
        timings["total_seconds"] = time.perf_counter() - t0
    else:
        files = (Path(out_dir), report, dataset_zip, ds, balanced, assessed.quality)
        spent = time.perf_counter() - t0
        if outputs is None:
            timings.update(write_outputs(*files, spent, limits))
        else:
            timings.update(outputs.write(*files, spent, limits))
    report_progress("packaging", 1.0)
    return report


def compare_classifiers(
    ds: ImageDataset,
    balanced: Balanced,
    target: int,
    cfg: RunConfig,
    device,
    progress,
) -> Comparison:
    """Train a SmallCNN per (method, seed) on baseline / oversample / gan data; predict.

    gan: the real images, the generated ones and the repeated real ones that fill the rest
    (with a share of 0, exactly the oversample method's data).
    """
    n_real = len(ds.train_labels)
    synthetic = balanced.synthetic
    syn_images = [synthetic[c] for c in synthetic]
    images = torch.cat([ds.train_images, *syn_images]) if syn_images else ds.train_images
    labels = torch.cat([ds.train_labels, *[torch.full((len(v),), c) for c, v in synthetic.items()]])
    rng = np.random.default_rng(cfg.seed)
    copies = [balanced.copies[c] for c in sorted(balanced.copies)]
    pools = {
        "baseline": np.arange(n_real),
        "oversample": oversampled_indices(ds.train_labels.numpy(), target, rng),
        "gan": np.concatenate([np.arange(n_real), *copies, np.arange(n_real, len(labels))]),
    }
    method_of = [m for m in METHODS for _ in range(cfg.seeds)]
    seed_of = [s for _ in METHODS for s in range(cfg.seeds)]
    model = train_on_pools(
        images,
        labels,
        [pools[m] for m in method_of],
        seed_of,
        len(ds.class_names),
        cfg,
        device,
        seed=cfg.seed,
        progress=lambda f: progress("training_classifier", f),
    )
    progress("evaluating", 0.0)
    preds = predict(model, ds.test_images.to(device)).numpy()
    return Comparison(model, preds, method_of, seed_of)


@dataclass
class Assessment:
    sections: dict  # report sections: methods, comparisons, statistics, quality, quality_method
    quality: QualityResult


@dataclass
class Scored:
    """Test predictions to assess, and what the quality figures are computed on."""

    preds: np.ndarray  # int [M, T]: every (method, seed) member's prediction of every test image
    labels: np.ndarray  # [T]
    strata: np.ndarray | None  # [T] bootstrap strata (cross-validation: fold x class)
    comparison: Comparison  # whose baseline judges the generated images (holdout: the job's)
    ds: ImageDataset  # whose training and test images the quality figures use
    synthetic: dict[int, torch.Tensor]  # the generated images those figures are of


def assess(scored: Scored, minority: list[int], cfg: RunConfig, progress) -> Assessment:
    """Figures with bootstrap intervals, verdicts per minority class, GAN sample quality."""
    ds, synthetic, comparison = scored.ds, scored.synthetic, scored.comparison
    methods, comparisons, stats = evaluate_with_intervals(
        scored.preds,
        scored.labels,
        comparison.method_of,
        comparison.seed_of,
        ds.class_names,
        [c for c in minority if c in synthetic],
        seed=cfg.seed,
        strata=scored.strata,
    )
    progress("evaluating", 0.5)
    images = {
        c: (
            ds.train_images[ds.train_labels == c],
            ds.test_images[ds.test_labels == c],
            synthetic[c],
        )
        for c in minority
        if c in synthetic and len(synthetic[c])
    }
    # The baseline of seed 0 never saw a generated image: an independent judge of them.
    judge = comparison.member("baseline", 0)
    quality = assess_quality(comparison.model, judge, ds.class_names, images, seed=cfg.seed)
    progress("evaluating", 1.0)
    sections = {
        "methods": methods,
        "comparisons": comparisons,
        "statistics": stats,
        "quality": quality.figures,
        "quality_method": method_description(),
    }
    return Assessment(sections, quality)


def _minority(ds: ImageDataset, cfg: RunConfig) -> tuple[int, list[int]]:
    """(target, minority classes) of a dataset's training images."""
    counts = ds.train_counts()
    target = cfg.target or max(counts)
    return target, [i for i, n in enumerate(counts) if n < target]


def _fold_job(fold: ImageDataset, f: int, k: int, cfg: RunConfig, device, progress) -> FoldResult:
    """The whole job on one fold's training images; predictions of its test images.

    Its progress is the training_classifier stage's, fold by fold."""

    def fold_progress(stage: str, fraction: float) -> None:
        lo, hi = STAGE_SPANS[stage]
        within = (lo + (hi - lo) * min(max(fraction, 0.0), 1.0) - 0.05) / 0.9  # 0..1 in the fold
        if progress is not None and stage in ("training_gan", "training_classifier"):
            span_lo, span_hi = STAGE_SPANS["training_classifier"]
            progress("training_classifier", span_lo + (span_hi - span_lo) * (f + within) / k)

    target, minority = _minority(fold, cfg)
    counts = fold.train_counts()
    need = {c: target - counts[c] for c in minority}
    balanced = synthesize(fold, need, cfg, device, fold_progress)
    comparison = compare_classifiers(fold, balanced, target, cfg, device, fold_progress)
    return FoldResult(
        comparison.preds,
        comparison.method_of,
        comparison.seed_of,
        extra=(comparison, fold, balanced.synthetic),
    )


def _progress_reporter(progress: ProgressFn | None) -> Callable[[str, float], None]:
    """Map (stage, fraction of the stage) to (stage, fraction of the whole job)."""

    def report(stage: str, fraction: float) -> None:
        if progress is not None:
            lo, hi = STAGE_SPANS[stage]
            progress(stage, lo + (hi - lo) * min(max(fraction, 0.0), 1.0))

    return report


def _environment(device: torch.device) -> dict:
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.machine()}, {torch.get_num_threads()} threads"
    )
    return {
        "device": f"{device.type}: {name}",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
    }
