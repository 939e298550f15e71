"""The SGLD data: the samples behind n, and the minibatch schedule shared by every call.

``data`` is any re-iterable of batches (a list of tensors, a ``DataLoader``, a list of
``(x, y)`` tuples or of dicts). It is read **once** and pooled into one set of samples; SGLD
minibatches of ``settings.batch_size`` are then drawn from the pool in an order fixed by the seed
alone (common random numbers): every call with the same seed, at any checkpoint, sees the same
minibatch at every step, whatever the weights. A shuffling ``DataLoader`` is therefore harmless.

A batch is a pytree (tensor, tuple/list, dict) whose tensor leaves share their leading dimension
(the samples). Batches that are not such pytrees (e.g. ``None`` for an analytic potential whose
``loss_fn`` ignores the batch) are used as given, cycled in a seeded order; then ``n`` must be
passed (or ``settings.nbeta`` set).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_unflatten

# Offsets that make the batch-order and init-loss streams distinct from the chains' noise streams.
BATCH_STREAM = 1_000_003
INIT_STREAM = 2_000_029


def _leading(leaves: list[Any]) -> int | None:
    if not leaves or not all(isinstance(x, Tensor) and x.dim() >= 1 for x in leaves):
        return None
    sizes = {x.shape[0] for x in leaves}
    return sizes.pop() if len(sizes) == 1 else None


@dataclass
class SGLDData:
    """Pooled samples (``pooled``, a pytree of tensors with leading dim ``n_pooled``) or raw batches.

    ``n`` is the number of samples behind nβ and ``n_source`` says where it came from.
    """

    pooled: Any | None
    n_pooled: int
    raw_batches: list[Any] | None
    n: int | None
    n_source: str

    @classmethod
    def from_data(cls, data: Iterable[Any], n: int | None = None, device: torch.device | str | None = None) -> "SGLDData":
        if isinstance(data, Tensor):
            raise TypeError(
                "data must be a re-iterable of batches (a list of tensors, a DataLoader, ...), not one tensor; "
                "wrap it: [tensor] for one batch"
            )
        batches = list(data)
        if not batches:
            raise ValueError("data yielded no batches")
        flat = [tree_flatten(b) for b in batches]
        specs = {str(spec) for _, spec in flat}
        sizes = [_leading(leaves) for leaves, _ in flat]
        if len(specs) == 1 and all(s is not None for s in sizes):
            leaves0, spec = flat[0]
            cat = [torch.cat([leaves[i] for leaves, _ in flat]).to(device) for i in range(len(leaves0))]
            pooled = tree_unflatten(cat, spec)
            n_pooled = sum(sizes)
            if n is not None:
                src = "given"
            elif hasattr(data, "dataset") and hasattr(data.dataset, "__len__"):
                n, src = len(data.dataset), "len(data.dataset)"
            else:
                n, src = n_pooled, "samples in data"
            return cls(pooled, n_pooled, None, n, src)
        moved = [tree_unflatten([x.to(device) if isinstance(x, Tensor) else x for x in leaves], spec) for leaves, spec in flat]
        return cls(None, len(batches), moved, n, "given" if n is not None else "unknown")

    def schedule(self, steps: int, batch_size: int, seed: int) -> Tensor | None:
        """Sample (or raw-batch) indices for each SGLD step: ``Long[steps, batch_size]`` (pooled),
        ``Long[steps]`` (raw batches), or ``None`` when one full batch serves every step.

        Epoch by epoch, a seeded permutation is cut into consecutive minibatches (a minibatch may
        straddle two epochs), so each sample is used equally often. Depends only on ``seed``.
        """
        g = torch.Generator().manual_seed(seed + BATCH_STREAM)
        if self.raw_batches is not None:
            per = math.ceil(steps / self.n_pooled)
            return torch.cat([torch.randperm(self.n_pooled, generator=g) for _ in range(per)])[:steps]
        if batch_size >= self.n_pooled:
            return None
        need = steps * batch_size
        per = math.ceil(need / self.n_pooled)
        idx = torch.cat([torch.randperm(self.n_pooled, generator=g) for _ in range(per)])[:need]
        return idx.view(steps, batch_size)

    def batch(self, index: Tensor | int | None) -> Any:
        """The minibatch for one row of :meth:`schedule` (``None`` = the whole pool)."""
        if self.raw_batches is not None:
            return self.raw_batches[int(index)]
        if index is None:
            return self.pooled
        leaves, spec = tree_flatten(self.pooled)
        return tree_unflatten([x[index.to(x.device)] for x in leaves], spec)

    def init_batches(self, k: int | None, batch_size: int, seed: int) -> tuple[list[Any], list[int], float]:
        """Batches for L_n(w*): up to ``k`` disjoint minibatches from a seeded permutation (``k`` None:
        enough to cover the whole pool).

        Returns (batches, their sizes, finite-population factor). When ``k * batch_size`` covers the
        pool, the batches are exactly the pool (so the init loss is L_n(w*) itself, factor 0).
        """
        if k is None:
            k = self.n_pooled if self.raw_batches is not None else -(-self.n_pooled // batch_size)
        if self.raw_batches is not None:
            k = min(k, self.n_pooled)
            return self.raw_batches[:k], [1] * k, 1.0 - k / self.n_pooled
        g = torch.Generator().manual_seed(seed + INIT_STREAM)
        perm = torch.randperm(self.n_pooled, generator=g)
        chunks = list(perm[: k * batch_size].split(batch_size))
        used = sum(len(c) for c in chunks)
        return [self.batch(c) for c in chunks], [len(c) for c in chunks], 1.0 - used / self.n_pooled
