"""The images that fill each minority class: the one place a generator and a share are chosen.

`synthesize(ds, need, cfg, device, progress)` returns a `Balanced`: for every class c in
`need`, need[c] new images, of which `synthetic[c]` are generated (uint8 [n, C, S, S], CPU)
and `copies[c]` are indices of the class's real training images repeated (oversampling), plus
the report's `gan` section. Used by the pipeline (balance to a target) and by the
imbalanced-learn sampler (any counts).

Generators (cfg.generator): "per-class" (a DCGAN on that class's images, pipeline/gan.py),
"transfer" (variation learned from every class, pipeline/transfer.py), "translation" (big-class
images translated into the class, pipeline/translation.py); "auto" lets the proxy test
(pipeline/selection.py) choose among them. Share (cfg.synthetic_share): the part of the
missing images that is generated; "auto" lets the proxy test choose it, down to 0 (plain
oversampling). Each generator makes FilterConfig.factor times the images needed; the strict
filter (pipeline/filtering.py) keeps those that pass, and a place none passed for falls back
to a repeated real image.

All the work for the job and its proxy worlds runs together: one joint GAN training (a member
per (world, class)), one stacked judge per world, one stacked classifier training to score
every (world, option).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.classifier import SmallCNN, predict, single_member, train_on_pools
from pipeline.config import RunConfig
from pipeline.dataset import ImageDataset
from pipeline.filtering import (
    FilterConfig,
    judge_probabilities,
    nearest_real_distance,
    select,
    typical_neighbour_gap,
)
from pipeline.gan import generate, to_unit, train_class_gans
from pipeline.selection import (
    NO_EVIDENCE_SHARE,
    OVERSAMPLE,
    Option,
    OptionScore,
    Selection,
    World,
    choose,
    proxy_worlds,
    score_predictions,
)
from pipeline.transfer import NEIGHBOURS, TransferConfig, fit_field_models, generate_variations
from pipeline.translation import translate

FILTER = FilterConfig()
CANDIDATES = ("per-class", "transfer", "translation")  # what generator "auto" chooses among
SHARES = (0.5, 1.0)  # shares tried under synthetic_share "auto" (0 = oversampling: the reference)


@dataclass
class Balanced:
    """need[c] new images per class c: generated ones and repeated real ones."""

    synthetic: dict[int, torch.Tensor]  # uint8 [n_c, C, S, S] generated images that passed
    copies: dict[int, np.ndarray]  # int64 indices into ds.train_* of real images repeated
    info: dict  # the report's gan section, by class name


def synthesize(
    ds: ImageDataset,
    need: dict[int, int],
    cfg: RunConfig,
    device: torch.device,
    progress,
) -> Balanced:
    """need[c] new images of class c for every c in need with need[c] >= 1; cfg resolved.

    progress(stage, fraction) is called with stage "training_gan".
    """
    need = {c: n for c, n in need.items() if n > 0}
    copies = oversample_draws(ds.train_labels.numpy(), need, cfg.seed)
    if not need:
        return Balanced({}, {}, {})
    fixed = None if cfg.synthetic_share == "auto" else float(cfg.synthetic_share)
    if fixed == 0.0:  # plain oversampling: nothing to generate
        sel = Selection("oversample", 0.0, "synthetic_share 0 asked for: plain oversampling")
        return compose(ds, need, {}, copies, sel, {})
    with _plan_lock(device):
        plan = make_plan(ds, need, cfg, device, progress)
    sel = plan.decide(plan.generators, fixed)
    progress("training_gan", 1.0)
    return compose(ds, need, plan.kept_for(sel), copies, sel, plan.info_for(sel))


@dataclass
class Plan:
    """Every candidate generator's filtered images for the job (world 0) and its proxy
    worlds, and the proxy test's scores of every (generator, share) option."""

    need: dict[int, int]
    generators: list[str]
    shares: tuple[float, ...]
    worlds: list[World]
    kept: list[dict]  # kept[w][g][c]: images that passed the filter
    info: dict  # (g, w, c) -> the generator's report figures
    filter_counts: dict  # (g, w, c) -> the filter's counts
    scored: dict  # (g, 0, c) -> (candidates, judge probabilities, copy distances, threshold)
    scores: dict[Option, OptionScore]
    judge: dict  # the judges' figures for the report
    seconds: float
    stage_seconds: dict[str, float]  # wall time of each step (judges, generators, ...)
    class_names: list[str]

    def decide(self, generators: list[str], fixed: float | None) -> Selection:
        """The selection among `generators` (a subset of the plan's) at share `fixed` or auto."""
        if len(self.worlds) == 1 and len(generators) == 1 and fixed is not None:
            return Selection(
                generators[0], fixed, f"asked for (generator {generators[0]}, share {fixed:g})"
            )
        scores = {o: sc for o, sc in self.scores.items() if o[0] in generators}
        if fixed is not None:
            scores = {o: sc for o, sc in scores.items() if o[1] == fixed}
        if not scores:
            return _no_evidence(generators[0], fixed)
        sel = choose(scores, fixed, generators[0])
        sel.worlds = [w.describe(self.class_names) for w in self.worlds[1:]]
        return sel

    def kept_for(self, sel: Selection) -> dict[int, torch.Tensor]:
        if sel.share == 0:
            return {}
        return {c: self.kept[0][sel.generator][c] for c in self.need}

    def info_for(self, sel: Selection) -> dict[int, dict]:
        out = {}
        for c in self.need:
            out[c] = dict(self.info.get((sel.generator, 0, c), {}))
            out[c]["filter"] = self.filter_counts.get((sel.generator, 0, c))
            out[c]["selection_seconds"] = round(self.seconds, 3)
            out[c]["selection_stage_seconds"] = self.stage_seconds
            out[c]["judge"] = self.judge
        return out


def make_plan(
    ds: ImageDataset, need: dict[int, int], cfg: RunConfig, device: torch.device, progress
) -> Plan:
    """Candidates of every allowed generator, filtered, and the proxy test's scores."""
    t = time.perf_counter()
    labels = ds.train_labels.numpy()
    fixed = None if cfg.synthetic_share == "auto" else float(cfg.synthetic_share)
    generators = [g for g in CANDIDATES if cfg.generator in ("auto", g)]
    generators = [g for g in generators if _feasible(g, labels, np.arange(len(labels)), need)]
    if not generators:
        raise ValueError(
            f"generator {cfg.generator} needs a class with more than {NEIGHBOURS} training images"
        )
    shares = SHARES if fixed is None else (fixed,)
    worlds = [World(train=np.arange(len(labels)), need=need)]
    if len(generators) > 1 or len(shares) > 1:
        target = int(max(int((labels == c).sum()) + n for c, n in need.items()))
        worlds += proxy_worlds(labels, need, target, cfg.proxy_worlds, cfg.seed)
    clock = _Clock()
    stacked = train_judges(ds, worlds, cfg, device, lambda f: progress("training_gan", 0.1 * f))
    judge = [single_member(stacked, w) for w in range(len(worlds))]  # judge[w]: world w's
    clock.lap("judges")
    progress("training_gan", 0.1)
    candidates, info = make_candidates(ds, worlds, generators, judge, cfg, device, progress, clock)
    kept, filter_counts, scored = filter_candidates(ds, worlds, candidates, judge, cfg)
    clock.lap("filter")
    options = [OVERSAMPLE] + [
        (g, s) for g in generators for s in shares if all(g in k for k in kept[1:])
    ]
    scores = {}
    if len(worlds) > 1 and len(options) > 1:
        on_proxy = lambda f: progress("training_gan", 0.9 + 0.1 * f)  # noqa: E731
        scores = score_options(ds, worlds, options, kept, cfg, device, on_proxy)
        del scores[OVERSAMPLE]
        clock.lap("proxy_classifiers")
    return Plan(
        need=need,
        generators=generators,
        shares=shares,
        worlds=worlds,
        kept=kept,
        info=info,
        filter_counts=filter_counts,
        scored=scored,
        scores=scores,
        judge=judge_seconds(stacked),
        seconds=time.perf_counter() - t,
        stage_seconds=clock.laps,
        class_names=ds.class_names,
    )


def _no_evidence(generator: str, fixed: float | None) -> Selection:
    share = NO_EVIDENCE_SHARE if fixed is None else fixed
    return Selection(
        generator,
        share,
        "no class is big enough to run the proxy test on (it needs a class that is not a "
        f"minority class with at least the minority's size + 10 images): {generator} at share "
        f"{share:g} as a hedge",
    )


def compose(
    ds: ImageDataset,
    need: dict[int, int],
    synthetic: dict[int, torch.Tensor],
    copies: dict[int, np.ndarray],
    sel: Selection,
    info: dict[int, dict],
) -> Balanced:
    """Per class: round(share x need) generated images (as many as passed), the rest copies."""
    out_syn, out_copies, report = {}, {}, {}
    for c, n in need.items():
        n_syn = min(round(sel.share * n), len(synthetic[c])) if c in synthetic else 0
        out_syn[c] = synthetic[c][:n_syn] if n_syn else ds.train_images[:0]
        out_copies[c] = copies[c][: n - n_syn]
        section = dict(info.get(c, {}))
        section.update(
            generator=sel.generator if n_syn else "oversample",
            generator_reason=sel.reason,
            selection=sel.to_dict(),
            synthetic=int(n_syn),
            repeated_real=int(n - n_syn),
        )
        report[ds.class_names[c]] = section
    return Balanced(out_syn, out_copies, report)


def oversample_draws(labels: np.ndarray, need: dict[int, int], seed: int) -> dict[int, np.ndarray]:
    """need[c] indices of class c's real images drawn with replacement, for every c in need.

    The same draws as oversampled_indices(labels, target, default_rng(seed)) makes for the
    oversample method, so a share of 0 trains on exactly the oversampled data.
    """
    rng = np.random.default_rng(seed)
    draws = {}
    for c in np.unique(labels).tolist():
        idx = np.flatnonzero(labels == c)
        if c in need:
            draws[c] = rng.choice(idx, need[c], replace=True)
    for c in need:  # a class with no real image at all cannot be oversampled
        draws.setdefault(c, np.zeros(0, np.int64))
    return draws


def oversampled_indices(labels: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    """All real images, plus minority images repeated at random until each class has `target`."""
    extra = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < target:
            extra.append(rng.choice(idx, target - len(idx), replace=True))
    return np.concatenate([np.arange(len(labels)), *extra])


def _feasible(generator: str, labels: np.ndarray, train: np.ndarray, need: dict) -> bool:
    """transfer needs a class with more than NEIGHBOURS images; translation another class."""
    counts = np.bincount(labels[train], minlength=max(need) + 1)
    if generator == "transfer":
        return bool((counts > NEIGHBOURS).any())
    if generator == "translation":
        return all(counts.sum() - counts[c] > 0 for c in need)
    return True


def train_judges(
    ds: ImageDataset, worlds: list[World], cfg: RunConfig, device: torch.device, progress=None
) -> SmallCNN:
    """A SmallCNN per world (member w) on its real training images, oversampled to balance.

    Oversampled so it does not call every doubtful image a majority class; trained like the
    compared classifiers (same epochs, batch, learning rate, augmentation).
    """
    t = time.perf_counter()
    labels = ds.train_labels.numpy()
    pools = []
    for w in worlds:
        sub = labels[w.train]
        pool = w.train[oversampled_indices(sub, int(np.bincount(sub).max()), _rng(cfg.seed))]
        pools.append(pool)
    judge = train_on_pools(
        ds.train_images,
        ds.train_labels,
        pools,
        [0] * len(pools),
        len(ds.class_names),
        cfg,
        device,
        seed=cfg.seed + 7,
        progress=progress,
    )
    judge.train_seconds = time.perf_counter() - t
    return judge


def judge_seconds(judge: SmallCNN) -> dict:
    return {"train_seconds": round(judge.train_seconds, 3), "worlds": judge.members}


def make_candidates(
    ds, worlds, generators, judge, cfg, device, progress, clock: _Clock
) -> tuple[dict, dict]:
    """candidates[(g, w, c)]: FILTER.factor x need images of class c in world w by generator g."""
    candidates: dict[tuple[str, int, int], torch.Tensor] = {}
    info: dict[tuple[str, int, int], dict] = {}
    images = ds.train_images.to(device)
    labels = ds.train_labels.to(device)
    labels_np = ds.train_labels.numpy()
    feasible = {
        g: [w for w, world in enumerate(worlds) if _feasible(g, labels_np, world.train, world.need)]
        for g in generators
    }
    if "transfer" in generators:
        on_fit = lambda f: progress("training_gan", 0.1 + 0.1 * f)  # noqa: E731
        cand, inf = _transfer(ds, worlds, feasible["transfer"], images, labels, cfg, on_fit)
        candidates.update(cand)
        info.update(inf)
    clock.lap("transfer")
    if "translation" in generators:
        for w in feasible["translation"]:
            cand, inf = _translation(worlds[w], images, labels, judge, w, cfg)
            for c in cand:
                candidates[("translation", w, c)], info[("translation", w, c)] = cand[c], inf[c]
    clock.lap("translation")
    progress("training_gan", 0.2)
    if "per-class" in generators:
        cand, inf = _per_class(
            ds, worlds, cfg, device, lambda f: progress("training_gan", 0.2 + 0.7 * f)
        )
        candidates.update(cand)
        info.update(inf)
    clock.lap("per-class")
    return candidates, info


def _transfer(ds, worlds, which: list[int], images, labels, cfg, progress) -> tuple[dict, dict]:
    """Variations for every world in `which`, one field model per world, fitted together."""
    tcfg = TransferConfig(pairs=cfg.transfer_pairs, steps=cfg.transfer_steps)
    if not which:
        return {}, {}
    groups = [torch.as_tensor(worlds[w].train) for w in which]
    models = fit_field_models(
        images,
        labels,
        groups,
        tcfg,
        seed=cfg.seed,
        on_step=lambda i: progress(i / tcfg.steps),
        step_every=cfg.progress_every,
        engine=cfg.engine,
    )
    candidates, info = {}, {}
    for w, model in zip(which, models, strict=True):
        train = torch.as_tensor(worlds[w].train, device=images.device)
        for c, n in worlds[w].need.items():
            mine = train[labels[train] == c]
            key = ("transfer", w, c)
            candidates[key] = generate_variations(
                model, images[mine], FILTER.factor * n, cfg.seed + c
            )
            info[key] = _transfer_info(
                model, tcfg, len(worlds[w].need), len(mine), len(candidates[key])
            )
    return candidates, info


def _transfer_info(model, tcfg, jointly: int, n_train: int, generated: int) -> dict:
    return {
        "seconds": model.seconds,  # fitting the variation models of the job and its proxy worlds
        "trained_jointly_with": jointly,
        "train_images": n_train,
        "generated": generated,
        "variation_model": {
            "pairs": model.pairs,
            "max_shift_px": model.max_shift,
            "spread_scale": tcfg.spread_scale,
            "pair_mse_before": round(model.loss_start, 5),
            "pair_mse_after": round(model.loss_end, 5),
            "registration_loss": model.loss_curve,
        },
    }


def _translation(world: World, images, labels, judge, w: int, cfg) -> tuple[dict, dict]:
    pool = torch.as_tensor(world.train, device=images.device)
    candidates, info = {}, {}
    for c, n in world.need.items():
        t = time.perf_counter()
        # One translation per image needed (as M2m): a failed one falls back to a real image.
        candidates[c] = translate(judge[w], images, labels, pool, c, n, cfg.seed + c)
        info[c] = {
            "seconds": round(time.perf_counter() - t, 3),
            "train_images": int((labels[pool] == c).sum()),
            "generated": int(len(candidates[c])),
            "translated_from": "images of the other classes (M2m-style, judge of this job)",
        }
    return candidates, info


def _per_class(ds, worlds, cfg, device, progress) -> tuple[dict, dict]:
    """One DCGAN per (world, class), trained on that class's images in that world, all at once."""
    labels = ds.train_labels.numpy()
    members = [(w, c) for w, world in enumerate(worlds) for c in world.need]
    sources = [
        world.train[labels[world.train] == c] for w, world in enumerate(worlds) for c in world.need
    ]
    counts = [len(s) for s in sources]
    n_max = max(counts)
    real = torch.full((len(members), n_max, ds.channels, ds.image_size, ds.image_size), -1.0)
    for k, idx in enumerate(sources):
        real[k, : counts[k]] = to_unit(ds.train_images[torch.as_tensor(idx)])
    iters = cfg.gan_iterations
    result = train_class_gans(
        real.to(device),
        torch.tensor(counts, device=device),
        torch.tensor([n < cfg.diffaug_below for n in counts]),
        iterations=iters,
        batch=cfg.gan_batch,
        latent=cfg.gan_latent,
        lr=cfg.gan_lr,
        width=cfg.gan_width,
        seed=cfg.seed,
        on_step=lambda i: progress(i / iters),
        step_every=cfg.progress_every,
        engine=cfg.engine,
    )
    wanted = [FILTER.factor * worlds[w].need[c] for w, c in members]
    images = generate(result.generator, wanted, cfg.gan_latent, cfg.gan_batch, cfg.seed + 1)
    candidates, info = {}, {}
    for k, (w, c) in enumerate(members):
        candidates[("per-class", w, c)] = images[k]
        info[("per-class", w, c)] = {
            "iterations": iters,
            "seconds": result.seconds,  # wall time of the joint training of all these GANs
            "trained_jointly_with": len(members),
            "train_images": counts[k],
            "generated": wanted[k],
            "diff_augment": counts[k] < cfg.diffaug_below,
            "loss_every": result.loss_every,
            "d_loss": [round(float(v), 4) for v in result.d_loss[:, k]],
            "g_loss": [round(float(v), 4) for v in result.g_loss[:, k]],
        }
    return candidates, info


def filter_candidates(ds, worlds, candidates, judge, cfg) -> tuple[dict, dict]:
    """kept[w][g][c]: the candidates that passed the strict filter (world w's judge); the
    filter's counts and, for the job's own candidates, (candidates, probs, dist, threshold)."""
    gap = typical_neighbour_gap(ds.train_images, ds.train_labels)
    labels = ds.train_labels.numpy()
    kept: list[dict] = [{} for _ in worlds]
    counts, scored = {}, {}
    for (g, w, c), cand in candidates.items():
        world = worlds[w]
        real = ds.train_images[torch.as_tensor(world.train[labels[world.train] == c])]
        probs = judge_probabilities(judge[w], cand, c)
        dist = nearest_real_distance(cand, real)
        chosen, counts[(g, w, c)] = select(
            cand, probs, dist, world.need[c], FILTER, FILTER.copy_fraction * gap, cfg.seed + c
        )
        kept[w].setdefault(g, {})[c] = chosen
        if w == 0:  # the job's own candidates with their scores (bench/suite.py replays them)
            scored[(g, w, c)] = (cand, probs, dist, FILTER.copy_fraction * gap)
    return kept, counts, scored


def score_options(
    ds, worlds, options, kept, cfg, device, progress=None
) -> dict[Option, OptionScore]:
    """Train a classifier per (proxy world, option) and score it on the world's held-out images."""
    labels = ds.train_labels.numpy()
    extra_images, extra_labels, pools, member_of = [], [], [], []
    offset = len(labels)  # synthetic images are appended after the real ones
    for w in range(1, len(worlds)):
        world = worlds[w]
        b, n_need = world.reduced, world.need[world.reduced]
        # Every class of the world oversampled to the job's target; B's copies set apart.
        sub = labels[world.train]
        drawn = world.train[oversampled_indices(sub, world.kept + n_need, _rng(cfg.seed + w))]
        extra = drawn[len(world.train) :]
        copies_b = extra[labels[extra] == b]
        base_rest = np.concatenate([world.train, extra[labels[extra] != b]])
        for g, s in options:
            syn = kept[w][g][b] if g != "oversample" else ds.train_images[:0]
            n_syn = min(round(s * n_need), len(syn))
            extra_images.append(syn[:n_syn])
            extra_labels.append(torch.full((n_syn,), b))
            syn_idx = np.arange(offset, offset + n_syn)
            offset += n_syn
            pools.append(np.concatenate([base_rest, copies_b[: n_need - n_syn], syn_idx]))
            member_of.append((w, (g, s)))
    images = torch.cat([ds.train_images, *extra_images])
    all_labels = torch.cat([ds.train_labels, *extra_labels])
    seeds_of = [w for w, _ in member_of]
    model = train_on_pools(
        images,
        all_labels,
        pools,
        seeds_of,
        len(ds.class_names),
        cfg,
        device,
        cfg.seed + 11,
        progress,
    )
    held = np.unique(np.concatenate([w.held_out for w in worlds[1:]]))
    preds = predict(model, ds.train_images[torch.as_tensor(held)].to(device)).numpy()  # [M, H]
    bal = {}
    for w in range(1, len(worlds)):
        cols = np.searchsorted(held, worlds[w].held_out)
        rows = [m for m, (ww, _) in enumerate(member_of) if ww == w]
        b_acc, r_acc = score_predictions(
            preds[rows][:, cols], labels[worlds[w].held_out], worlds[w]
        )
        for m, ba, ra in zip(rows, b_acc, r_acc, strict=True):
            bal[member_of[m]] = (ba, ra)
    scores = {}
    for o in options:
        d_bal = np.array([bal[(w, o)][0] - bal[(w, OVERSAMPLE)][0] for w in range(1, len(worlds))])
        d_min = np.array([bal[(w, o)][1] - bal[(w, OVERSAMPLE)][1] for w in range(1, len(worlds))])
        scores[o] = OptionScore(d_bal, d_min)
    return scores


_PLAN_LOCK = threading.Lock()


@contextmanager
def _plan_lock(device: torch.device) -> Iterator[None]:
    """One plan at a time per process on CUDA. Measured on the H200 (bench/concurrency.py,
    8 jobs at once): plans running side by side failed (a device-side assert in a scatter,
    "capturing stream has unjoined work", "Attempt to increase offset for a CUDA generator
    not in capture mode" in a multi-stream GAN's warm-up). Not yet re-measured with the lock:
    docs/benchmarks.md. Other jobs' classifier and evaluation steps still overlap a plan."""
    if device.type != "cuda":
        yield
        return
    with _PLAN_LOCK:
        yield


class _Clock:
    """Wall time between laps, rounded to ms, by lap name."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._t, 3)
        self._t = now


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)
