"""The metric groups a sweep can measure, by name. Each returns a list of metrics-table rows."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from devinterp.config import SweepConfig
from devinterp.metrics.base import CheckpointModels, SweepData, row
from devinterp.metrics.heads import (
    attention_patterns,
    duplicate_token_scores,
    induction_scores,
    previous_token_scores,
)
from devinterp.metrics.icl import icl_score


@torch.no_grad()
def measure_loss(models: CheckpointModels, data: SweepData) -> list[dict]:
    """Held-out mean next-token loss (nats), with the standard error across sequences."""
    per_seq = models.heldout_losses(data.eval_batches).mean(dim=1)
    stderr = float(per_seq.std() / len(per_seq) ** 0.5) if len(per_seq) > 1 else None
    return [row("loss", per_seq.mean(), stderr=stderr)]


@torch.no_grad()
def measure_icl(models: CheckpointModels, data: SweepData) -> list[dict]:
    """ICL score: late-window minus early-window held-out loss (nats; negative = in-context learning)."""
    return [row("icl_score", icl_score(models.heldout_losses(data.eval_batches)))]


@torch.no_grad()
def measure_heads(models: CheckpointModels, data: SweepData) -> list[dict]:
    """prev_token (on held-out task data), induction and duplicate_token (on repeated random tokens)
    for every (layer, head)."""
    eval_tokens = torch.cat(data.eval_batches)[: len(data.head_tokens)].to(data.device)
    prev = previous_token_scores(attention_patterns(models.bridge, eval_tokens))
    rep_tokens = data.head_tokens.to(data.device)
    rep_patterns = attention_patterns(models.bridge, rep_tokens)
    scores = {
        "prev_token": prev,
        "induction": induction_scores(rep_patterns, rep_tokens),
        "duplicate_token": duplicate_token_scores(rep_patterns, rep_tokens),
    }
    rows = []
    for name, table in scores.items():
        for layer in range(table.shape[0]):
            for head in range(table.shape[1]):
                rows.append(row(name, table[layer, head], layer=layer, head=head))
    return rows


def measure_llc(models: CheckpointModels, data: SweepData) -> list[dict]:
    """LLC by SGLD with the sweep's frozen settings: one aggregate row (stderr: across chains and of
    L_n(w*), ``LLCResult.total_stderr``; health) and one row per chain."""
    from devinterp.llc import estimate_llc

    result = estimate_llc(models.fast, data.llc_batches, data.loss_fn, settings=data.llc_settings)
    reason = "; ".join(result.reasons)
    rows = [row("llc", result.llc, stderr=result.total_stderr, healthy=bool(result.healthy), reason=reason,
                init_loss=result.init_loss, nbeta=result.nbeta)]
    for chain, value in enumerate(result.chain_llcs):
        rows.append(row("llc", value, chain=chain, healthy=bool(result.healthy), reason=reason,
                        init_loss=result.init_loss, nbeta=result.nbeta))
    return rows


def measure_head_llc(models: CheckpointModels, data: SweepData) -> list[dict]:
    """Weight-restricted LLC of each attention head (REFERENCE.md §1.7: SGLD over that head's W_Q, W_K,
    W_V, W_O rows/columns and biases, all else frozen), every head's chains in one batched run with
    the sweep's frozen settings: per head one aggregate row (total stderr, health) and one
    row per chain. Heads: ``sweep.head_llc_heads`` (default all)."""
    from devinterp.llc import estimate_restricted_llcs, head_masks, parse_head

    labels = data.sweep.head_llc_heads if data.sweep is not None else None
    heads = None if labels is None else [parse_head(label) for label in labels]
    results = estimate_restricted_llcs(models.fast, data.llc_batches, data.loss_fn, head_masks(models.fast, heads),
                                       settings=data.llc_settings)
    rows = []
    for (layer, head), result in results.items():
        reason = "; ".join(result.reasons)
        common = dict(layer=layer, head=head, healthy=bool(result.healthy), reason=reason,
                      init_loss=result.init_loss, nbeta=result.nbeta)
        rows.append(row("head_llc", result.llc, stderr=result.total_stderr, **common))
        rows.extend(row("head_llc", value, chain=chain, **common) for chain, value in enumerate(result.chain_llcs))
    return rows


TOKEN_PROBE_SEED = 20240501  # fixed: the probe positions must be the same in every process and checkpoint


def token_probe_positions(n_sequences: int, n_positions: int, n_probes: int) -> tuple[Tensor, Tensor]:
    """A fixed random sample of ``n_probes`` distinct (sequence, position) cells of the held-out
    per-token loss matrix Float[n_sequences, n_positions]; returns (sequence index, position index)."""
    total = n_sequences * n_positions
    flat = torch.randperm(total, generator=torch.Generator().manual_seed(TOKEN_PROBE_SEED))[: min(n_probes, total)]
    flat = flat.sort().values
    return flat // n_positions, flat % n_positions


@torch.no_grad()
def measure_token_loss(models: CheckpointModels, data: SweepData) -> list[dict]:
    """Per-token held-out losses (nats) on a fixed probe sample (``sweep.token_loss_probes`` cells of
    the held-out set), the input of essential dynamics (REFERENCE.md §2.3): one row per probe with
    metric ``token_loss`` and an extra integer column ``token`` (the probe's index)."""
    losses = models.heldout_losses(data.eval_batches)
    n_probes = (data.sweep or SweepConfig()).token_loss_probes  # the default lives in config.py
    seq, pos = token_probe_positions(losses.shape[0], losses.shape[1], n_probes)
    values = losses[seq, pos].tolist()
    return [row("token_loss", v, token=i) for i, v in enumerate(values)]


@torch.no_grad()
def measure_position_loss(models: CheckpointModels, data: SweepData) -> list[dict]:
    """Held-out loss at each context position (icl-regression: the squared error of predicting y_k
    after k-1 examples), with its standard error across sequences: one row per position, metric
    ``position_loss`` and an extra integer column ``position`` (0-based: examples seen before it)."""
    losses = models.heldout_losses(data.eval_batches)
    n = losses.shape[0]
    means, sds = losses.mean(dim=0), losses.std(dim=0)
    return [row("position_loss", means[k], stderr=float(sds[k] / n ** 0.5) if n > 1 else None, position=k)
            for k in range(losses.shape[1])]


GROUPS: dict[str, Callable[[CheckpointModels, SweepData], list[dict]]] = {
    "loss": measure_loss,
    "icl_score": measure_icl,
    "heads": measure_heads,
    "llc": measure_llc,
    "head_llc": measure_head_llc,
    "token_loss": measure_token_loss,
    "position_loss": measure_position_loss,
}
