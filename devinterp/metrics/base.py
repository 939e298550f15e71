"""What a metric group sees at one checkpoint, and the rows it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import Tensor, nn

from devinterp.config import AnyModelConfig, LLCSettings, SweepConfig
from devinterp.metrics.losses import heldout_losses, next_token_loss


@dataclass
class SweepData:
    """Data shared by every checkpoint of a sweep (common random numbers: same data everywhere).

    eval_batches: held-out batches for loss and ICL score (token models: Long[batch, pos]; the
                  regression family: tuples (xs, ys)).
    head_tokens:  repeated random sequences for the head scores, Long[n, 2L] (None where heads do not apply).
    llc_batches:  the SGLD data set, batches of the same kind.
    loss_fn:      ``loss_fn(model, batch) -> scalar`` of the model family (SGLD's loss).
    heldout_fn:   ``heldout_fn(model, eval_batches) -> Float[sequences, positions]`` per-position losses.
    """

    model: AnyModelConfig
    eval_batches: list[Any]
    head_tokens: Tensor | None
    llc_batches: list[Any]
    llc_settings: LLCSettings
    device: str = "cpu"
    sweep: SweepConfig | None = None  # the rest of the sweep's settings (head_llc heads, token-loss probes)
    loss_fn: Callable[[nn.Module, Any], Tensor] = next_token_loss
    heldout_fn: Callable[[nn.Module, list], Tensor] = heldout_losses


@dataclass
class CheckpointModels:
    """The models of one checkpoint: ``fast`` (hook-free, for losses and SGLD) and a lazily loaded
    TransformerLens ``bridge`` (for attention patterns), both holding the same weights."""

    state_dict: dict[str, Tensor]
    fast: nn.Module
    _bridge_factory: Any = None
    _bridge: Any = field(default=None, repr=False)
    _heldout: Tensor | None = field(default=None, repr=False)
    heldout_fn: Callable[[nn.Module, list], Tensor] = heldout_losses

    @property
    def bridge(self):
        if self._bridge is None:
            if self._bridge_factory is None:
                raise RuntimeError("this model family has no hooked reference model (attention-pattern metrics "
                                   "do not apply)")
            self._bridge = self._bridge_factory(self.state_dict)
        return self._bridge

    def heldout_losses(self, batches: list[Any]) -> Tensor:
        """Per-position held-out losses Float[sequences, positions] of ``fast`` (token models: next-token
        CE, Float[sequences, pos-1]; regression: squared errors, Float[sequences, K]), computed once per
        checkpoint (the loss, ICL and token-loss groups all read them; ``batches`` is the sweep's fixed
        evaluation set)."""
        if self._heldout is None:
            self._heldout = self.heldout_fn(self.fast, batches)
        return self._heldout


def row(metric: str, value: float, *, layer=None, head=None, chain=None, stderr=None, healthy=None, **extra) -> dict:
    """One metrics-table row without run/step/checkpoint (the sweep adds those)."""
    return {"metric": metric, "layer": layer, "head": head, "chain": chain, "value": float(value),
            "stderr": stderr, "healthy": healthy, **extra}
