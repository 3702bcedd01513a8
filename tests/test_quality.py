"""GAN sample-quality figures against hand computations and constructed cases."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from pipeline.classifier import SmallCNN, predict
from pipeline.quality import (
    ClassSamples,
    assess_class,
    frechet_distance,
    label_fidelity,
    member_outputs,
    memorisation,
    precision_recall,
)


def test_frechet_distance_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(200, 8))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_matches_the_1d_formula():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.0, 1.0, (300, 1)), rng.normal(2.0, 3.0, (400, 1))
    # 1-D Gaussians: (mu_a - mu_b)^2 + (sigma_a - sigma_b)^2, with the sample moments.
    hand = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
    assert frechet_distance(a, b) == pytest.approx(hand, rel=1e-9)


def test_frechet_distance_matches_scipy_sqrtm_in_several_dimensions():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(500, 5)) @ rng.normal(size=(5, 5))
    b = rng.normal(size=(500, 5)) @ rng.normal(size=(5, 5)) + 1.0
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    cross = scipy.linalg.sqrtm(s_a @ s_b).real
    mu = a.mean(0) - b.mean(0)
    hand = mu @ mu + np.trace(s_a + s_b - 2 * cross)
    assert frechet_distance(a, b) == pytest.approx(hand, rel=1e-6)


def test_frechet_distance_handles_singular_covariances():
    # 3 samples in 64 dimensions: rank-2 covariances; the result is real and finite.
    rng = np.random.default_rng(3)
    fd = frechet_distance(rng.normal(size=(3, 64)), rng.normal(size=(3, 64)))
    assert np.isfinite(fd) and fd > 0


def test_frechet_distance_needs_two_samples():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros((1, 4)), np.zeros((5, 4)))


def test_precision_and_recall_of_identical_sets_are_one():
    x = np.random.default_rng(4).normal(size=(100, 6))
    assert precision_recall(x, x.copy()) == (1.0, 1.0)


def test_precision_and_recall_of_disjoint_sets_are_zero():
    rng = np.random.default_rng(5)
    real, fake = rng.normal(size=(100, 6)), rng.normal(size=(100, 6)) + 50.0
    assert precision_recall(real, fake) == (0.0, 0.0)


def test_mode_dropping_lowers_recall_not_precision():
    rng = np.random.default_rng(6)
    real = np.concatenate([rng.normal(size=(150, 4)), rng.normal(size=(150, 4)) + 20])
    fake = rng.normal(size=(150, 4))  # only the first of the two real modes
    precision, recall = precision_recall(real, fake)
    assert precision > 0.9
    assert 0.3 < recall < 0.6


def test_label_fidelity_counts_the_intended_class():
    assert label_fidelity(np.array([1, 1, 0, 2]), 1) == 0.5
    assert label_fidelity(np.array([3, 3, 3]), 3) == 1.0
    assert label_fidelity(np.array([], dtype=int), 1) is None


def pixel_class(rng, n: int, d: int = 64) -> np.ndarray:
    """Images of one 'class' in 0..1 pixels: a shared template plus per-image variation."""
    template = np.linspace(0.2, 0.8, d)
    return np.clip(template + rng.normal(0, 0.1, (n, d)), 0, 1)


def test_copies_of_training_images_are_flagged():
    rng = np.random.default_rng(7)
    train, test = pixel_class(rng, 30), pixel_class(rng, 200)
    copies = train[rng.integers(0, 30, 300)] + rng.normal(0, 0.005, (300, 64))
    figures, detail = memorisation(copies, train, test)
    assert figures["mostly_copies"] is True
    assert figures["copy_like_share"] > 0.9
    assert figures["median_nn_generated"] < figures["threshold"] < figures["median_nn_real"]
    assert len(detail.generated_nn) == 300 and len(detail.real_nn) == 200


def test_fresh_samples_are_not_flagged():
    rng = np.random.default_rng(8)
    train, test, fresh = pixel_class(rng, 30), pixel_class(rng, 200), pixel_class(rng, 300)
    figures, _ = memorisation(fresh, train, test)
    assert figures["mostly_copies"] is False
    assert figures["copy_like_share"] < 0.15  # about 5 % expected for fresh samples


def class_samples(rng, n_train: int, n_test: int, n_gen: int, dim: int = 16) -> ClassSamples:
    def images(n):
        return torch.from_numpy((pixel_class(rng, n, 16 * 16) * 255).astype(np.uint8)).view(
            n, 1, 16, 16
        )

    return ClassSamples(
        train=images(n_train),
        test=images(n_test),
        generated=images(n_gen),
        test_features=rng.normal(size=(n_test, dim)),
        generated_features=rng.normal(size=(n_gen, dim)),
        test_predicted=np.full(n_test, 1),
        generated_predicted=np.array([1, 0] * (n_gen // 2) + [1] * (n_gen % 2)),
        train_features=rng.normal(size=(n_train, dim)),
    )


def test_assess_class_gives_every_figure():
    fig, _ = assess_class(class_samples(np.random.default_rng(9), 30, 60, 80), label=1)
    for key in ("frechet_distance", "frechet_distance_train", "precision", "recall"):
        assert fig[key] is not None and fig[key] >= 0
    assert fig["label_fidelity"] == 0.5 and fig["baseline_accuracy_on_real_test"] == 1.0
    assert fig["memorisation"]["mostly_copies"] in (True, False)
    assert (fig["n_train"], fig["n_test"], fig["n_generated"]) == (30, 60, 80)


def test_tiny_classes_get_nulls_with_reasons_and_a_plain_remix_warning():
    fig, _ = assess_class(class_samples(np.random.default_rng(10), 1, 1, 3), label=1)
    assert fig["frechet_distance"] is None and fig["frechet_distance_train"] is None
    assert fig["precision"] is None and fig["recall"] is None
    notes = " ".join(fig["notes"])
    assert "at least 2 real" in notes
    assert "more than k=3" in notes or "more than 3" in notes
    assert "can only remix" in notes


def test_member_outputs_are_that_members_features_and_predictions():
    torch.manual_seed(0)
    model = SmallCNN(members=3, channels=1, size=16, num_classes=4)
    images = torch.randint(0, 256, (10, 1, 16, 16), dtype=torch.uint8)
    feats, preds = member_outputs(model, 1, images, batch=4)
    assert feats.shape == (10, 64)
    assert np.array_equal(preds, predict(model, images)[1].numpy())
    x = (images.float() / 127.5 - 1).unsqueeze(0).expand(3, *images.shape)
    with torch.no_grad():
        assert np.allclose(feats, model.penultimate(x)[1].numpy(), atol=1e-5)


def test_nearest_distances_across_blocks_match_brute_force(monkeypatch):
    import pipeline.quality as q

    monkeypatch.setattr(q, "_ROWS", 5)
    monkeypatch.setattr(q, "_REF_ROWS", 7)
    rng = np.random.default_rng(11)
    queries = rng.integers(0, 256, (23, 50)).astype(np.uint8)
    refs = rng.integers(0, 256, (31, 50)).astype(np.uint8)
    dist, index = q.nearest_distances(queries, refs)
    brute = np.sqrt(((queries[:, None].astype(float) - refs[None].astype(float)) ** 2).sum(-1))
    assert np.allclose(dist, brute.min(1)) and np.array_equal(index, brute.argmin(1))


def test_memorisation_reads_uint8_images_on_the_0_to_1_scale():
    rng = np.random.default_rng(12)
    train, test, gen = (pixel_class(rng, n) for n in (20, 50, 40))
    as_uint8 = [np.round(x * 255).astype(np.uint8) for x in (gen, train, test)]
    a, _ = memorisation(*[x.astype(float) / 255 for x in as_uint8])
    b, _ = memorisation(*as_uint8)
    for key in ("median_nn_generated", "median_nn_real", "threshold", "copy_like_share"):
        assert a[key] == pytest.approx(b[key], abs=1e-4)
    assert a["mostly_copies"] == b["mostly_copies"]
