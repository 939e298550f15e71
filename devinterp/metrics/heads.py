"""Per-head attention scores (REFERENCE.md §3): previous-token, induction, duplicate-token.

All scores are mean attention probabilities read from TransformerLens patterns
``cache["pattern", layer]`` of shape [batch, head, query, key]; layer and head are 0-based.
"""

from __future__ import annotations

import torch
from torch import Tensor


def repeated_random_tokens(n_sequences: int, half: int, d_vocab: int, seed: int) -> Tensor:
    """[r_1..r_L, r_1..r_L] with r uniform random tokens: Long[n_sequences, 2*half]. No BOS token
    (the recipes train without one)."""
    gen = torch.Generator().manual_seed(seed)
    r = torch.randint(0, d_vocab, (n_sequences, half), generator=gen)
    return torch.cat([r, r], dim=1)


def unambiguous_repeat_mask(tokens: Tensor) -> Tensor:
    """Bool[batch, L] over second-copy queries q = L..2L-1: True where the current token occurs only
    once in the first copy, so 'the earlier occurrence' (q-L) is unique. With a small vocabulary many
    tokens repeat by chance; those queries are left out of the induction and duplicate scores."""
    half = tokens.shape[1] // 2
    first = tokens[:, :half]
    counts = (first.unsqueeze(2) == first.unsqueeze(1)).sum(-1)  # [batch, L]: occurrences of r_i in r
    return counts == 1


def previous_token_scores(patterns: list[Tensor]) -> Tensor:
    """S_prev[l, h] = mean over sequences and q in [1, T-1] of A[q, q-1].  patterns[l]: [b, h, q, k]."""
    return torch.stack([p.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, 2)) for p in patterns])


def _repeat_scores(patterns: list[Tensor], tokens: Tensor, key_offset: int) -> Tensor:
    half = tokens.shape[1] // 2
    mask = unambiguous_repeat_mask(tokens).to(patterns[0].dtype)  # [b, L]
    q = torch.arange(half, 2 * half)
    k = q - half + key_offset
    out = []
    for p in patterns:
        a = p[:, :, q, k]  # [b, h, L]: attention of query q to key k(q)
        out.append((a * mask[:, None, :]).sum(dim=(0, 2)) / mask.sum().clamp_min(1))
    return torch.stack(out)


def induction_scores(patterns: list[Tensor], tokens: Tensor) -> Tensor:
    """Prefix-matching score [layer, head]: attention from q in the second copy to q-L+1, the token
    after the earlier occurrence of the current token."""
    return _repeat_scores(patterns, tokens, key_offset=1)


def duplicate_token_scores(patterns: list[Tensor], tokens: Tensor) -> Tensor:
    """Duplicate-token score [layer, head]: attention from q in the second copy to q-L, the earlier
    occurrence of the same token."""
    return _repeat_scores(patterns, tokens, key_offset=0)


def chance_scores(n_ctx: int) -> dict[str, float]:
    """What each score gives for a head that attends uniformly to every key up to its query (no
    structure at all), for previous-token scores over ``n_ctx`` positions and induction and
    duplicate-token scores over repeated halves of ``n_ctx // 2``: the level a formed head must clear.
    Computed by the scoring functions themselves on uniform causal patterns (all first-copy tokens
    distinct, so every query is scored)."""
    def uniform(n: int) -> list[Tensor]:
        a = torch.ones(n, n).tril()
        return [(a / a.sum(-1, keepdim=True))[None, None]]  # [1, 1, q, k]

    half = n_ctx // 2
    tokens = torch.arange(half).repeat(1, 2)  # [1, 2*half], distinct within a copy
    return {"prev_token": float(previous_token_scores(uniform(n_ctx))),
            "induction": float(induction_scores(uniform(2 * half), tokens)),
            "duplicate_token": float(duplicate_token_scores(uniform(2 * half), tokens))}


@torch.no_grad()
def attention_patterns(bridge, tokens: Tensor) -> list[Tensor]:
    """Attention patterns of every layer of a TransformerLens bridge: list of [batch, head, q, k]."""
    _, cache = bridge.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_pattern"))
    return [cache["pattern", layer] for layer in range(bridge.cfg.n_layers)]
