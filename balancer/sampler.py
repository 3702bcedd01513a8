"""GANOverSampler: imbalanced-learn's over-sampler interface over pipeline.balance.synthesize.

X_res is X (unchanged, first) followed by the generated rows of each class, in X's form and
dtype; balancer/image_arrays.py says how rows become images and back.
"""

from __future__ import annotations

import numbers
from dataclasses import fields
from typing import get_args, get_type_hints

import numpy as np
import torch

try:
    from imblearn.over_sampling.base import BaseOverSampler
    from imblearn.utils import check_target_type
except ImportError as exc:  # the optional extra
    raise ImportError(
        "GANOverSampler needs imbalanced-learn, an optional extra: "
        "pip install 'gan-balancer[imblearn]'"
    ) from exc
from sklearn.utils import check_array, check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn_compat.utils.validation import validate_data

from balancer.image_arrays import ImageArrays, working_size
from pipeline.balance import synthesize
from pipeline.config import PRESETS, RunConfig
from pipeline.dataset import ImageDataset
from pipeline.run import pick_device


def generator_choices() -> tuple[str, ...]:
    """The generator names RunConfig's Literal lists (() if it types them as a plain str).

    Without a generator option the pipeline has one generator, per-class GANs.
    """
    hint = get_type_hints(RunConfig).get("generator")
    return get_args(hint) if hint is not None else ("auto", "per-class")


def _generator_constraint() -> list:
    choices = generator_choices()
    return [StrOptions(set(choices))] if choices else [str]  # str: RunConfig.validated checks


class GANOverSampler(BaseOverSampler):
    """Over-sample image classes with images from GANs trained on each class.

    Parameters
    ----------
    sampling_strategy : float, str, dict or callable, default='auto'
        imbalanced-learn's meanings: 'auto' (= 'not majority'), 'minority', 'not minority',
        'not majority', 'all', {class: count after resampling}, a float (binary only:
        minority / majority after resampling) or a callable y -> dict.
    generator : str, default='auto'
        Which generator makes the images, one of RunConfig's generator choices
        ('auto', 'per-class', and 'transfer' where the pipeline has it).
    synthetic_share : 'auto' or float in [0, 1], default='auto'
        Share of each class's new samples that are generated; the rest are real samples
        repeated (0 = random oversampling). 'auto': the share the pipeline's proxy test
        supports on these data (0 where no generator beat oversampling there).
    gan_iterations : int or None, default=None
        Generator updates; None = the preset's.
    preset : {'auto', 'quick', 'standard'}, default='auto'
        The pipeline's GAN budget (width, batch, learning rate, iterations); 'auto' =
        standard on CUDA, quick on the CPU (as `balancer demo`).
    device : {'auto', 'cpu', 'cuda'}, default='auto'
    random_state : int, RandomState instance or None, default=None
        An int is the pipeline's seed (the same images for the same int and device).
    image_shape : tuple or None, default=None
        (height, width) or (height, width, channels) of a flat row of X; None = square
        grayscale when the feature count is a square number. Not needed for 3-d or 4-d X.
    working_size : int or None, default=None
        The GAN's square side in px (a multiple of 4); None = the largest input side rounded
        up to a multiple of 4, between 16 and 64.

    Attributes
    ----------
    sampling_strategy_ : dict
        {class label: number of images generated}.
    working_size_ : int
    gan_info_ : dict
        The pipeline's report section per generated class (iterations, seconds, losses).
    n_features_in_ : int
        Values per row of X (H * W * C for image-shaped X).
    feature_names_in_ : ndarray
        Column names, when X was a DataFrame.
    """

    _parameter_constraints: dict = {
        **BaseOverSampler._parameter_constraints,
        "generator": _generator_constraint(),
        "gan_iterations": [Interval(numbers.Integral, 1, 1_000_000, closed="both"), None],
        "synthetic_share": [StrOptions({"auto"}), Interval(numbers.Real, 0, 1, closed="both")],
        "preset": [StrOptions({"auto", *PRESETS})],
        "device": [StrOptions({"auto", "cpu", "cuda"})],
        "image_shape": [tuple, list, None],
        "working_size": [Interval(numbers.Integral, 8, 128, closed="both"), None],
    }

    def __init__(
        self,
        *,
        sampling_strategy="auto",
        generator: str = "auto",
        synthetic_share: str | float = "auto",
        gan_iterations: int | None = None,
        preset: str = "auto",
        device: str = "auto",
        random_state=None,
        image_shape: tuple[int, ...] | None = None,
        working_size: int | None = None,
    ) -> None:
        super().__init__(sampling_strategy=sampling_strategy)
        self.generator = generator
        self.synthetic_share = synthetic_share
        self.gan_iterations = gan_iterations
        self.preset = preset
        self.device = device
        self.random_state = random_state
        self.image_shape = image_shape
        self.working_size = working_size

    def _check_X_y(self, X, y, accept_sparse=None):
        y, binarize_y = check_target_type(y, indicate_one_vs_all=True)
        # Feature names and n_features_in_ as for any sampler; then our own check: 3-d and
        # 4-d image arrays are allowed, sparse matrices, NaN and non-numbers are not.
        validate_data(self, X=X, y=y, reset=True, skip_check_array=True)
        X = check_array(X, dtype="numeric", allow_nd=True)
        if X.ndim > 2:
            self.n_features_in_ = int(np.prod(X.shape[1:]))
        return X, y, binarize_y

    def _fit_resample(self, X, y):
        arrays = ImageArrays.describe(X, self.image_shape)
        size = self.working_size or working_size(arrays.height, arrays.width)
        classes, labels = np.unique(y, return_inverse=True)
        index = {label: i for i, label in enumerate(classes.tolist())}
        need = {index[c]: int(n) for c, n in self.sampling_strategy_.items() if n > 0}
        device = pick_device(self.device)
        cfg = self._run_config(size, device)
        self.working_size_ = size
        ds = ImageDataset(
            class_names=[str(c) for c in classes],
            image_size=size,
            channels=arrays.channels,
            train_images=arrays.to_pixels(X, size),
            train_labels=torch.from_numpy(labels.astype(np.int64)),
            train_entries=[],  # no zip behind these images; synthesize does not read it
            # synthesize reads training images only: no test split is made or needed
            test_images=torch.zeros(0, arrays.channels, size, size, dtype=torch.uint8),
            test_labels=torch.zeros(0, dtype=torch.int64),
            test_source="none",
            warnings=[],
        )
        # The GAN seeds torch's global generator; keep the caller's random stream as it was.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            balanced = synthesize(ds, need, cfg, device, _no_progress)
        self.gan_info_ = balanced.info
        # Per class: the generated samples, then the real samples repeated for the rest.
        new_X = [
            part
            for k in need
            for part in (arrays.from_pixels(balanced.synthetic[k]), X[balanced.copies[k]])
        ]
        new_y = [np.full(n, classes[k], dtype=y.dtype) for k, n in need.items()]
        return np.concatenate([X, *new_X]), np.concatenate([y, *new_y])

    def _run_config(self, size: int, device: torch.device) -> RunConfig:
        """The pipeline config for this sampler's parameters; ValueError if out of range."""
        preset = self.preset
        if preset == "auto":
            preset = "standard" if device.type == "cuda" else "quick"
        options = {}
        known = {f.name for f in fields(RunConfig)}
        if "generator" in known:
            options["generator"] = self.generator
        if "synthetic_share" in known:
            share = self.synthetic_share
            options["synthetic_share"] = share if share == "auto" else float(share)
        seed = self.random_state
        if not isinstance(seed, numbers.Integral):
            seed = int(check_random_state(seed).randint(np.iinfo(np.int32).max))
        return (
            RunConfig(
                preset=preset,
                gan_iterations=self.gan_iterations,
                seed=int(seed),
                image_size=size,
                device=device.type,
                **options,
            )
            .resolved()
            .validated()
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.input_tags.three_d_array = True
        return tags


def _no_progress(stage: str, fraction: float) -> None:
    pass
