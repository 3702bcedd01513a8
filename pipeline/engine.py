"""How a training step is run: eagerly, or captured once in a CUDA graph and replayed.

The pipeline's training steps are tiny (a 28x28 DCGAN at batch 64 is ~100 kernels of a few
microseconds each), so an eager loop on a GPU is bound by Python and kernel-launch overhead,
not by the GPU. A CUDA graph records the kernels of one whole step (forward, backward,
optimiser) once and replays them with one launch, so a step costs what its kernels cost.

A step function is a plain, argument-free Python callable that does one training iteration
in place: it samples its own batch and noise on the device, updates parameters and optimiser
state, and writes its losses into a preallocated device tensor. The same function is what the
eager engine calls every iteration, so both engines do the same maths; the graph engine adds
only the capture/replay mechanics below. For a step to be capturable it must:
  - read and write only tensors that exist before capture and live as long as the graph
    (parameters, optimiser state, data, loss history, a device-side step counter);
  - draw randomness from `training_rng(device)` (the job lane's random-number generator,
    or PyTorch's default one outside a lane), passed as generator= to torch.rand/randn/randint:
    under capture PyTorch records philox offsets, so every replay draws fresh numbers, in the
    same sequence an eager loop would;
  - never synchronise with the host (.item(), .cpu(), printing, data-dependent shapes);
  - use an optimiser built by `make_adam(..., engine="graph")` (capturable: its step count
    and bias correction live on the device).

Engines: "eager" (the reference, and the only one on a CPU), "graph" (CUDA only), "auto"
(graph on CUDA, eager elsewhere).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

ENGINES = ("auto", "eager", "graph")
# Eager iterations before capture: the first runs allocate optimiser state and pick cuDNN
# algorithms; the PyTorch docs ask for a few on a side stream before capturing.
WARMUP_STEPS = 3


def resolve_engine(engine: str, device: torch.device) -> str:
    """ "auto" -> "graph" on CUDA, "eager" elsewhere; "graph" off CUDA is an error."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "auto":
        return "graph" if device.type == "cuda" else "eager"
    if engine == "graph" and device.type != "cuda":
        raise RuntimeError(f"engine 'graph' needs a CUDA device, got {device.type}")
    return engine


def make_adam(
    params: Iterable[torch.nn.Parameter], lr: float, betas: tuple[float, float], engine: str
) -> torch.optim.Adam:
    """Adam with the same hyperparameters for both engines.

    eager: PyTorch's default implementation (foreach on CUDA): the plain reference.
    graph: fused (one multi-tensor kernel per step) and capturable (step count and bias
    correction on the device, so the captured update stays right on every replay). Same
    update rule, so the two differ only by floating-point rounding.
    """
    if engine == "graph":
        return torch.optim.Adam(params, lr=lr, betas=betas, capturable=True, fused=True)
    return torch.optim.Adam(params, lr=lr, betas=betas)


def run_steps(
    step: Callable[[], None],
    iterations: int,
    engine: str,
    device: torch.device,
    on_step: Callable[[int], None] | None = None,
    every: int = 50,
) -> None:
    """Run `step` `iterations` times; call on_step(i) after every `every`-th iteration.

    on_step may raise to cancel; nothing runs after it raises. With the graph engine the
    first WARMUP_STEPS iterations run eagerly on a side stream, one more call of `step` is
    captured (capture runs no kernels, so it is not an iteration), and the graph is replayed
    for the rest: `iterations` updates in all, as with the eager engine.
    """

    def report(done: int) -> None:
        if on_step is not None and done % every == 0:
            on_step(done)

    if engine == "eager" or iterations <= WARMUP_STEPS:
        for i in range(iterations):
            step()
            report(i + 1)
        return
    graph = capture(step, device)
    stream = torch.cuda.current_stream(device)
    for i in range(WARMUP_STEPS, iterations):
        graph.replay()
        if on_step is not None and (i + 1) % every == 0:
            # Wait for the replays queued so far, so the progress reported is work done and
            # a cancellation takes effect within `every` iterations. One wait per `every`
            # steps; this job's GPU queue idles only while its thread wakes and launches the
            # next replay (other jobs' work fills the GPU meanwhile).
            wait_for(stream)
            report(i + 1)


def concurrent(steps: list[Callable[[], None]], device: torch.device) -> Callable[[], None]:
    """One step that runs independent steps side by side, each on its own CUDA stream.

    Each step alone is a chain of small kernels that leaves most of the GPU idle; on separate
    streams the kernels of different steps overlap. Inside a graph capture the streams fork
    from the capturing stream and join it again, so the graph holds all of them.
    """
    streams = side_streams(device, len(steps), first=1)

    def step() -> None:
        main = torch.cuda.current_stream(device)
        for stream, member_step in zip(streams, steps, strict=True):
            stream.wait_stream(main)
            with torch.cuda.stream(stream):
                member_step()
        for stream in streams:
            main.wait_stream(stream)

    return step


@dataclass
class Lane:
    """The CUDA streams of one job: its main stream and the side streams it forks to.

    Jobs that run at once in one process (a worker running several jobs on its GPU) each hold
    a lane of their own, so their kernels overlap on the GPU, and no two graph captures ever
    touch the same stream. Lanes are made once and reused, never made per job: cuBLAS keeps a
    workspace for every stream it runs on for the life of the process (on an H200, peak memory
    rose by 128 MiB per job while each job made fresh streams).
    """

    main: torch.cuda.Stream
    # The random numbers of the job's training steps (batches, noise, augmentation, dropout):
    # a generator per lane, not the default CUDA generator, which every capture in the
    # process claims while it runs and whose replay offsets all graphs would share.
    rng: torch.Generator
    side: list[torch.cuda.Stream] = field(default_factory=list)


_free_lanes: dict[tuple[str, int], list[Lane]] = {}
_lanes_lock = threading.Lock()
_current = threading.local()  # .lane: the lane this thread's job holds, if any
_unlaned_side: dict[tuple[str, int], list[torch.cuda.Stream]] = {}
_capture_lock = threading.Lock()


@contextmanager
def job_lane(device: torch.device) -> Iterator[None]:
    """Run the block on a lane of its own (see Lane); a no-op off CUDA.

    Every kernel the block queues goes to the lane's main stream (PyTorch's current stream is
    per thread), not to the device's default stream, which would serialise it with every
    other job's work. The lane is handed back, idle, for the next job.
    """
    if device.type != "cuda":
        yield
        return
    key = _device_key(device)
    with _lanes_lock:
        free = _free_list(key)
        lane = free.pop() if free else _new_lane(torch.device(*key))
    _current.lane = lane
    try:
        with torch.cuda.stream(lane.main):
            yield
    finally:
        _current.lane = None
        try:  # nothing of this job may still run (a step that raised, say) when the next gets it
            for stream in [lane.main, *lane.side]:
                wait_for(stream)
        finally:
            with _lanes_lock:
                _free_lanes[key].append(lane)


def make_lanes(device: torch.device, n: int) -> None:
    """Have at least n idle lanes on `device` (a worker's job slots), each with the cuBLAS
    workspace of its main stream already allocated, so jobs that start together find theirs
    ready. A no-op off CUDA."""
    if device.type != "cuda":
        return
    key = _device_key(device)
    dev = torch.device(*key)
    with _lanes_lock:
        free = _free_list(key)
        while len(free) < n:
            free.append(_new_lane(dev))
        for lane in free:
            with torch.cuda.stream(lane.main):
                torch.ones(8, 8, device=dev) @ torch.ones(8, 8, device=dev)
            wait_for(lane.main)


def _free_list(key: tuple[str, int]) -> list[Lane]:
    """The idle lanes of a device; call with _lanes_lock held."""
    if key not in _free_lanes:  # the first lane on this device in this process
        _load_lazy_libraries(torch.device(*key))
    return _free_lanes.setdefault(key, [])


def _new_lane(device: torch.device) -> Lane:
    return Lane(torch.cuda.Stream(device), torch.Generator(device))


# How a job's thread waits for its GPU work: True = asleep on a blocking-sync event; False =
# Stream.synchronize, which spins a CPU core for the whole wait (with 8 jobs at once on an
# H200 the worker process burnt about 7 cores, mostly spinning; bench/concurrency.py
# --spin-waits measures the difference).
BLOCKING_WAITS = True


def wait_for(stream: torch.cuda.Stream) -> None:
    """Return once `stream` has run everything queued on it so far."""
    if not BLOCKING_WAITS:
        stream.synchronize()
        return
    done = torch.cuda.Event(blocking=True)
    done.record(stream)
    done.synchronize()


def side_streams(device: torch.device, n: int, first: int = 0) -> list[torch.cuda.Stream]:
    """Side streams first .. first+n-1 of this thread's lane, the same objects on every call.

    Outside job_lane (a bare training call, a test: one job at a time), a pool per device.
    Stream 0 is the warm-up stream of `capture`; `concurrent` uses 1, 2, ...
    """
    key = _device_key(device)
    lane = getattr(_current, "lane", None)
    pool = lane.side if lane is not None else _unlaned_side.setdefault(key, [])
    while len(pool) < first + n:
        pool.append(torch.cuda.Stream(torch.device(*key)))
    return pool[first : first + n]


def _load_lazy_libraries(device: torch.device) -> None:
    """PyTorch loads its CUDA linear-algebra library on the first call, and that loading is
    not thread-safe: two jobs fitting their transfer models at once raised "lazy wrapper
    should be called at most once" and the worker died (SIGSEGV) on the H200. Load it here,
    one thread at a time, before jobs run side by side."""
    torch.linalg.cholesky(torch.eye(2, device=device))
    torch.cuda.current_stream(device).synchronize()


def training_rng(device: torch.device) -> torch.Generator | None:
    """The random-number generator a training step on `device` draws from: its job's lane's
    on CUDA inside job_lane; None (PyTorch's default generator) elsewhere."""
    lane = getattr(_current, "lane", None)
    return lane.rng if lane is not None and device.type == "cuda" else None


def _device_key(device: torch.device) -> tuple[str, int]:
    index = device.index if device.index is not None else torch.cuda.current_device()
    return (device.type, index)


def capture_lock() -> threading.Lock:
    """The lock every graph capture in this process holds: eager backward passes that must
    not overlap a capture (pipeline/translation.py) hold it too."""
    return _capture_lock


def capture(step: Callable[[], None], device: torch.device) -> torch.cuda.CUDAGraph:
    """Run WARMUP_STEPS real iterations of `step` on a side stream, then capture one call."""
    current = torch.cuda.current_stream(device)
    side = side_streams(device, 1)[0]
    side.wait_stream(current)
    with torch.cuda.stream(side):
        for _ in range(WARMUP_STEPS):
            step()
    current.wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    rng = training_rng(device)
    if rng is not None:  # replays advance the lane's generator, as eager steps would
        graph.register_generator_state(rng)
    # thread_local: another thread of the worker process touching CUDA meanwhile (a progress
    # reporter, another job) does not invalidate this capture. One capture at a time per
    # process, as PyTorch documents for graphs; a capture records kernels without running them.
    # capture_begin/end on this lane's side stream, not the torch.cuda.graph context: that one
    # synchronises the whole device and empties the caching allocator before every capture,
    # which in a worker running several jobs would stall every other job's GPU work at each
    # capture and make them all allocate afresh.
    with _capture_lock, torch.cuda.stream(side):
        graph.capture_begin(capture_error_mode="thread_local")
        try:
            step()
        finally:
            graph.capture_end()
    return graph
