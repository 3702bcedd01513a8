"""GANOverSampler: imbalanced-learn's estimator checks, input forms, counts, Pipeline use.

Tiny GANs (20 iterations, the quick preset's width) on the CPU: the images are not good, the
plumbing around them is what these tests check.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from imblearn.pipeline import Pipeline
from imblearn.utils import estimator_checks as checks
from scipy import sparse
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.utils._param_validation import InvalidParameterError

from balancer import GANOverSampler
from tests.conftest import CUDA_SKIP_REASON

# per-class at share 1: no proxy test (the contract checks call fit_resample many times);
# test_string_labels_and_fitted_attributes runs the default auto.
FAST = {
    "gan_iterations": 20,
    "preset": "quick",
    "device": "cpu",
    "random_state": 0,
    "generator": "per-class",
    "synthetic_share": 1.0,
}


def sampler(**params) -> GANOverSampler:
    return GANOverSampler(**{**FAST, **params})


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """8x8 digits 0, 1, 2 with 40 / 12 / 6 images (float64 0..16 rows of 64 features)."""
    d = load_digits()
    keep = np.concatenate(
        [np.flatnonzero(d.target == c)[:n] for c, n in ((0, 40), (1, 12), (2, 6))]
    )
    return d.data[keep], d.target[keep]


# imbalanced-learn's checks (imblearn.utils.estimator_checks) that apply to an image sampler,
# each with the image_shape its data needs (their X are 2, 3, 5, 8 or 20 features per row).
# Left out: check_samplers_sparse and check_samplers_pandas_sparse (images are dense: sparse X
# is refused, test_bad_input_is_refused_by_name), check_samplers_string and check_samplers_nan
# (pixels are numbers: the tags say so, and imbalanced-learn yields neither for such samplers),
# check_classifier_* (for classifiers only).
ESTIMATOR_CHECKS = [
    (checks.check_target_type, None),
    (checks.check_samplers_one_label, None),
    (checks.check_samplers_fit, (1, 2)),
    (checks.check_samplers_fit_resample, (4, 5)),
    (checks.check_samplers_sampling_strategy_fit_resample, (4, 5)),
    (checks.check_samplers_pandas, (4, 5)),
    (checks.check_samplers_list, (4, 5)),
    (checks.check_samplers_multiclass_ova, (4, 5)),
    (checks.check_samplers_preserve_dtype, (4, 5)),
    (checks.check_samplers_sample_indices, (4, 5)),
    (checks.check_samplers_2d_target, (4, 5)),
    (checks.check_sampler_get_feature_names_out, (1, 3)),
    (checks.check_sampler_get_feature_names_out_pandas, (1, 3)),
    (checks.check_param_validation, (1, 5)),
    (checks.check_dataframe_column_names_consistency, (2, 4)),
]


@pytest.mark.parametrize(
    ("check", "image_shape"), ESTIMATOR_CHECKS, ids=[c.__name__ for c, _ in ESTIMATOR_CHECKS]
)
def test_imblearn_estimator_check(check, image_shape):
    check("GANOverSampler", sampler(image_shape=image_shape))


def forms(X: np.ndarray) -> dict[str, tuple[np.ndarray, tuple | None]]:
    """The digits in every accepted form: {name: (X, image_shape)}."""
    images = X.reshape(-1, 8, 8)
    u8 = np.rint(images * 255 / 16).astype(np.uint8)
    wide = np.repeat(u8, 2, axis=2)[:, :6]  # 6 x 16: not square
    rgb = np.stack([wide, 255 - wide, wide // 2], axis=-1)
    return {
        "flat float64, square inferred": (X, None),
        "flat float32 in [0, 1]": ((X / 16).astype(np.float32), (8, 8)),
        "flat int64 0..16": (X.astype(np.int64), (8, 8)),
        "(n, H, W) float64": (images, None),
        "(n, H, W) uint8": (u8, None),
        "(n, H, W, 1) uint8": (u8[..., None], None),
        "(n, H, W, 3) uint8, not square": (rgb, None),
        "flat RGB uint8 + image_shape": (rgb.reshape(len(rgb), -1), (6, 16, 3)),
    }


@pytest.mark.parametrize("form", list(forms(np.zeros((1, 64)))))
def test_each_input_form_round_trips(digits, form):
    X, image_shape = forms(digits[0])[form]
    y = digits[1]
    X_res, y_res = sampler(image_shape=image_shape).fit_resample(X, y)
    n = len(X)
    assert X_res.shape[1:] == X.shape[1:] and X_res.dtype == X.dtype and y_res.dtype == y.dtype
    assert np.array_equal(X_res[:n], X) and np.array_equal(y_res[:n], y)  # real rows first
    assert Counter(y_res[n:].tolist()) == {1: 28, 2: 34}
    new = X_res[n:].astype(np.float64)
    assert X.min() <= new.min() and new.max() <= X.max()  # within the input's value range
    assert new.std() > 0  # images, not a constant fill


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("auto", {0: 40, 1: 40, 2: 40}),
        ("not majority", {0: 40, 1: 40, 2: 40}),
        ("minority", {0: 40, 1: 12, 2: 40}),
        ("not minority", {0: 40, 1: 40, 2: 6}),
        ("all", {0: 40, 1: 40, 2: 40}),
        ({1: 20, 2: 9}, {0: 40, 1: 20, 2: 9}),
    ],
)
def test_counts_match_sampling_strategy(digits, strategy, expected):
    X_res, y_res = sampler(sampling_strategy=strategy).fit_resample(*digits)
    assert Counter(y_res.tolist()) == expected and len(X_res) == len(y_res)


def test_float_strategy_on_two_classes(digits):
    X, y = digits
    binary = y != 2
    _, y_res = sampler(sampling_strategy=0.5).fit_resample(X[binary], y[binary])
    assert Counter(y_res.tolist()) == {0: 40, 1: 20}  # minority = 0.5 x majority


def test_string_labels_and_fitted_attributes(digits):
    X, y = digits
    names = np.array(["zero", "one", "two"], dtype=object)[y]
    s = sampler(generator="auto", synthetic_share="auto")
    X_res, y_res = s.fit_resample(X, names)
    assert Counter(y_res.tolist()) == {"zero": 40, "one": 40, "two": 40}
    assert s.sampling_strategy_ == {"one": 28, "two": 34}
    assert s.working_size_ == 16 and s.n_features_in_ == 64
    # generator auto: the proxy test chose a generator and a share for both classes; every new
    # sample is a generated one or a real one repeated.
    for name, need in (("two", 34), ("one", 28)):
        info = s.gan_info_[name]
        assert info["synthetic"] + info["repeated_real"] == need
        assert info["selection"]["chosen"] in ("per-class", "transfer", "translation")
        assert len(info["selection"]["candidates"]) == 6


def test_same_random_state_same_images_and_callers_torch_rng_untouched(digits):
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first, _ = sampler(random_state=7).fit_resample(*digits)
    assert torch.equal(torch.rand(3), expected_next)
    again, _ = sampler(random_state=7).fit_resample(*digits)
    other, _ = sampler(random_state=8).fit_resample(*digits)
    n = len(digits[0])
    assert np.array_equal(first, again) and not np.array_equal(first[n:], other[n:])


def test_pipeline_with_logistic_regression_on_8x8_digits():
    d = load_digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(d.target))
    train, test = order[:1000], order[1000:]
    cut = np.flatnonzero(d.target[train] == 3)[10:]  # digit 3 keeps 10 training images
    train = np.delete(train, cut)
    pipe = Pipeline(
        [
            ("gan", sampler(sampling_strategy="minority")),
            ("clf", LogisticRegression(max_iter=3000)),
        ]
    )
    pipe.fit(d.data[train], d.target[train])
    largest = max(Counter(d.target[train].tolist()).values())
    assert pipe.named_steps["gan"].sampling_strategy_ == {3: largest - 10}
    predicted = pipe.predict(d.data[test])
    assert predicted.shape == (len(test),) and set(predicted.tolist()) <= set(range(10))
    # logistic regression reads digits well; the 20-iteration GAN images must not wreck that
    assert (predicted == d.target[test]).mean() > 0.85


@pytest.mark.parametrize(
    ("make_input", "params", "error", "words"),
    [
        (lambda X: sparse.csr_matrix(X), {}, TypeError, "dense data is required"),
        (lambda X: np.where(X == 0, np.nan, X), {}, ValueError, "NaN"),
        (lambda X: X[:, :60], {}, ValueError, "give image_shape"),
        (lambda X: X, {"image_shape": (4, 4)}, ValueError, "holds 16 values"),
        (lambda X: X, {"generator": "nonsense"}, InvalidParameterError, "'generator' parameter"),
        (lambda X: X, {"working_size": 18}, ValueError, "image_size must be a multiple of 4"),
    ],
    ids=["sparse", "nan", "not-square", "image-shape", "generator", "working-size"],
)
def test_bad_input_is_refused_by_name(digits, make_input, params, error, words):
    with pytest.raises(error, match=words):
        sampler(**params).fit_resample(make_input(digits[0]), digits[1])


def test_generator_choices_follow_run_config(digits):
    """Every generator name the pipeline's RunConfig takes is accepted, and passed on."""
    from balancer.sampler import generator_choices

    for name in generator_choices():
        cfg = sampler(generator=name)._run_config(16, torch.device("cpu"))
        assert getattr(cfg, "generator", name) == name


@pytest.mark.skipif(not torch.cuda.is_available(), reason=CUDA_SKIP_REASON)
def test_runs_on_cuda(digits):
    X, y = digits
    X_res, y_res = sampler(device="cuda").fit_resample(X, y)
    assert np.array_equal(X_res[: len(X)], X) and Counter(y_res.tolist()) == {0: 40, 1: 40, 2: 40}


def test_each_class_gets_images_from_its_own_gan():
    """Dark and bright classes: the generated rows of each must look like their class."""
    rng = np.random.default_rng(0)
    dark = rng.integers(0, 40, (30, 8, 8))
    bright = rng.integers(215, 256, (30, 8, 8))
    X = np.concatenate([bright[:20], dark[:6], bright[20:24]]).astype(np.uint8)
    y = np.array(["bright"] * 20 + ["dark"] * 6 + ["light"] * 4)
    X_res, y_res = sampler(
        gan_iterations=60, sampling_strategy={"dark": 20, "light": 10}
    ).fit_resample(X, y)
    new, labels = X_res[len(X) :], y_res[len(X) :]
    assert new[labels == "dark"].mean() < 100 < new[labels == "light"].mean()


def test_share_zero_is_random_oversampling(digits):
    """synthetic_share=0: every new row is a copy of a real row of its class, nothing generated."""
    X, y = digits
    X_res, y_res = sampler(synthetic_share=0).fit_resample(X, y)
    assert Counter(y_res.tolist()) == {0: 40, 1: 40, 2: 40}
    new_X, new_y = X_res[len(X) :], y_res[len(y) :]
    for row, label in zip(new_X, new_y, strict=True):
        assert any(np.array_equal(row, real) for real in X[y == label])


def test_share_is_validated(digits):
    with pytest.raises(ValueError, match="synthetic_share"):
        sampler(synthetic_share=1.5).fit_resample(*digits)
