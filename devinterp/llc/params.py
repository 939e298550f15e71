"""A model's parameters as one flat vector per chain, and masks over its coordinates.

SGLD updates all parameters of all chains with a few tensor ops on ``W: Float[chains, d]``
(no per-parameter Python loop). :class:`FlatParams` records where each named parameter lives in
that vector and turns a flat vector back into a ``{name: tensor}`` dict of *views* (so autograd
through the views gives the flat gradient directly).

Names are ``model.named_parameters()`` names with ``._original_component`` removed, i.e. the
state-dict names (REFERENCE.md §4: a TransformerLens bridge's parameter names contain it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


def _clean(name: str) -> str:
    return name.replace("._original_component", "")


@dataclass(frozen=True)
class FlatParams:
    """Layout of a model's trainable parameters in a flat vector.

    ``names`` are the clean (state-dict) names, ``module_names`` the names ``functional_call``
    needs, ``shapes``/``offsets`` the layout; ``d`` the total number of coordinates.
    """

    names: tuple[str, ...]
    module_names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    offsets: tuple[int, ...]
    d: int
    dtype: torch.dtype

    @classmethod
    def of(cls, model: nn.Module) -> "FlatParams":
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError(f"{type(model).__name__} has no trainable parameters to sample")
        dtypes = {p.dtype for _, p in named}
        if len(dtypes) != 1:
            raise ValueError(f"all parameters must share one dtype for SGLD, got {sorted(map(str, dtypes))}")
        offsets, off = [], 0
        for _, p in named:
            offsets.append(off)
            off += p.numel()
        return cls(
            names=tuple(_clean(n) for n, _ in named),
            module_names=tuple(n for n, _ in named),
            shapes=tuple(p.shape for _, p in named),
            offsets=tuple(offsets),
            d=off,
            dtype=named[0][1].dtype,
        )

    def flatten(self, model: nn.Module, device: torch.device | None = None) -> Tensor:
        """Current parameters as ``Float[d]`` (a detached copy)."""
        params = dict(model.named_parameters())
        flat = torch.cat([params[m].detach().reshape(-1) for m in self.module_names])
        return flat.to(device) if device is not None else flat

    def views(self, flat: Tensor, *, module_names: bool = False) -> dict[str, Tensor]:
        """``{name: view}`` of ``flat: [..., d]`` with each view shaped ``[..., *param_shape]``."""
        lead = flat.shape[:-1]
        keys = self.module_names if module_names else self.names
        return {
            k: flat[..., o : o + s.numel()].view(*lead, *s)
            for k, o, s in zip(keys, self.offsets, self.shapes)
        }

    def mask(self, param_mask: dict[str, Tensor | bool] | None, device: torch.device | None = None) -> Tensor | None:
        """Flat ``Float[d]`` of 1 (sampled) / 0 (frozen) from a ``{name: bool tensor | bool}`` dict.

        ``None`` means every coordinate is sampled. Parameters missing from the dict are frozen.
        A tensor mask must have the parameter's shape. Raises ``KeyError`` naming unknown names.
        """
        if param_mask is None:
            return None
        unknown = sorted(set(param_mask) - set(self.names))
        if unknown:
            raise KeyError(f"param_mask names {unknown} are not parameters of the model; allowed: {list(self.names)}")
        parts = []
        for name, shape in zip(self.names, self.shapes):
            m = param_mask.get(name, False)
            if isinstance(m, bool):
                parts.append(torch.full((shape.numel(),), float(m)))
            else:
                m = torch.as_tensor(m)
                if tuple(m.shape) != tuple(shape):
                    raise ValueError(f"param_mask[{name!r}] has shape {tuple(m.shape)}, the parameter has {tuple(shape)}")
                parts.append(m.reshape(-1).to(torch.float32).cpu())
        flat = torch.cat(parts).to(self.dtype)
        if flat.sum() == 0:
            raise ValueError("param_mask selects no coordinate: at least one must be sampled")
        return flat.to(device) if device is not None else flat
