"""Head scores on hand-built attention patterns whose scores are known exactly."""

import torch

from devinterp.metrics.heads import (
    chance_scores,
    duplicate_token_scores,
    induction_scores,
    previous_token_scores,
    repeated_random_tokens,
    unambiguous_repeat_mask,
)
from devinterp.metrics.icl import icl_score


def _pattern_from_targets(targets: torch.Tensor, n_pos: int) -> torch.Tensor:
    """One-hot attention [batch, 1 head, q, k] with query q attending to targets[b, q]."""
    return torch.nn.functional.one_hot(targets, n_pos).float()[:, None]


def test_previous_token_head_scores_one_and_uniform_head_scores_mean():
    n = 10
    q = torch.arange(n)
    prev = _pattern_from_targets((q - 1).clamp_min(0).expand(3, n), n)
    causal = torch.tril(torch.ones(n, n))
    uniform = (causal / causal.sum(-1, keepdim=True)).expand(3, 1, n, n)
    scores = previous_token_scores([torch.cat([prev, uniform], dim=1)])
    assert torch.allclose(scores[0, 0], torch.tensor(1.0))
    expected_uniform = torch.mean(1.0 / (q[1:] + 1).float())  # A[q, q-1] = 1/(q+1)
    assert torch.allclose(scores[0, 1], expected_uniform)


def test_induction_and_duplicate_heads_are_told_apart():
    tokens = repeated_random_tokens(4, 16, 1000, seed=0)  # large vocab: no chance repeats
    n, half = tokens.shape[1], 16
    q = torch.arange(n)
    ind_target = torch.where(q >= half, q - half + 1, q).expand(4, n)
    dup_target = torch.where(q >= half, q - half, q).expand(4, n)
    patterns = [torch.cat([_pattern_from_targets(ind_target, n), _pattern_from_targets(dup_target, n)], dim=1)]
    ind, dup = induction_scores(patterns, tokens), duplicate_token_scores(patterns, tokens)
    assert torch.allclose(ind[0], torch.tensor([1.0, 0.0]))
    assert torch.allclose(dup[0], torch.tensor([0.0, 1.0]))


def test_chance_scores_are_the_closed_form_of_uniform_causal_attention():
    """A[q, k] = 1/(q+1): previous-token chance is the mean of 1/(q+1) over q = 1..T-1, induction and
    duplicate chance the mean over the second copy q = L..2L-1 (each query has one target)."""
    for n_ctx in (64, 1024):
        half = n_ctx // 2
        c = chance_scores(n_ctx)
        assert abs(c["prev_token"] - sum(1 / (q + 1) for q in range(1, n_ctx)) / (n_ctx - 1)) < 1e-6
        second_copy = sum(1 / (q + 1) for q in range(half, 2 * half)) / half
        assert abs(c["induction"] - second_copy) < 1e-6 and abs(c["duplicate_token"] - second_copy) < 1e-6


def test_chance_repeats_are_masked():
    tokens = torch.tensor([[1, 2, 1, 3, 1, 2, 1, 3]])
    assert unambiguous_repeat_mask(tokens).tolist() == [[False, True, False, True]]


def test_icl_score_is_late_minus_early():
    losses = torch.ones(2, 8)
    losses[:, 6:] = 0.25
    assert icl_score(losses) == -0.75
