"""What a metric group sees at one checkpoint, and the rows it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from devinterp.config import LLCSettings, ModelConfig, SweepConfig


@dataclass
class SweepData:
    """Data shared by every checkpoint of a sweep (common random numbers: same data everywhere).

    eval_batches: held-out sequences for loss and ICL score, list of Long[batch, pos].
    head_tokens:  repeated random sequences for the head scores, Long[n, 2L].
    llc_batches:  the SGLD data set, list of Long[batch, pos].
    """

    model: ModelConfig
    eval_batches: list[Tensor]
    head_tokens: Tensor
    llc_batches: list[Tensor]
    llc_settings: LLCSettings
    device: str = "cpu"
    sweep: SweepConfig | None = None  # the rest of the sweep's settings (head_llc heads, token-loss probes)


@dataclass
class CheckpointModels:
    """The models of one checkpoint: ``fast`` (hook-free, for losses and SGLD) and a lazily loaded
    TransformerLens ``bridge`` (for attention patterns), both holding the same weights."""

    state_dict: dict[str, Tensor]
    fast: nn.Module
    _bridge_factory: Any = None
    _bridge: Any = field(default=None, repr=False)
    _heldout: Tensor | None = field(default=None, repr=False)

    @property
    def bridge(self):
        if self._bridge is None:
            self._bridge = self._bridge_factory(self.state_dict)
        return self._bridge

    def heldout_losses(self, batches: list[Tensor]) -> Tensor:
        """Per-token held-out losses Float[sequences, pos-1] of ``fast``, computed once per checkpoint
        (the loss and ICL groups both read them; ``batches`` is the sweep's fixed evaluation set)."""
        if self._heldout is None:
            from devinterp.metrics.losses import heldout_losses

            self._heldout = heldout_losses(self.fast, batches)
        return self._heldout


def row(metric: str, value: float, *, layer=None, head=None, chain=None, stderr=None, healthy=None, **extra) -> dict:
    """One metrics-table row without run/step/checkpoint (the sweep adds those)."""
    return {"metric": metric, "layer": layer, "head": head, "chain": chain, "value": float(value),
            "stderr": stderr, "healthy": healthy, **extra}
