"""In-context-learning score (REFERENCE.md §3.4, Olsson et al.'s 'late minus early token loss').

Our contexts are short (64 tokens), so single positions are too noisy: the score compares windows,
ICL = mean loss over the last quarter of predicted positions - mean loss over the first quarter.
Negative = later tokens are predicted better = the model uses its context.
"""

from __future__ import annotations

from torch import Tensor


def icl_score(token_losses: Tensor) -> float:
    """token_losses: Float[sequences, positions] per-token next-token losses (nats) -> score (nats)."""
    n_pos = token_losses.shape[1]
    quarter = max(1, n_pos // 4)
    early = token_losses[:, :quarter].mean()
    late = token_losses[:, n_pos - quarter :].mean()
    return float(late - early)
