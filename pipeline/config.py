"""One config for a pipeline run. Presets fill in the iteration counts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

Preset = Literal["quick", "standard"]

# Classifier augmentation policies (pipeline/augment.py does the transforms).
POLICIES = ("auto", "none", "affine", "affine+flip")
GENERATORS = ("auto", "per-class", "transfer", "translation")
EVALUATIONS = ("auto", "holdout", "cross-validation")
AUTO_POLICY = "affine"


def resolve_policy(policy: str) -> str:
    """'auto' -> AUTO_POLICY; any other known policy as is; unknown -> ValueError."""
    if policy not in POLICIES:
        raise ValueError(f"classifier_augment must be one of {', '.join(POLICIES)}, got {policy!r}")
    return AUTO_POLICY if policy == "auto" else policy


# Budgets per preset. quick: a CPU finishes the demo in about a minute. Its GAN takes many
# small steps (batch 16) at a higher learning rate: at Adam 2e-4 and this budget the minority
# GAN collapsed to one stroke (docs/benchmarks.md, "CPU quick preset").
PRESETS: dict[str, dict[str, int | float]] = {
    "quick": {
        "gan_iterations": 2000,
        "gan_width": 32,
        "gan_batch": 16,
        "gan_lr": 1e-3,
        "epochs": 10,
        "seeds": 1,
        "transfer_pairs": 256,
        "transfer_steps": 100,
        "proxy_worlds": 2,
    },
    "standard": {
        "gan_iterations": 3000,
        "gan_width": 64,
        "gan_batch": 64,
        "gan_lr": 2e-4,
        "epochs": 30,
        "seeds": 3,
        "transfer_pairs": 2048,
        "transfer_steps": 300,
        "proxy_worlds": 3,
    },
}


@dataclass(frozen=True)
class RunConfig:
    preset: Preset = "standard"
    target: int | None = None  # images per class after balancing; None = largest class
    gan_iterations: int | None = None  # generator updates per minority class; None = preset
    epochs: int | None = None  # classifier passes over the largest training set; None = preset
    seeds: int | None = None  # classifier seeds per method; None = preset
    seed: int = 0  # base seed: split, GAN init, classifier init, oversampling
    image_size: int | None = None  # working side length in px; None = 28 if inputs <= 32 px else 64
    test_fraction: float = 0.2  # held-out share per class when the zip has no test/ folder
    # How the methods are compared (pipeline/crossval.py): "holdout" (the test/ folder, or
    # test_fraction of each class held out), "cross-validation" (stratified k-fold over every
    # real image; zips without a test/ folder), "auto" = cross-validation when some minority
    # class would get fewer than 10 held-out test images, else holdout.
    evaluation: Literal["auto", "holdout", "cross-validation"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Training loop: "graph" captures each step in a CUDA graph (pipeline/engine.py),
    # "eager" is the plain PyTorch loop, "auto" = graph on CUDA, eager on the CPU.
    engine: Literal["auto", "eager", "graph"] = "auto"
    gan_batch: int | None = None  # real and fake images per GAN step, per class; None = preset
    gan_latent: int = 100  # generator input noise dimension
    gan_width: int | None = None  # channels of the finest GAN layer (doubling per coarser level)
    gan_lr: float | None = None  # Adam, betas (0.5, 0.999), both networks; None = preset
    diffaug_below: int = 1000  # classes with fewer training images get DiffAugment
    # Which generator makes a class's images (pipeline/balance.py): "per-class" (a DCGAN on
    # that class's images), "transfer" (variation learned from every class, pipeline/
    # transfer.py), "translation" (big-class images translated into the class, M2m-style,
    # pipeline/translation.py), "auto" = the one the proxy test (pipeline/selection.py)
    # expects to do best on this dataset.
    generator: Literal["auto", "per-class", "transfer", "translation"] = "auto"
    # Share of each minority class's missing images that are generated; the rest are real
    # images repeated (0 = plain oversampling). "auto": the share the proxy test supports,
    # 0 where no candidate is expected to beat oversampling.
    synthetic_share: float | Literal["auto"] = "auto"
    proxy_worlds: int | None = (
        None  # proxy test: big classes cut to the minority's size; None = preset
    )
    transfer_pairs: int | None = None  # neighbour pairs the transfer model is fitted on
    transfer_steps: int | None = None  # Adam steps of that fit (all pairs at once)
    classifier_batch: int = 64
    classifier_lr: float = 1e-3
    # Random transform of every classifier training batch, the same for every method
    # (pipeline/augment.py): "auto" (= "affine"), "none", "affine", "affine+flip".
    classifier_augment: Literal["auto", "none", "affine", "affine+flip"] = "auto"
    progress_every: int = 50  # iterations between progress callbacks

    def resolved(self) -> RunConfig:
        """Fill the preset's values into the fields left as None."""
        preset = PRESETS[self.preset]
        return replace(self, **{k: v for k, v in preset.items() if getattr(self, k) is None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config option(s): {', '.join(unknown)}")
        return cls(**values).validated()

    def validated(self) -> RunConfig:
        """Raise ValueError naming the first option out of range."""
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.generator not in GENERATORS:
            raise ValueError(
                f"generator must be one of {', '.join(GENERATORS)}, got {self.generator!r}"
            )
        if self.synthetic_share != "auto" and not (
            isinstance(self.synthetic_share, (int, float))
            and not isinstance(self.synthetic_share, bool)
            and 0.0 <= self.synthetic_share <= 1.0
        ):
            raise ValueError(
                "synthetic_share must be auto or a number from 0 to 1, "
                f"got {self.synthetic_share!r}"
            )
        if self.engine not in ("auto", "eager", "graph"):
            raise ValueError(f"engine must be auto, eager or graph, got {self.engine!r}")
        if self.evaluation not in EVALUATIONS:
            raise ValueError(
                f"evaluation must be one of {', '.join(EVALUATIONS)}, got {self.evaluation!r}"
            )
        resolve_policy(self.classifier_augment)  # ValueError naming the allowed values
        checks = [
            ("target", self.target, 1, 1_000_000),
            ("gan_iterations", self.gan_iterations, 1, 1_000_000),
            ("epochs", self.epochs, 1, 10_000),
            ("seeds", self.seeds, 1, 20),
            ("image_size", self.image_size, 8, 128),
            ("gan_batch", self.gan_batch, 1, 4096),
            ("gan_width", self.gan_width, 8, 256),
            ("classifier_batch", self.classifier_batch, 1, 4096),
            ("proxy_worlds", self.proxy_worlds, 1, 10),
            ("transfer_pairs", self.transfer_pairs, 16, 100_000),
            ("transfer_steps", self.transfer_steps, 1, 100_000),
        ]
        for name, value, lo, hi in checks:
            if value is not None and not (lo <= value <= hi):
                raise ValueError(f"{name} must be between {lo} and {hi}, got {value}")
        if self.image_size is not None and self.image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4, got {self.image_size}")
        if self.gan_lr is not None and not (0.0 < self.gan_lr <= 1.0):
            raise ValueError(f"gan_lr must be above 0 and at most 1, got {self.gan_lr}")
        if not (0.0 < self.test_fraction < 1.0):
            raise ValueError(f"test_fraction must be between 0 and 1, got {self.test_fraction}")
        return self
