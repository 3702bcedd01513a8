"""Can the generated images be trusted? Quality figures per minority class.

Feature space: the 64-d penultimate layer of the baseline classifier of seed 0, trained on the
real images only (the FID-for-MNIST approach: no Inception download). Real images are the
class's held-out test images, which neither the GAN nor the classifier saw.

* Fréchet distance between the Gaussians fitted to real and generated features.
* Precision and recall (Kynkäänniemi et al. 2019): a sample is covered by a set when it lies
  within the k-th-nearest-neighbour radius (k = 3) of some member of that set. Precision is the
  share of generated samples covered by the real set, recall the share of real samples covered
  by the generated set.
* Label fidelity: the share of generated images the baseline classifier puts in the class.
* Memorisation, in pixel space (RMS pixel difference, 0..1) because a copy is a pixel-level
  notion: features would also call two different drawings of the same digit "close". Each
  generated image's distance to its nearest training image of the class is set against the
  same distance for the real test images. A generated image closer to a training image than
  95 % of real test images are is "copy-like"; fresh samples from the class would be copy-like
  5 % of the time. The class is flagged `mostly_copies` when over half of them are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

K_NEIGHBOURS = 3
COPY_PERCENTILE = 5.0  # copy-like: nearer a training image than this percentile of real images
MOSTLY = 0.5  # share of copy-like generated images above which a class is flagged
FEW_TRAINING = 5  # at or below this many training images the GAN can only remix them
MIN_REFERENCE = 20  # real test images below which the copy threshold is rough
MAX_SAMPLES = 2000  # per feature set, for the O(n^2) neighbour searches (seeded subsample)
MAX_QUERIES = 1000  # generated / test images checked for copies (pixel distances are costly)
_ROWS = 1024  # query rows per distance block
_REF_ROWS = 1024  # reference rows per distance block in nearest_distances


@dataclass
class ClassSamples:
    """One minority class's images, uint8 [N, C, S, S] each, and the baseline's outputs."""

    train: torch.Tensor
    test: torch.Tensor
    generated: torch.Tensor
    test_features: np.ndarray  # [T, F]
    generated_features: np.ndarray  # [G, F]
    test_predicted: np.ndarray  # [T] baseline's predicted class
    generated_predicted: np.ndarray  # [G]
    train_features: np.ndarray | None = None  # [N, F], for the real-vs-real reference distance


@dataclass
class MemorisationDetail:
    """Per-image distances behind the memorisation figures (for the report's plots)."""

    generated_nn: np.ndarray  # [G] RMS pixel distance to the nearest training image
    real_nn: np.ndarray  # [T] the same for the real test images
    threshold: float | None


@dataclass
class QualityResult:
    figures: dict[str, dict]  # class name -> JSON figures
    details: dict[str, MemorisationDetail] = field(default_factory=dict)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to rows of a [n, d] and b [m, d] (n, m >= 2).

    ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2), through symmetric
    eigen-decompositions, which stay real and stable for the singular covariances of small
    samples (where scipy's sqrtm gives complex noise).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("the Fréchet distance needs at least 2 samples in each set")
    mu = a.mean(0) - b.mean(0)
    s_a = np.atleast_2d(np.cov(a, rowvar=False))
    s_b = np.atleast_2d(np.cov(b, rowvar=False))
    root = _sqrt_psd(s_a)
    cross = root @ s_b @ root
    tr_cross = np.sqrt(np.clip(np.linalg.eigvalsh((cross + cross.T) / 2), 0, None)).sum()
    return max(float(mu @ mu + np.trace(s_a) + np.trace(s_b) - 2 * tr_cross), 0.0)


def precision_recall(
    real: np.ndarray, fake: np.ndarray, k: int = K_NEIGHBOURS
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019); both sets need > k rows."""
    if len(real) <= k or len(fake) <= k:
        raise ValueError(f"precision and recall need more than k={k} samples in each set")
    precision = _share_covered(fake, real, _knn_radii(real, k))
    recall = _share_covered(real, fake, _knn_radii(fake, k))
    return precision, recall


def label_fidelity(predicted: np.ndarray, intended: int) -> float | None:
    """Share of generated images the classifier assigns to the intended class."""
    predicted = np.asarray(predicted)
    return float((predicted == intended).mean()) if len(predicted) else None


def nearest_distances(queries: np.ndarray, refs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distance, index) of each query row's nearest row of refs (Euclidean).

    refs are taken in blocks, so a large uint8 image set is never held as floats at once.
    """
    dist = np.full(len(queries), np.inf)
    index = np.zeros(len(queries), dtype=np.int64)
    for r0 in range(0, len(refs), _REF_ROWS):
        for start, block in _distance_blocks(queries, refs[r0 : r0 + _REF_ROWS]):
            rows = slice(start, start + len(block))
            best = block.argmin(1)
            closer = block[np.arange(len(block)), best] < dist[rows]
            index[rows] = np.where(closer, best + r0, index[rows])
            dist[rows] = np.where(closer, block[np.arange(len(block)), best], dist[rows])
    return dist, index


def memorisation(
    generated: np.ndarray, train: np.ndarray, test: np.ndarray
) -> tuple[dict, MemorisationDetail]:
    """Copy check in pixel space; images as arrays [N, D], uint8 (0..255) or floats in 0..1."""
    # Euclidean -> RMS per pixel on a 0..1 scale, comparable across image sizes.
    scale = np.sqrt(train.shape[1]) * (255.0 if train.dtype == np.uint8 else 1.0)
    gen_nn, _ = nearest_distances(generated, train)
    real_nn, _ = nearest_distances(test, train)
    gen_nn, real_nn = gen_nn / scale, real_nn / scale
    threshold = float(np.percentile(real_nn, COPY_PERCENTILE)) if len(real_nn) else None
    share = float((gen_nn < threshold).mean()) if threshold is not None and len(gen_nn) else None
    figures = {
        "space": "pixels (RMS difference, 0..1)",
        "median_nn_generated": _round(np.median(gen_nn)) if len(gen_nn) else None,
        "median_nn_real": _round(np.median(real_nn)) if len(real_nn) else None,
        "threshold": _round(threshold),
        "copy_like_share": _round(share),
        "expected_share_if_novel": COPY_PERCENTILE / 100,
        "mostly_copies": None if share is None else share > MOSTLY,
    }
    return figures, MemorisationDetail(gen_nn, real_nn, threshold)


def assess_class(
    samples: ClassSamples, label: int, seed: int = 0
) -> tuple[dict, MemorisationDetail]:
    """All quality figures of one minority class (JSON-ready) and its memorisation detail."""
    rng = np.random.default_rng(seed)
    real = _subsample(samples.test_features, rng)
    fake = _subsample(samples.generated_features, rng)
    n_train, n_test, n_gen = len(samples.train), len(samples.test), len(samples.generated)
    fig: dict = {"n_train": n_train, "n_test": n_test, "n_generated": n_gen}
    notes: list[str] = []
    fig.update(_frechet_figures(samples, real, fake, notes))
    fig.update(_precision_recall_figures(real, fake, notes))
    fig["label_fidelity"] = _round(label_fidelity(samples.generated_predicted, label))
    real_acc = _round(label_fidelity(samples.test_predicted, label))
    fig["baseline_accuracy_on_real_test"] = real_acc  # the same share for real images
    if real_acc is not None and real_acc < 0.5:
        notes.append(
            "the baseline classifier recognises under half of the real test images of this "
            "class, so label fidelity understates how recognisable the generated images are"
        )
    mem, detail = _memorisation_figures(samples, rng, notes)
    fig["memorisation"] = mem
    fig["notes"] = notes
    return fig, detail


@torch.no_grad()
def member_outputs(
    model: torch.nn.Module, member: int, images: torch.Tensor, batch: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """(penultimate features [N, F], predicted class [N]) of one member of a stacked SmallCNN."""
    model.eval()
    dev = next(model.parameters()).device
    feats, preds = [], []
    for start in range(0, len(images), batch):
        x = images[start : start + batch].to(dev).float() / 127.5 - 1.0
        x = x.unsqueeze(0).expand(model.members, *x.shape)  # every member sees the images
        feats.append(model.penultimate(x)[member].float().cpu())
        preds.append(model(x)[member].argmax(-1).cpu())
    if not feats:
        return np.zeros((0, 0)), np.zeros(0, dtype=np.int64)
    return torch.cat(feats).numpy(), torch.cat(preds).numpy()


def assess_quality(
    model: torch.nn.Module,
    member: int,
    class_names: list[str],
    images: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    seed: int = 0,
) -> QualityResult:
    """Quality figures per minority class; images[c] = (train, test, generated) uint8 tensors.

    member: index of the baseline member of seed 0 in the stacked classifier `model`.
    """
    result = QualityResult(figures={})
    for label, (train, test, generated) in images.items():
        test_f, test_p = member_outputs(model, member, test)
        gen_f, gen_p = member_outputs(model, member, generated)
        train_f, _ = member_outputs(model, member, train[:MAX_SAMPLES])
        samples = ClassSamples(train, test, generated, test_f, gen_f, test_p, gen_p, train_f)
        name = class_names[label]
        result.figures[name], result.details[name] = assess_class(samples, label, seed)
    return result


def method_description(feature_dim: int = 64) -> dict:
    """How the quality figures were computed, for the report."""
    return {
        "feature_space": f"penultimate layer ({feature_dim}-d) of the baseline classifier of "
        "seed 0, trained on the real images only",
        "real_images": "the class's held-out test images",
        "k_neighbours": K_NEIGHBOURS,
        "memorisation_space": "pixels: RMS difference to the nearest training image of the class",
        "copy_rule": f"copy-like: nearer a training image than {COPY_PERCENTILE:g} % of real "
        f"test images are; mostly_copies: over {MOSTLY:.0%} of generated images copy-like",
    }


def _frechet_figures(
    samples: ClassSamples, real: np.ndarray, fake: np.ndarray, notes: list
) -> dict:
    if len(real) < 2 or len(fake) < 2:
        notes.append(
            f"Fréchet distance not computed: it needs at least 2 real and 2 generated images "
            f"(have {len(real)} and {len(fake)})"
        )
        return {"frechet_distance": None, "frechet_distance_train": None}
    out = {"frechet_distance": _round(frechet_distance(real, fake)), "frechet_distance_train": None}
    dim = real.shape[1]
    train_f = samples.train_features
    if train_f is not None and len(train_f) >= 2:
        # Reference: the same distance for the class's real training images. Both are biased
        # upwards for small samples, so they compare only at similar sizes.
        out["frechet_distance_train"] = _round(frechet_distance(real, train_f))
    if min(len(real), len(fake)) < dim:
        notes.append(
            f"fewer images than feature dimensions ({dim}): the Fréchet distance is biased "
            "upwards; compare it only with runs of similar size"
        )
    if out["frechet_distance_train"] is not None and len(train_f) < dim:
        notes.append(
            f"the real-vs-real reference uses only {len(train_f)} training images, fewer than "
            f"the {dim} feature dimensions, so it is biased upwards too"
        )
    return out


def _precision_recall_figures(real: np.ndarray, fake: np.ndarray, notes: list) -> dict:
    if len(real) <= K_NEIGHBOURS or len(fake) <= K_NEIGHBOURS:
        notes.append(
            f"precision and recall not computed: they need more than {K_NEIGHBOURS} real and "
            f"generated images (have {len(real)} and {len(fake)})"
        )
        return {"precision": None, "recall": None}
    precision, recall = precision_recall(real, fake)
    return {"precision": _round(precision), "recall": _round(recall)}


def _memorisation_figures(
    samples: ClassSamples, rng: np.random.Generator, notes: list
) -> tuple[dict, MemorisationDetail]:
    # Every training image is a possible source of a copy; the query sets are subsampled.
    train = _pixels(samples.train)
    test = _subsample(_pixels(samples.test), rng, MAX_QUERIES)
    gen = _subsample(_pixels(samples.generated), rng, MAX_QUERIES)
    mem, detail = memorisation(gen, train, test)
    n_train = len(train)
    if n_train <= FEW_TRAINING:
        notes.append(
            f"only {n_train} training image(s): the GAN can only remix these few images, so "
            "its output is variations of them, not new examples of the class"
        )
    if len(test) < MIN_REFERENCE:
        notes.append(
            f"only {len(test)} real test image(s) to set the copy threshold: the memorisation "
            "flag is rough"
        )
    if mem["mostly_copies"]:
        notes.append(
            f"{mem['copy_like_share']:.0%} of generated images are closer to a training image "
            f"than {100 - COPY_PERCENTILE:g} % of real test images are: the GAN mostly copies"
        )
    return mem, detail


def _pixels(images: torch.Tensor) -> np.ndarray:
    return images.reshape(len(images), -1).numpy()  # uint8: converted block by block


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _distance_blocks(queries: np.ndarray, refs: np.ndarray):
    """Yield (start, [rows, len(refs)] Euclidean distances) over blocks of query rows."""
    r = np.asarray(refs, np.float64)
    r_sq = (r * r).sum(1)
    for start in range(0, len(queries), _ROWS):
        block = np.asarray(queries[start : start + _ROWS], np.float64)
        sq = (block * block).sum(1)[:, None] + r_sq[None, :] - 2 * block @ r.T
        yield start, np.sqrt(np.clip(sq, 0, None))


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row to its k-th nearest other row."""
    radii = np.empty(len(x))
    for start, block in _distance_blocks(x, x):
        # Column k of the sorted row is the k-th neighbour: column 0 is the row itself.
        radii[start : start + len(block)] = np.partition(block, k, axis=1)[:, k]
    return radii


def _share_covered(queries: np.ndarray, refs: np.ndarray, radii: np.ndarray) -> float:
    covered = np.zeros(len(queries), dtype=bool)
    for start, block in _distance_blocks(queries, refs):
        covered[start : start + len(block)] = (block <= radii[None, :]).any(1)
    return float(covered.mean())


def _subsample(x: np.ndarray, rng: np.random.Generator, limit: int = MAX_SAMPLES) -> np.ndarray:
    return x if len(x) <= limit else x[rng.choice(len(x), limit, replace=False)]


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), digits)
