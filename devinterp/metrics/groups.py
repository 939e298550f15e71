"""The metric groups a sweep can measure, by name. Each returns a list of metrics-table rows."""

from __future__ import annotations

from typing import Callable

import torch

from devinterp.metrics.base import CheckpointModels, SweepData, row
from devinterp.metrics.heads import (
    attention_patterns,
    duplicate_token_scores,
    induction_scores,
    previous_token_scores,
)
from devinterp.metrics.icl import icl_score
from devinterp.metrics.losses import next_token_loss


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
    """LLC by SGLD with the sweep's frozen settings: one aggregate row (stderr across chains, health)
    and one row per chain."""
    from devinterp.llc import estimate_llc

    result = estimate_llc(models.fast, data.llc_batches, next_token_loss, settings=data.llc_settings)
    reason = "; ".join(result.reasons)
    rows = [row("llc", result.llc, stderr=result.stderr, healthy=bool(result.healthy), reason=reason,
                init_loss=result.init_loss, nbeta=result.nbeta)]
    for chain, value in enumerate(result.chain_llcs):
        rows.append(row("llc", value, chain=chain, healthy=bool(result.healthy), reason=reason,
                        init_loss=result.init_loss, nbeta=result.nbeta))
    return rows


GROUPS: dict[str, Callable[[CheckpointModels, SweepData], list[dict]]] = {
    "loss": measure_loss,
    "icl_score": measure_icl,
    "heads": measure_heads,
    "llc": measure_llc,
}
