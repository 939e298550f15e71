"""SGLD: one fused update of all chains (:func:`sgld_step`) and the sampling loop (:func:`run_chains`).

Convention (REFERENCE.md §1.3), g the gradient of the **mean** minibatch loss::

    w <- w - (eps/2) * [nbeta * g + gamma * (w - w*)] + sqrt(eps) * sigma * xi,   xi ~ N(0, I)

Masked-out coordinates (weight-restricted LLC, §1.7) get neither drift nor noise.

Random streams (common random numbers): chain c draws its noise from its own generator seeded
with ``seed + c``; the minibatch order comes from :meth:`SGLDData.schedule` (another seeded
stream). Neither depends on the weights, the backend or the number of chains, so two calls with
the same seed (e.g. at neighbouring checkpoints) share all their randomness, and chain c is the
same chain whether 4 or 8 chains run. All chains see the same minibatch at a step (as in the
reference library); they differ by their noise.

CUDA graphs (``run_chains(..., cuda_graph=True)``, setting ``cuda_graph``): on a GPU, a step of a
small model is a few hundred tiny kernels whose launches cost more than their work (the quickstart
model: about 1.5 ms of launches per 4-chain step on an H200; BENCHMARKS.md). The graphed loop
records one whole step (minibatch gather by a step counter on the device, loss and gradient, the
update, the step's records) once as a CUDA graph and replays it; the chains' noise is still drawn
eagerly from their own generators before each replay, so every chain sees exactly the noise and
minibatches of the eager loop. Where capture fails, the eager loop runs instead, with a warning.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from devinterp.llc.backends import ChainLoss
from devinterp.llc.chain_threads import chain_slices, map_on_workers, worker_count
from devinterp.llc.data import SGLDData

NONFINITE_CHECK_EVERY = 25  # steps between checks that stop early once every chain is NaN/inf
GRAPH_WARMUP_STEPS = 3  # eager steps on a side stream before capture (autograd and cuBLAS set-up; PyTorch docs)

log = logging.getLogger(__name__)


@torch.no_grad()
def sgld_step(
    w: Tensor, grad: Tensor, w0: Tensor, noise: Tensor | None, *, epsilon: float, nbeta: float, gamma: float,
    noise_level: float = 1.0, mask: Tensor | None = None,
) -> Tensor:
    """Update ``w: Float[chains, d]`` in place by one SGLD step; return the drift step ``(eps/2)*[...]``.

    ``grad``: Float[chains, d], gradient of each chain's mean minibatch loss at ``w``;
    ``w0``: Float[d] (or [chains, d]), the localization centre w*; ``noise``: Float[chains, d]
    standard normal (None with ``noise_level == 0``); ``mask``: Float[d] (one mask for every chain)
    or Float[chains, d] (a mask per chain, e.g. one head per group of chains) of 0/1, or None.
    With ``noise_level = 0`` and ``gamma = 0`` this is SGD with learning rate ``epsilon * nbeta / 2``.
    """
    drift = grad * nbeta
    if gamma:
        drift.add_(w - w0, alpha=gamma)
    drift.mul_(epsilon / 2)
    if mask is not None:
        drift.mul_(mask)
    w.sub_(drift)
    if noise_level and noise is not None:
        scale = math.sqrt(epsilon) * noise_level
        w.add_(noise * mask if mask is not None else noise, alpha=scale)
    return drift


@dataclass
class ChainRun:
    """Raw output of :func:`run_chains` (CPU tensors)."""

    losses: Tensor  # Float[steps, chains]: minibatch loss at the weights before each step's update
    drift_norm: Tensor  # Float[steps, chains]: |drift step|
    noise_norm: float  # expected |noise step| = sqrt(eps) * sigma * sqrt(sampled coordinates)
    steps_run: int  # < steps when every chain went non-finite and the loop stopped early
    graphed: bool = False  # True when the steps ran as replays of a CUDA graph


def chain_generators(seed: int, chains: int, device: torch.device, offsets: list[int] | None = None
                     ) -> list[torch.Generator]:
    """One noise generator per chain, chain c seeded with ``seed + offsets[c]`` (default offsets[c] = c)."""
    offsets = list(range(chains)) if offsets is None else offsets
    return [torch.Generator(device=device).manual_seed(seed + o) for o in offsets]


def run_chains(
    chain_loss: ChainLoss, w0: Tensor, data: SGLDData, *, epsilon: float, nbeta: float, gamma: float,
    noise_level: float, chains: int, steps: int, batch_size: int, seed: int, mask: Tensor | None = None,
    seed_offsets: list[int] | None = None, workers: int | None = None, cuda_graph: bool = False,
    capture: Callable[[Callable[[], None]], Callable[[], None]] | None = None,
) -> ChainRun:
    """Run ``chains`` SGLD chains from ``w0: Float[d]`` for ``steps`` steps; record every step's loss.

    ``mask``: Float[d] or Float[chains, d] (see :func:`sgld_step`). ``seed_offsets[c]``: chain c's
    noise seed is ``seed + seed_offsets[c]`` (default c), so groups of chains with different masks
    can share their noise streams. ``workers``: how many slices of chains run at once on CPU
    threads (:mod:`devinterp.llc.chain_threads`); default: ``min(chains, torch threads)`` on a CPU
    when the backend is thread-safe, else 1. Chains are independent given the shared minibatch
    schedule, so the split does not change what any chain computes. ``cuda_graph``: run the steps
    as replays of one captured CUDA graph (module docstring) where the device is CUDA, the data
    pooled and ``steps`` at least ``GRAPH_WARMUP_STEPS``; same chains, same numbers.
    ``capture``: how a step is recorded (``body -> replay``; default: warm-up and
    ``torch.cuda.graph`` capture); tests pass ``lambda body: body`` to run the graphed loop on a CPU.
    """
    offsets = list(range(chains)) if seed_offsets is None else list(seed_offsets)
    if len(offsets) != chains:
        raise ValueError(f"seed_offsets has {len(offsets)} entries for {chains} chains")
    if workers is None:
        workers = worker_count(chains, w0.device) if chain_loss.thread_safe else 1
    schedule = data.schedule(steps, batch_size, seed)
    if schedule is not None and data.raw_batches is None:
        # once, not a host-to-device copy (and stall) per step
        schedule = schedule.to(w0.device)
    per_chain_mask = mask is not None and mask.dim() == 2
    d_eff = float(mask.sum(dim=-1).float().mean()) if mask is not None else w0.shape[0]
    noise_norm = math.sqrt(epsilon) * noise_level * math.sqrt(d_eff)

    graphable = data.raw_batches is None and steps >= GRAPH_WARMUP_STEPS
    if cuda_graph and graphable and (capture is not None or w0.device.type == "cuda"):
        try:
            losses, drift_norm, steps_run = _advance_graphed(
                chain_loss, w0, data, schedule, epsilon=epsilon, nbeta=nbeta, gamma=gamma, noise_level=noise_level,
                steps=steps, seed=seed, mask=mask, offsets=offsets, capture=capture or _cuda_capture)
            return ChainRun(losses.cpu(), drift_norm.cpu(), noise_norm, steps_run, graphed=True)
        except RuntimeError as err:  # capture is not possible for every model and backend
            log.warning("CUDA graph capture failed (%s: %s); running the eager loop", type(err).__name__,
                        str(err).splitlines()[0][:300] if str(err) else "")
    elif cuda_graph:
        log.info("cuda_graph: not used (%s)", "raw batches are not pooled" if data.raw_batches is not None else
                 f"only {steps} steps" if steps < GRAPH_WARMUP_STEPS else f"device {w0.device.type}")

    stop = threading.Event()

    def run_slice(sl: slice) -> tuple[Tensor, Tensor, int]:
        m = mask[sl] if per_chain_mask else mask
        return _advance(chain_loss, w0, data, schedule, epsilon=epsilon, nbeta=nbeta, gamma=gamma,
                        noise_level=noise_level, steps=steps, seed=seed, mask=m, offsets=offsets[sl], stop=stop)

    parts = map_on_workers(run_slice, chain_slices(chains, workers), stop=stop)
    losses = torch.cat([p[0] for p in parts], dim=1)
    drift_norm = torch.cat([p[1] for p in parts], dim=1)
    steps_run = max(p[2] for p in parts)
    return ChainRun(losses.cpu(), drift_norm.cpu(), noise_norm, steps_run)


def _chain_state(w0: Tensor, seed: int, offsets: list[int], steps: int):
    """What a loop over ``len(offsets)`` chains starts from: the weights W: Float[c, d] (every row w0),
    each chain's noise generator, a noise buffer like W (zeros), and the loss and drift-norm records
    Float[steps, c] (NaN until written)."""
    W = w0.unsqueeze(0).repeat(len(offsets), 1)
    gens = chain_generators(seed, len(offsets), w0.device, offsets)
    losses = torch.full((steps, len(offsets)), float("nan"), dtype=W.dtype, device=w0.device)
    return W, gens, torch.zeros_like(W), losses, torch.full_like(losses, float("nan"))


def _advance(chain_loss: ChainLoss, w0: Tensor, data: SGLDData, schedule: Tensor | None, *, epsilon: float,
             nbeta: float, gamma: float, noise_level: float, steps: int, seed: int, mask: Tensor | None,
             offsets: list[int], stop: threading.Event | None = None) -> tuple[Tensor, Tensor, int]:
    """Advance ``len(offsets)`` chains; return (losses Float[steps, c], drift norms Float[steps, c], steps run).
    Returns early (with what it has) once ``stop`` is set: the caller is abandoning the run."""
    W, gens, noise, losses, drift_norm = _chain_state(w0, seed, offsets, steps)
    for t in range(steps):
        if stop is not None and stop.is_set():
            return losses, drift_norm, t
        batch = data.batch(None if schedule is None else schedule[t])
        loss, grad = chain_loss.loss_and_grad(W, batch)
        losses[t] = loss
        if noise_level:
            for c, g in enumerate(gens):
                torch.randn(W.shape[1], generator=g, out=noise[c])
        drift = sgld_step(W, grad, w0, noise, epsilon=epsilon, nbeta=nbeta, gamma=gamma,
                          noise_level=noise_level, mask=mask)
        drift_norm[t] = drift.norm(dim=1)
        if (t + 1) % NONFINITE_CHECK_EVERY == 0 and not bool(torch.isfinite(losses[t]).any()):
            return losses, drift_norm, t + 1
    return losses, drift_norm, steps


def _cuda_capture(body: Callable[[], None]) -> Callable[[], None]:
    """Record ``body`` as a CUDA graph after ``GRAPH_WARMUP_STEPS`` eager calls on a side stream
    (the caller resets what they changed); return the graph's replay."""
    import torch.cuda

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(GRAPH_WARMUP_STEPS):
            body()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        body()
    return graph.replay


def _advance_graphed(chain_loss: ChainLoss, w0: Tensor, data: SGLDData, schedule: Tensor | None, *,
                     epsilon: float, nbeta: float, gamma: float, noise_level: float, steps: int, seed: int,
                     mask: Tensor | None, offsets: list[int],
                     capture: Callable[[Callable[[], None]], Callable[[], None]]) -> tuple[Tensor, Tensor, int]:
    """:func:`_advance` with each step replayed from one recorded ``body``: every tensor the step
    reads or writes is allocated once (weights, noise, records, the step counter ``t``), the
    minibatch is gathered by ``t`` on the device and the step's loss and drift norm are written at
    row ``t``. Only the noise is drawn outside, eagerly, from each chain's generator."""
    device = w0.device
    W, gens, noise, losses, drift_norm = _chain_state(w0, seed, offsets, steps)
    t = torch.zeros(1, dtype=torch.long, device=device)

    def body() -> None:
        batch = data.batch(None if schedule is None else schedule.index_select(0, t).view(-1))
        loss, grad = chain_loss.loss_and_grad(W, batch)
        drift = sgld_step(W, grad, w0, noise, epsilon=epsilon, nbeta=nbeta, gamma=gamma,
                          noise_level=noise_level, mask=mask)
        losses.index_copy_(0, t, loss.view(1, -1).to(losses.dtype))
        drift_norm.index_copy_(0, t, drift.norm(dim=1).view(1, -1))
        t.add_(1)

    replay = capture(body)
    W.copy_(w0.expand_as(W))  # undo the warm-up steps
    t.zero_()
    losses.fill_(float("nan"))
    drift_norm.fill_(float("nan"))
    for step in range(steps):
        if noise_level:
            for c, g in enumerate(gens):
                torch.randn(W.shape[1], generator=g, out=noise[c])
        replay()
        if (step + 1) % NONFINITE_CHECK_EVERY == 0 and not bool(torch.isfinite(losses[step]).any()):
            return losses, drift_norm, step + 1
    return losses, drift_norm, steps
