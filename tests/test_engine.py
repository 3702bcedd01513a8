"""The training engines: the shared step functions, the eager loop, and (on CUDA) the graph.

The graph engine only runs on a CUDA device; its tests are skipped elsewhere. Everything the
two engines share (the step functions, stacked-member independence, history recording,
progress and cancellation) is tested eagerly on the CPU.
"""

from __future__ import annotations

import pytest
import torch

from pipeline.classifier import classifier_step, make_classifier_state, train_classifiers
from pipeline.config import RunConfig
from pipeline.engine import WARMUP_STEPS, make_adam, resolve_engine, run_steps
from pipeline.gan import gan_step, make_gan_state, split_members, train_class_gans
from pipeline.stacked import copy_member_

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def member_blocks(module: torch.nn.Module, members: int) -> list[torch.Tensor]:
    """Every parameter split into its K member blocks: [K, -1] each (see pipeline/stacked.py)."""
    return [p.detach().reshape(members, -1).clone() for p in module.parameters()]


def gan_state(real: torch.Tensor, seed: int = 0, iterations: int = 4, device: str = "cpu"):
    k = real.shape[0]
    counts = torch.full((k,), real.shape[1])
    augment = torch.tensor([True] * k)
    return make_gan_state(
        real.to(device), counts, augment, iterations, 4, 16, 2e-4, 8, seed, engine="eager"
    )


def test_resolve_engine():
    assert resolve_engine("auto", torch.device("cpu")) == "eager"
    assert resolve_engine("eager", torch.device("cpu")) == "eager"
    with pytest.raises(RuntimeError, match="CUDA"):
        resolve_engine("graph", torch.device("cpu"))
    with pytest.raises(ValueError, match="engine"):
        resolve_engine("fast", torch.device("cpu"))


def test_config_engine_option():
    assert RunConfig().engine == "auto"
    assert RunConfig.from_dict({"engine": "eager"}).engine == "eager"
    with pytest.raises(ValueError, match="engine"):
        RunConfig.from_dict({"engine": "jit"})


def test_gan_member_depends_only_on_its_own_data():
    """Two GAN steps for K=2: changing member 1's images leaves member 0's weights alike.

    Same seed, so both runs draw the same indices, noise and augmentation; D and G updates
    (and Adam's elementwise state) of member 0 must not see member 1's data at all.
    """
    real_a = torch.rand(2, 6, 1, 28, 28) * 2 - 1
    real_b = real_a.clone()
    real_b[1] = torch.rand(6, 1, 28, 28) * 2 - 1
    after = []
    for real in (real_a, real_b):
        st = gan_state(real)
        gan_step(st)
        gan_step(st)
        after.append((member_blocks(st.g, 2), member_blocks(st.d, 2)))
    for net in (0, 1):
        for pa, pb in zip(after[0][net], after[1][net], strict=True):
            torch.testing.assert_close(pa[0], pb[0], rtol=0, atol=1e-6)
    # ...while member 1 did change with its data (the test would be vacuous otherwise).
    d_a, d_b = after[0][1], after[1][1]
    assert any(not torch.allclose(pa[1], pb[1]) for pa, pb in zip(d_a, d_b, strict=True))


def test_classifier_member_depends_only_on_its_own_data():
    images = torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8)
    labels = torch.arange(20) % 3
    pools = torch.stack([torch.arange(10), torch.arange(10, 20)])  # member 0: 0..9, 1: 10..19
    changed = images.clone()
    changed[10:] = torch.randint(0, 256, (10, 1, 28, 28), dtype=torch.uint8)
    after = []
    for x in (images, changed):
        st = make_classifier_state(
            x, labels, pools, torch.tensor([10, 10]), [0, 1], 3, 3, 8, 1e-3, 0, "eager"
        )
        for _ in range(3):
            classifier_step(st)
        after.append(member_blocks(st.model, 2))
    for pa, pb in zip(*after, strict=True):
        torch.testing.assert_close(pa[0], pb[0], rtol=0, atol=1e-6)
    assert any(not torch.allclose(pa[1], pb[1]) for pa, pb in zip(*after, strict=True))


def test_one_batch_through_d_equals_two():
    """gan_step sends real and fake through D as one batch of 2B: the same function as two."""
    st = gan_state(torch.rand(2, 6, 1, 28, 28) * 2 - 1)
    x = torch.rand(2, 8, 1, 28, 28) * 2 - 1
    torch.testing.assert_close(st.d(x), torch.cat([st.d(x[:, :4]), st.d(x[:, 4:])], dim=1))


def test_split_members_compute_the_stacked_function():
    """Member k split out as a single network computes what member k of the stack computes
    (the "streams" layout starts from these), and copying it back is exact."""
    st = gan_state(torch.rand(3, 6, 1, 28, 28) * 2 - 1)
    gan_step(st)  # non-initial weights, batch-norm statistics moved
    members = split_members(st, 4, "eager")
    z = torch.randn(3, 5, 16)
    x = torch.rand(3, 5, 1, 28, 28) * 2 - 1
    for k, ms in enumerate(members):
        torch.testing.assert_close(ms.g(z[k : k + 1])[0], st.g(z)[k], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ms.d(x[k : k + 1])[0], st.d(x)[k], rtol=1e-5, atol=1e-5)
        assert ms.counts.shape == (1, 1) and ms.real.shape[0] == 1
    before = member_blocks(st.g, 3)
    for p in members[1].g.parameters():
        p.data.add_(1.0)
    copy_member_(st.g, 1, members[1].g, 0)
    after = member_blocks(st.g, 3)
    for b, a in zip(before, after, strict=True):
        torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
        torch.testing.assert_close(a[2], b[2], rtol=0, atol=0)
    assert not torch.equal(after[0][1], before[0][1])


def test_gan_history_and_counter():
    real = torch.rand(2, 5, 1, 28, 28) * 2 - 1
    result = train_class_gans(
        real, torch.tensor([5, 3]), torch.tensor([True, False]), iterations=7, batch=4, width=8
    )
    assert result.engine == "eager"
    assert result.d_loss.shape == (7, 2) and result.g_loss.shape == (7, 2)
    # Every row was written by its own iteration: softplus losses are strictly positive.
    assert (result.d_loss > 0).all() and (result.g_loss > 0).all()
    assert torch.isfinite(result.d_loss).all()


def test_gan_history_is_subsampled_for_long_runs(monkeypatch):
    """Long runs keep every (iterations // 200)-th row: rows 0, 2, 4, ... for 450 iterations.

    The step is replaced by one that writes its own iteration number, so the test checks the
    bookkeeping (device-side counter, history rows, subsampling) and stays fast.
    """

    def numbered_step(st) -> None:
        row = (st.it.float() + 1).view(1, 1, 1).expand(1, 2, st.real.shape[0])
        st.history.index_copy_(0, st.it, row)
        st.it += 1

    monkeypatch.setattr("pipeline.gan.gan_step", numbered_step)
    real = torch.rand(1, 3, 1, 8, 8) * 2 - 1
    result = train_class_gans(
        real, torch.tensor([3]), torch.tensor([True]), iterations=450, batch=2, width=8, latent=4
    )
    assert result.loss_every == 2 and result.d_loss.shape == (225, 1)
    assert result.d_loss[:, 0].tolist() == [float(i + 1) for i in range(0, 450, 2)]


def test_classifier_history_and_learning():
    """Two clearly separable classes: the loss history is filled and falls."""
    images = torch.zeros(40, 1, 8, 8, dtype=torch.uint8)
    images[20:] = 255
    labels = (torch.arange(40) >= 20).long()
    pools = torch.arange(40).repeat(2, 1)
    model = train_classifiers(
        images, labels, pools, torch.tensor([40, 40]), [0, 1], 2, steps=60, batch=16
    )
    hist = model.loss_history
    assert hist.shape == (60, 2) and (hist > 0).all()
    assert (hist[-10:].mean(0) < hist[:5].mean(0) / 2).all()


def test_run_steps_progress_and_cancel():
    calls = []
    run_steps(lambda: calls.append("s"), 120, "eager", torch.device("cpu"), calls.append, 50)
    assert calls.count("s") == 120 and [c for c in calls if c != "s"] == [50, 100]

    class Cancelled(Exception):
        pass

    def cancel(i: int) -> None:
        raise Cancelled

    steps = []
    with pytest.raises(Cancelled):
        run_steps(lambda: steps.append(1), 500, "eager", torch.device("cpu"), cancel, 10)
    assert len(steps) == 10


def test_make_adam_eager_is_plain_adam():
    p = [torch.nn.Parameter(torch.zeros(3))]
    opt = make_adam(p, 1e-3, (0.5, 0.999), "eager")
    assert isinstance(opt, torch.optim.Adam)
    assert not opt.defaults["capturable"] and not opt.defaults["fused"]


# ---- CUDA only -------------------------------------------------------------------------


def _gan_run(engine: str, iterations: int = 40, layout: str = "stacked"):
    torch.manual_seed(123)
    real = (torch.rand(2, 10, 1, 28, 28) * 2 - 1).cuda()
    result = train_class_gans(
        real,
        torch.tensor([10, 7]),
        torch.tensor([True, False]),
        iterations=iterations,
        batch=16,
        width=16,
        seed=5,
        engine=engine,
        layout=layout,
    )
    return result, torch.cat([p.detach().flatten() for p in result.generator.parameters()])


@cuda
def test_graph_gan_matches_eager():
    """Same seed, same step function: the graph replays draw the same random numbers as the
    eager loop (philox offsets), so the two runs agree up to rounding (fused vs foreach Adam)."""
    eager, pe = _gan_run("eager")
    graph, pg = _gan_run("graph")
    assert graph.engine == "graph"
    assert torch.isfinite(graph.d_loss).all() and (graph.d_loss > 0).all()
    # The warm-up iterations and the replays all wrote their own rows.
    assert graph.d_loss.shape == eager.d_loss.shape == (40, 2)
    torch.testing.assert_close(graph.d_loss, eager.d_loss, rtol=0.05, atol=0.05)
    assert ((pg - pe).norm() / pe.norm()).item() < 0.05


@cuda
def test_streams_layout_graph_matches_eager():
    """K single-member GANs on K streams, captured in one graph (fork/join), against the same
    layout run eagerly: same random draws in the same order, so close results."""
    eager, pe = _gan_run("eager", layout="streams")
    graph, pg = _gan_run("graph", layout="streams")
    assert graph.d_loss.shape == (40, 2) and (graph.d_loss > 0).all()
    torch.testing.assert_close(graph.d_loss, eager.d_loss, rtol=0.05, atol=0.05)
    assert ((pg - pe).norm() / pe.norm()).item() < 0.05
    # Trained: the merged generator moved away from the stacked layout's (same) start.
    _, p0 = _gan_run("graph", iterations=1)
    assert ((pg - p0).norm() / p0.norm()).item() > 1e-3


@cuda
def test_graph_classifier_matches_eager():
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8).cuda()
    labels = (torch.arange(64) % 3).cuda()
    pools = torch.arange(64).repeat(3, 1).cuda()
    sizes = torch.tensor([64, 40, 20]).cuda()
    models = [
        train_classifiers(images, labels, pools, sizes, [0, 1, 0], 3, 30, 16, engine=e)
        for e in ("eager", "graph")
    ]
    torch.testing.assert_close(models[1].loss_history, models[0].loss_history, rtol=0.02, atol=0.02)


@cuda
def test_graph_progress_and_cancel():
    st = gan_state(torch.rand(1, 6, 1, 28, 28) * 2 - 1, iterations=100, device="cuda")
    st.opt_g = make_adam(st.g.parameters(), 2e-4, (0.5, 0.999), "graph")
    st.opt_d = make_adam(st.d.parameters(), 2e-4, (0.5, 0.999), "graph")
    seen = []

    def progress(i: int) -> None:
        seen.append(i)
        # The counter is read only here, between replays: all queued work is done.
        assert int(st.it) == i
        if i == 60:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_steps(lambda: gan_step(st), 100, "graph", torch.device("cuda"), progress, 20)
    assert seen == [20, 40, 60] and int(st.it) == 60 > WARMUP_STEPS


@cuda
@pytest.mark.parametrize("blocking", [True, False])
def test_wait_for_returns_after_the_queued_work(monkeypatch, blocking):
    from pipeline import engine

    monkeypatch.setattr(engine, "BLOCKING_WAITS", blocking)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        torch.cuda._sleep(50_000_000)  # tens of milliseconds of GPU work on that stream
        queued = torch.cuda.Event()
        queued.record(stream)
    assert not queued.query()
    engine.wait_for(stream)
    assert queued.query()


def test_make_lanes_is_a_no_op_off_cuda():
    from pipeline import engine

    engine.make_lanes(torch.device("cpu"), 4)
    assert ("cpu", 0) not in engine._free_lanes


@cuda
def test_made_lanes_are_the_ones_jobs_get():
    import threading

    from pipeline import engine

    dev = torch.device("cuda")
    engine.make_lanes(dev, 3)
    made = {id(lane) for lane in engine._free_lanes[engine._device_key(dev)]}
    assert len(made) >= 3
    got, inside, release = [], threading.Barrier(4), threading.Event()

    def job() -> None:
        with engine.job_lane(dev):
            got.append(id(engine._current.lane))
            inside.wait()
            release.wait()

    threads = [threading.Thread(target=job) for _ in range(3)]
    for t in threads:
        t.start()
    inside.wait()  # three jobs hold a lane at once
    release.set()
    for t in threads:
        t.join()
    assert len(set(got)) == 3 and set(got) <= made
