"""Fused forward of :class:`~devinterp.models.attn_only.AttnOnlyTransformer` for all chains at once.

The chains' weights ``W: [C, d]`` are viewed as stacked parameters ``[C, *shape]`` and the model
is computed for the shared minibatch with batched matmuls (``baddbmm``), so one forward/backward
serves every chain and there is no per-chain Python loop, no hooks and no ``vmap`` dispatch.
It computes exactly ``next_token_loss(model, tokens)`` per chain (tests compare it with the
model's own forward), so it is used only when ``loss_fn`` is that function.

Attention: the fused kernel (``scaled_dot_product_attention``), except bfloat16 on a CPU, where
explicit scores with a causal mask are faster on CPUs with AVX512-BF16 (measured, see the module
docstring of :mod:`devinterp.llc.estimator`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from devinterp.llc.backends import ChainLoss, autocast_for
from devinterp.llc.params import FlatParams

LN_EPS = 1e-5


def fused_for(model: nn.Module, loss_fn: Any, flat: FlatParams, device: torch.device, compute_dtype: str,
              compile: bool = False) -> ChainLoss | None:
    """A :class:`FusedAttnOnlyLoss` when (model, loss_fn) is (AttnOnlyTransformer, next_token_loss), else None."""
    from devinterp.metrics.losses import next_token_loss
    from devinterp.models.attn_only import AttnOnlyTransformer

    if type(model) is AttnOnlyTransformer and loss_fn is next_token_loss and set(flat.names) == {
        n for n, _ in model.named_parameters()
    }:
        return FusedAttnOnlyLoss(model, loss_fn, flat, device, compute_dtype, compile=compile)
    return None


def _ln(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """LayerNorm with per-chain affine: x [C, ..., d], w/b [C, d]."""
    shape = (w.shape[0],) + (1,) * (x.dim() - 2) + (w.shape[-1],)
    return F.layer_norm(x, x.shape[-1:], eps=LN_EPS) * w.view(shape) + b.view(shape)


def chain_losses(P: dict[str, Tensor], tokens: Tensor, n_layers: int, n_heads: int, d_head: int, explicit: bool) -> Tensor:
    """Mean next-token cross-entropy per chain: P[name] = [C, *shape], tokens Long[B, T] -> Float[C]."""
    emb = P["embed.weight"]  # [C, V, d]
    C, V, d = emb.shape
    B, T = tokens.shape
    H, dh = n_heads, d_head
    # embedding of chain c = row (c*V + token) of the stacked tables
    idx = tokens.reshape(1, -1) + (torch.arange(C, device=tokens.device) * V).view(C, 1)
    x = F.embedding(idx, emb.reshape(C * V, d)).view(C, B, T, d) + P["pos_embed.weight"][:, :T].unsqueeze(1)
    if explicit:
        mask = torch.full((T, T), float("-inf"), device=tokens.device).triu(1)
    for layer in range(n_layers):
        pre = f"blocks.{layer}."
        h = _ln(x, P[pre + "ln1.weight"], P[pre + "ln1.bias"]).reshape(C, B * T, d)
        w_qkv = torch.cat([P[pre + "attn.q.weight"], P[pre + "attn.k.weight"], P[pre + "attn.v.weight"]], 1)
        b_qkv = torch.cat([P[pre + "attn.q.bias"], P[pre + "attn.k.bias"], P[pre + "attn.v.bias"]], 1)
        qkv = torch.baddbmm(b_qkv.unsqueeze(1), h, w_qkv.transpose(1, 2))  # [C, B*T, 3*H*dh]
        q, k, v = qkv.view(C, B, T, 3, H, dh).permute(3, 0, 1, 4, 2, 5).reshape(3, C * B, H, T, dh).unbind(0)
        if explicit:
            s = torch.matmul(q * (1.0 / math.sqrt(dh)), k.transpose(-1, -2))
            s = s + mask.to(s.dtype)
            z = torch.matmul(torch.softmax(s, -1).to(v.dtype), v)
        else:
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / math.sqrt(dh))
        z = z.view(C, B, H, T, dh).permute(0, 1, 3, 2, 4).reshape(C, B * T, H * dh)
        out = torch.baddbmm(P[pre + "attn.o.bias"].unsqueeze(1), z, P[pre + "attn.o.weight"].transpose(1, 2))
        x = x + out.view(C, B, T, d)
    h = _ln(x, P["ln_final.weight"], P["ln_final.bias"]).reshape(C, B * T, d)
    logits = torch.baddbmm(P["unembed.bias"].unsqueeze(1), h, P["unembed.weight"].transpose(1, 2))
    logits = logits.view(C, B, T, -1)[:, :, :-1].float()
    target = tokens[:, 1:].reshape(1, -1).expand(C, -1).reshape(-1)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target, reduction="none")
    return ce.view(C, -1).mean(1)


class FusedAttnOnlyLoss(ChainLoss):
    name = "fused"

    def __init__(self, *args, compile: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self._forward = torch.compile(chain_losses, dynamic=False) if compile else chain_losses
        cfg = self.model.cfg
        self._dims = (cfg.n_layers, cfg.n_heads, cfg.d_head)
        # explicit attention scores only for bf16 on CPU (faster there); on CUDA the fused kernel
        # (flash attention in bf16) never materialises the [T, T] scores.
        self._explicit = self.compute_dtype != "float32" and torch.device(self.device).type == "cpu"

    def _losses(self, W: Tensor, tokens: Tensor) -> Tensor:
        if not isinstance(tokens, Tensor) or tokens.dim() != 2:
            raise ValueError(f"the fused AttnOnlyTransformer loss needs token batches Long[batch, pos], got {type(tokens).__name__}")
        with autocast_for(self.device, self.compute_dtype):
            return self._forward(self.flat.views(W), tokens, *self._dims, explicit=self._explicit).to(W.dtype)

    def loss_and_grad(self, W: Tensor, batch: Any) -> tuple[Tensor, Tensor]:
        W = W.detach().requires_grad_(True)
        losses = self._losses(W, batch)
        (g,) = torch.autograd.grad(losses.sum(), W)
        return losses.detach(), g

    @torch.no_grad()
    def loss(self, W: Tensor, batch: Any) -> Tensor:
        return self._losses(W, batch)
