"""Parameter masks of single attention heads, for the weight-restricted (per-head) LLC (REFERENCE.md §1.7).

For the attention-only transformer (:class:`~devinterp.models.attn_only.AttnOnlyTransformer`, and
the TransformerLens bridge's state-dict names) head h of layer l owns rows
``h*d_head:(h+1)*d_head`` of ``blocks.l.attn.{q,k,v}.weight`` ([n_heads*d_head, d_model]) and of
the matching biases, and columns ``h*d_head:(h+1)*d_head`` of ``blocks.l.attn.o.weight``
([d_model, n_heads*d_head]). ``o.bias`` is shared by all heads and is not part of any head.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn


def _shape(model: nn.Module, name: str) -> torch.Size:
    for n, p in model.named_parameters():
        if n.replace("._original_component", "") == name:
            return p.shape
    raise KeyError(f"the model has no parameter {name!r}; is it an attention-only transformer with state-dict names?")


def head_mask(model: nn.Module, layer: int, head: int) -> dict[str, Tensor]:
    """``{parameter name: bool mask}`` selecting head ``head`` of layer ``layer`` (W_Q, W_K, W_V, W_O, b_Q, b_K, b_V).

    Pass it as ``estimate_llc(..., param_mask=head_mask(model, l, h))``; every other parameter is frozen.
    Raises ``ValueError`` for a layer/head outside the model.
    """
    cfg = getattr(model, "cfg", None)
    n_layers = getattr(cfg, "n_layers", None)
    n_heads, d_head = getattr(cfg, "n_heads", None), getattr(cfg, "d_head", None)
    if n_heads is None or d_head is None or n_layers is None:
        raise ValueError(f"{type(model).__name__} has no cfg with n_layers, n_heads and d_head")
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} is outside 0..{n_layers - 1}")
    if not 0 <= head < n_heads:
        raise ValueError(f"head {head} is outside 0..{n_heads - 1}")
    rows = slice(head * d_head, (head + 1) * d_head)
    pre = f"blocks.{layer}.attn."
    masks: dict[str, Tensor] = {}
    for proj in ("q", "k", "v"):
        for kind in ("weight", "bias"):
            name = f"{pre}{proj}.{kind}"
            m = torch.zeros(_shape(model, name), dtype=torch.bool)
            m[rows] = True
            masks[name] = m
    name = f"{pre}o.weight"
    m = torch.zeros(_shape(model, name), dtype=torch.bool)
    m[:, rows] = True
    masks[name] = m
    return masks


def parse_head(label: str) -> tuple[int, int]:
    """``'L1H2'`` -> ``(1, 2)``. Raises ``ValueError`` for another form."""
    match = re.fullmatch(r"L(\d+)H(\d+)", label)
    if match is None:
        raise ValueError(f"head label {label!r} is not of the form 'L<layer>H<head>', e.g. 'L1H2'")
    return int(match.group(1)), int(match.group(2))


def head_masks(model: nn.Module, heads: list[tuple[int, int]] | None = None) -> dict[tuple[int, int], dict[str, Tensor]]:
    """``{(layer, head): head_mask(model, layer, head)}`` for ``heads`` (default: every head of every
    layer, layer-major), ready for :func:`~devinterp.llc.estimate_restricted_llcs`."""
    if heads is None:
        cfg = getattr(model, "cfg", None)
        if cfg is None:
            raise ValueError(f"{type(model).__name__} has no cfg with n_layers and n_heads")
        heads = [(layer, head) for layer in range(cfg.n_layers) for head in range(cfg.n_heads)]
    return {(layer, head): head_mask(model, layer, head) for layer, head in heads}
