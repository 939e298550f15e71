"""Model families: how the sweep builds the models of a checkpoint from its config and state dict.

A family is named by its config class (:data:`devinterp.config.MODEL_FAMILIES`; the name is what a
checkpoint's ``model_family`` metadata records). Each gives

* ``build_fast(cfg, state_dict)``: the hook-free model that losses and SGLD run (fused attention);
* ``build_reference(cfg, device)``: a factory ``state_dict -> model`` of the reference implementation
  with hooks, for reading attention patterns (TransformerLens; None where the family has none);
* ``loss_fn(model, batch)`` and ``heldout_fn(model, batches)``: the mean loss of a batch (the
  ``loss_fn`` contract of DESIGN.md) and the per-position losses ``Float[sequences, positions]`` of a
  fixed evaluation set, from which the ``loss`` group takes its mean and standard error.

What data a family is measured on is the recipe's business (:mod:`devinterp.recipes.registry`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import Tensor, nn

from devinterp.config import ICLModelConfig, ModelConfig, model_family


@dataclass(frozen=True)
class ModelFamily:
    name: str
    config_cls: type
    build_fast: Callable[[Any, dict[str, Tensor]], nn.Module]
    loss_fn: Callable[[nn.Module, Any], Tensor]
    heldout_fn: Callable[[nn.Module, list], Tensor]
    build_reference: Callable[[Any, str], Callable[[dict[str, Tensor]], nn.Module]] | None = None


def _attn_only_fast(cfg: ModelConfig, state_dict: dict[str, Tensor]) -> nn.Module:
    from devinterp.models.attn_only import AttnOnlyTransformer

    return AttnOnlyTransformer.from_state_dict(cfg, state_dict)


def _attn_only_reference(cfg: ModelConfig, device: str) -> Callable[[dict[str, Tensor]], nn.Module]:
    """One TransformerLens bridge, reloaded for each state dict (never deep-copied, REFERENCE.md §4)."""
    bridge = None

    def load(state_dict: dict[str, Tensor]) -> nn.Module:
        nonlocal bridge
        if bridge is None:
            from devinterp.models.attn_only import build_bridge

            bridge = build_bridge(cfg, device=device)
        bridge.load_state_dict(state_dict)
        return bridge

    return load


def _icl_fast(cfg: ICLModelConfig, state_dict: dict[str, Tensor]) -> nn.Module:
    from devinterp.models.icl_transformer import ICLTransformer

    return ICLTransformer.from_state_dict(cfg, state_dict)


def _families() -> dict[str, ModelFamily]:
    from devinterp.metrics.losses import heldout_losses, next_token_loss
    from devinterp.models.icl_transformer import heldout_regression_losses, regression_loss

    return {
        "attn-only": ModelFamily("attn-only", ModelConfig, _attn_only_fast, next_token_loss, heldout_losses,
                                 _attn_only_reference),
        "icl-transformer": ModelFamily("icl-transformer", ICLModelConfig, _icl_fast, regression_loss,
                                       heldout_regression_losses),
    }


def family(cfg_or_name: Any) -> ModelFamily:
    """The family of a model config (or of a family name)."""
    name = cfg_or_name if isinstance(cfg_or_name, str) else model_family(cfg_or_name)
    families = _families()
    if name not in families:
        raise KeyError(f"unknown model family {name!r}; known: {', '.join(families)}")
    return families[name]


__all__ = ["ModelFamily", "family"]
