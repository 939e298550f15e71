"""Loss and gradient of every chain at once: ``W: Float[chains, d] -> (Float[chains], Float[chains, d])``.

Three interchangeable backends compute the same numbers (tests check they agree):

* ``fused`` — a hand-batched forward for a known (model, loss) pair, the chains stacked as one
  larger batch of matmuls (see :mod:`devinterp.llc.fused_attn_only`). Fastest where it applies.
* ``vmap`` — ``torch.func.vmap(grad_and_value(functional_call(...)))`` over the chain axis: works
  for any model whose forward torch.func can batch (no data-dependent control flow, no in-place
  updates of buffers, no dropout randomness).
* ``sequential`` — one ``functional_call`` + ``autograd.grad`` per chain: works for anything.

None of them copies the model: parameters are swapped in for the call by ``functional_call``
(never ``copy.deepcopy``; REFERENCE.md §4). The model's train/eval mode is used as given.
With ``compute_dtype="bfloat16"`` the forward and backward run under autocast; the flat weights
``W`` and the returned gradients stay in the weights' dtype.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from devinterp.llc.params import FlatParams

LossFn = Callable[[nn.Module, Any], Tensor]
BACKENDS = ("fused", "vmap", "sequential")


class _LossModule(nn.Module):
    """``forward(batch) = loss_fn(model, batch)``, so ``functional_call`` can swap the model's parameters."""

    def __init__(self, model: nn.Module, loss_fn: LossFn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> Tensor:
        return self.loss_fn(self.model, batch)


def autocast_for(device: torch.device, compute_dtype: str):
    """Autocast context for ``compute_dtype`` ('float32' = no autocast)."""
    if compute_dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


class ChainLoss:
    """Base: ``loss_and_grad(W, batch)`` and ``loss(W, batch)`` for ``W: [chains, d]``."""

    name = "base"
    # True when loss_and_grad is a pure function of (W, batch), so slices of chains may run on
    # threads at once (devinterp.llc.chain_threads); functional_call-based backends are not.
    thread_safe = False

    def __init__(self, model: nn.Module, loss_fn: LossFn, flat: FlatParams, device: torch.device, compute_dtype: str):
        self.model, self.loss_fn, self.flat = model, loss_fn, flat
        self.device, self.compute_dtype = device, compute_dtype
        self.wrapper = _LossModule(model, loss_fn)

    def _params(self, w: Tensor) -> dict[str, Tensor]:
        return {"model." + k: v for k, v in self.flat.views(w, module_names=True).items()}

    def _call(self, w: Tensor, batch: Any) -> Tensor:
        with autocast_for(self.device, self.compute_dtype):
            out = functional_call(self.wrapper, self._params(w), (batch,))
        if out.dim() != 0:
            raise ValueError(f"loss_fn must return a scalar mean loss, got a tensor of shape {tuple(out.shape)}")
        return out.to(w.dtype)

    def loss_and_grad(self, W: Tensor, batch: Any) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def loss(self, W: Tensor, batch: Any) -> Tensor:
        return torch.stack([self._call(W[c], batch) for c in range(W.shape[0])])


class SequentialLoss(ChainLoss):
    name = "sequential"

    def loss_and_grad(self, W: Tensor, batch: Any) -> tuple[Tensor, Tensor]:
        losses, grads = [], []
        for c in range(W.shape[0]):
            w = W[c].detach().requires_grad_(True)
            loss = self._call(w, batch)
            (g,) = torch.autograd.grad(loss, w, allow_unused=True)
            losses.append(loss.detach())
            grads.append(torch.zeros_like(w) if g is None else g)
        return torch.stack(losses), torch.stack(grads)


class VmapLoss(ChainLoss):
    name = "vmap"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        gv = grad_and_value(lambda w, batch: self._call(w, batch))
        self._gv = vmap(gv, in_dims=(0, None))
        self._v = vmap(lambda w, batch: self._call(w, batch), in_dims=(0, None))

    def loss_and_grad(self, W: Tensor, batch: Any) -> tuple[Tensor, Tensor]:
        g, loss = self._gv(W.detach(), batch)
        return loss.detach(), g

    @torch.no_grad()
    def loss(self, W: Tensor, batch: Any) -> Tensor:
        return self._v(W, batch)


def make_chain_loss(
    model: nn.Module, loss_fn: LossFn, flat: FlatParams, device: torch.device, compute_dtype: str,
    backend: str, probe: tuple[Tensor, Any] | None = None, compile: bool = False,
) -> tuple[ChainLoss, str]:
    """The backend to use and a note on how it was chosen.

    ``backend="auto"``: ``fused`` where a fused forward exists for (model, loss_fn), else ``vmap``
    if a probe call ``(W, batch)`` succeeds, else ``sequential``. A named backend is used as asked
    (``fused`` raises ``ValueError`` when no fused forward fits the model).
    """
    from devinterp.llc.fused_attn_only import fused_for

    args = (model, loss_fn, flat, device, compute_dtype)
    if backend in ("auto", "fused"):
        fused = fused_for(*args, compile=compile)
        if fused is not None:
            return fused, "fused"
        if backend == "fused":
            raise ValueError(
                f"backend='fused' has no fused forward for {type(model).__name__} with loss_fn "
                f"{getattr(loss_fn, '__name__', loss_fn)!r}; use backend 'vmap', 'sequential' or 'auto'"
            )
    if backend == "sequential":
        return SequentialLoss(*args), "sequential"
    vm = VmapLoss(*args)
    if backend == "vmap":
        return vm, "vmap"
    if backend != "auto":
        raise ValueError(f"unknown backend {backend!r}; allowed: 'auto', {', '.join(map(repr, BACKENDS))}")
    if probe is not None:
        try:
            vm.loss_and_grad(*probe)
        except Exception as err:  # noqa: BLE001 - any failure of vmap means: use the loop
            return SequentialLoss(*args), f"sequential (vmap failed: {type(err).__name__}: {str(err)[:120]})"
    return vm, "vmap"
