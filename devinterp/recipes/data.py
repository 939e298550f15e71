"""Synthetic data of the induction recipe (REFERENCE.md §3, 'synthetic induction task').

Every sequence is uniform random tokens with ``n_spans`` copied spans: for each span in turn, a
length s in [span_min, span_max], a source start i uniform in [0, T-2s] and a destination start j
uniform in [i+s, T-s]; then x[j:j+s] = x[i:i+s]. Spans are written in turn and may overlap. Only
the positions j+1 .. j+s-1 are predictable (by induction); all others have loss ln V.
"""

from __future__ import annotations

import torch
from torch import Tensor

from devinterp.config import InductionDataConfig


def induction_batch(
    batch_size: int, n_ctx: int, d_vocab: int, data: InductionDataConfig, generator: torch.Generator
) -> Tensor:
    """A batch of induction-task sequences: Long[batch_size, n_ctx]. Deterministic given ``generator``."""
    x = torch.randint(0, d_vocab, (batch_size, n_ctx), generator=generator)
    lengths = torch.randint(data.span_min, data.span_max + 1, (batch_size, data.n_spans), generator=generator)
    u_src = torch.rand((batch_size, data.n_spans), generator=generator)
    u_dst = torch.rand((batch_size, data.n_spans), generator=generator)
    for b in range(batch_size):
        for k in range(data.n_spans):
            s = int(lengths[b, k])
            i = int(u_src[b, k] * (n_ctx - 2 * s + 1))  # uniform in [0, T-2s]
            j = i + s + int(u_dst[b, k] * (n_ctx - i - 2 * s + 1))  # uniform in [i+s, T-s]
            x[b, j : j + s] = x[b, i : i + s].clone()
    return x


def fixed_batches(
    n_sequences: int, batch_size: int, n_ctx: int, d_vocab: int, data: InductionDataConfig, seed: int
) -> list[Tensor]:
    """A fixed evaluation set, split into batches (the last may be smaller). Same seed -> same data."""
    gen = torch.Generator().manual_seed(seed)
    seqs = induction_batch(n_sequences, n_ctx, d_vocab, data, gen)
    return list(seqs.split(batch_size))
