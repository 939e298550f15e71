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
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import torch
from torch import Tensor

from devinterp.llc.backends import ChainLoss
from devinterp.llc.chain_threads import chain_slices, map_on_workers, worker_count
from devinterp.llc.data import SGLDData

NONFINITE_CHECK_EVERY = 25  # steps between checks that stop early once every chain is NaN/inf


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


def chain_generators(seed: int, chains: int, device: torch.device, offsets: list[int] | None = None
                     ) -> list[torch.Generator]:
    """One noise generator per chain, chain c seeded with ``seed + offsets[c]`` (default offsets[c] = c)."""
    offsets = list(range(chains)) if offsets is None else offsets
    return [torch.Generator(device=device).manual_seed(seed + o) for o in offsets]


def run_chains(
    chain_loss: ChainLoss, w0: Tensor, data: SGLDData, *, epsilon: float, nbeta: float, gamma: float,
    noise_level: float, chains: int, steps: int, batch_size: int, seed: int, mask: Tensor | None = None,
    seed_offsets: list[int] | None = None, workers: int | None = None,
) -> ChainRun:
    """Run ``chains`` SGLD chains from ``w0: Float[d]`` for ``steps`` steps; record every step's loss.

    ``mask``: Float[d] or Float[chains, d] (see :func:`sgld_step`). ``seed_offsets[c]``: chain c's
    noise seed is ``seed + seed_offsets[c]`` (default c), so groups of chains with different masks
    can share their noise streams. ``workers``: how many slices of chains run at once on CPU
    threads (:mod:`devinterp.llc.chain_threads`); default: ``min(chains, torch threads)`` on a CPU
    when the backend is thread-safe, else 1. Chains are independent given the shared minibatch
    schedule, so the split does not change what any chain computes.
    """
    offsets = list(range(chains)) if seed_offsets is None else list(seed_offsets)
    if len(offsets) != chains:
        raise ValueError(f"seed_offsets has {len(offsets)} entries for {chains} chains")
    if workers is None:
        workers = worker_count(chains, w0.device) if chain_loss.thread_safe else 1
    schedule = data.schedule(steps, batch_size, seed)
    per_chain_mask = mask is not None and mask.dim() == 2

    stop = threading.Event()

    def run_slice(sl: slice) -> tuple[Tensor, Tensor, int]:
        m = mask[sl] if per_chain_mask else mask
        return _advance(chain_loss, w0, data, schedule, epsilon=epsilon, nbeta=nbeta, gamma=gamma,
                        noise_level=noise_level, steps=steps, seed=seed, mask=m, offsets=offsets[sl], stop=stop)

    parts = map_on_workers(run_slice, chain_slices(chains, workers), stop=stop)
    losses = torch.cat([p[0] for p in parts], dim=1)
    drift_norm = torch.cat([p[1] for p in parts], dim=1)
    steps_run = max(p[2] for p in parts)
    d_eff = float(mask.sum(dim=-1).float().mean()) if mask is not None else w0.shape[0]
    return ChainRun(losses.cpu(), drift_norm.cpu(), math.sqrt(epsilon) * noise_level * math.sqrt(d_eff), steps_run)


def _advance(chain_loss: ChainLoss, w0: Tensor, data: SGLDData, schedule: Tensor | None, *, epsilon: float,
             nbeta: float, gamma: float, noise_level: float, steps: int, seed: int, mask: Tensor | None,
             offsets: list[int], stop: threading.Event | None = None) -> tuple[Tensor, Tensor, int]:
    """Advance ``len(offsets)`` chains; return (losses Float[steps, c], drift norms Float[steps, c], steps run).
    Returns early (with what it has) once ``stop`` is set: the caller is abandoning the run."""
    device = w0.device
    W = w0.unsqueeze(0).repeat(len(offsets), 1)
    gens = chain_generators(seed, len(offsets), device, offsets)
    noise = torch.empty_like(W)
    losses = torch.full((steps, len(offsets)), float("nan"), dtype=W.dtype, device=device)
    drift_norm = torch.full((steps, len(offsets)), float("nan"), dtype=W.dtype, device=device)
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
