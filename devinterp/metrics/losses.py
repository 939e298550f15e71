"""Next-token losses: the held-out loss and the per-position losses behind the ICL score."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def per_token_loss(model: nn.Module, tokens: Tensor) -> Tensor:
    """Cross-entropy (nats) of predicting token t+1 from tokens <= t.

    tokens: Long[batch, pos]  ->  Float[batch, pos-1]
    """
    logits = model(tokens)[:, :-1]
    return F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="none")


def next_token_loss(model: nn.Module, tokens: Tensor) -> Tensor:
    """Mean next-token cross-entropy of a batch (a scalar): the ``loss_fn`` contract of DESIGN.md."""
    logits = model(tokens)[:, :-1]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


@torch.no_grad()
def heldout_losses(model: nn.Module, batches: list[Tensor]) -> Tensor:
    """Per-token losses on a fixed evaluation set: Float[n_sequences, pos-1]."""
    return torch.cat([per_token_loss(model, b) for b in batches])
