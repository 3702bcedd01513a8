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
  - draw randomness from the default CUDA generator (torch.rand/randn/randint/dropout on the
    device: under capture PyTorch records philox offsets, so every replay draws fresh numbers,
    in the same sequence an eager loop would);
  - never synchronise with the host (.item(), .cpu(), printing, data-dependent shapes);
  - use an optimiser built by `make_adam(..., engine="graph")` (capturable: its step count
    and bias correction live on the device).

Engines: "eager" (the reference, and the only one on a CPU), "graph" (CUDA only), "auto"
(graph on CUDA, eager elsewhere).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

ENGINES = ("auto", "eager", "graph")
# Side streams, made once per device and reused by every run (see side_streams).
_STREAMS: dict[tuple[str, int], list[torch.cuda.Stream]] = {}
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
            # steps; the GPU idles only while the next replay is launched (microseconds).
            stream.synchronize()
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


def side_streams(device: torch.device, n: int, first: int = 0) -> list[torch.cuda.Stream]:
    """Streams first .. first+n-1 of this device's pool, the same objects on every call.

    Not fresh streams per job: cuBLAS gets a workspace for every stream it runs on, which
    PyTorch keeps for the life of the process, so a worker making new streams for each job
    would grow by that much every job. With fresh streams, peak memory on an H200 rose by
    128 MiB per warm job; this pool is the fix for that likely cause (not yet re-measured).
    Stream 0 is the warm-up stream of `capture`; `concurrent` uses 1, 2, ...
    """
    index = device.index if device.index is not None else torch.cuda.current_device()
    pool = _STREAMS.setdefault((device.type, index), [])
    while len(pool) < first + n:
        pool.append(torch.cuda.Stream(torch.device(device.type, index)))
    return pool[first : first + n]


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
    # thread_local: another thread of the worker process touching CUDA meanwhile (a progress
    # reporter, say) does not invalidate this capture.
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        step()
    return graph
