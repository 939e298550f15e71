"""Fused forward of :class:`~devinterp.models.attn_only.AttnOnlyTransformer` for all chains at once.

The chains' weights ``W: [C, d]`` are viewed as stacked parameters ``[C, *shape]`` and the model
is computed for the shared minibatch with batched matmuls (``baddbmm``), so one forward/backward
serves every chain and there is no per-chain Python loop, no hooks and no ``vmap`` dispatch.
It computes exactly ``next_token_loss(model, tokens)`` per chain (tests compare it with the
model's own forward), so it is used only when ``loss_fn`` is that function.

Precision: with ``compute_dtype="bfloat16"`` the weights are cast once per step (embedding tables
excepted: their gather and scatter-add gradient stay in float32) and every op runs in bf16, the
cross-entropy in float32. This is what autocast would do minus its per-op casts and its float32
softmax over the [T, T] scores (roughly 1.05-1.2x faster on a CPU in development runs; BENCHMARKS.md).

Attention: the fused kernel (``scaled_dot_product_attention``), except bfloat16 on a CPU, where
explicit scores with a causal mask are faster on CPUs with AVX512-BF16 (the CPU flash kernel is
slow for small head sizes: about 9x slower on the quickstart model, measured during development).

It is thread-safe, so on a CPU slices of chains run on worker threads (:mod:`devinterp.llc.chain_threads`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from devinterp.llc.backends import ChainLoss
from devinterp.llc.params import FlatParams
from devinterp.models.attn_only import apply_rotary

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


EMBEDDINGS = ("embed.weight", "pos_embed.weight")  # kept in float32 (gather + scatter-add gradient)


def chain_losses(P: dict[str, Tensor], tokens: Tensor, n_layers: int, n_heads: int, d_head: int, explicit: bool,
                 dtype: torch.dtype = torch.float32, rotary: tuple[Tensor, Tensor] | None = None,
                 shortformer: bool = False) -> Tensor:
    """Mean next-token cross-entropy per chain: P[name] = [C, *shape], tokens Long[B, T] -> Float[C].

    ``dtype``: the compute dtype of everything between the embedding and the logits; the losses are
    computed (and returned) in float32. ``rotary``: RoPE's (cos, sin) tables
    (:func:`~devinterp.models.attn_only.rotary_tables`) for a model without ``pos_embed``.
    ``shortformer``: ``pos_embed`` enters the queries and keys only (after ``ln1``), not the residual.
    """
    P = {k: (v if k in EMBEDDINGS else v.to(dtype)) for k, v in P.items()}
    emb = P["embed.weight"]  # [C, V, d]
    C, V, d = emb.shape
    B, T = tokens.shape
    H, dh = n_heads, d_head
    # embedding of chain c = row (c*V + token) of the stacked tables
    idx = tokens.reshape(1, -1) + (torch.arange(C, device=tokens.device) * V).view(C, 1)
    x = F.embedding(idx, emb.reshape(C * V, d)).view(C, B, T, d)
    qk_pos = None
    if shortformer:
        qk_pos = P["pos_embed.weight"][:, :T].to(dtype)  # [C, T, d]
    elif rotary is None:
        x = x + P["pos_embed.weight"][:, :T].unsqueeze(1)
    x = x.to(dtype)
    if explicit:
        mask = torch.full((T, T), float("-inf"), device=tokens.device, dtype=dtype).triu(1).expand(C * B * H, T, T)
    for layer in range(n_layers):
        pre = f"blocks.{layer}."
        h = _ln(x, P[pre + "ln1.weight"], P[pre + "ln1.bias"]).reshape(C, B * T, d)
        w_qkv = torch.cat([P[pre + "attn.q.weight"], P[pre + "attn.k.weight"], P[pre + "attn.v.weight"]], 1)
        b_qkv = torch.cat([P[pre + "attn.q.bias"], P[pre + "attn.k.bias"], P[pre + "attn.v.bias"]], 1)
        qkv = torch.baddbmm(b_qkv.unsqueeze(1), h, w_qkv.transpose(1, 2))  # [C, B*T, 3*H*dh]
        if qk_pos is not None:  # W(h + pos) = W h + W pos: the positions' part once per chain, not per sequence
            pos_qk = torch.bmm(qk_pos, w_qkv[:, : 2 * H * dh].transpose(1, 2))  # [C, T, 2*H*dh]
            qkv = qkv.view(C, B, T, -1) + F.pad(pos_qk, (0, H * dh)).unsqueeze(1)  # values get no positions
        q, k, v = qkv.view(C, B, T, 3, H, dh).permute(3, 0, 1, 4, 2, 5).reshape(3, C * B * H, T, dh).unbind(0)
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        if explicit:
            s = torch.baddbmm(mask, q, k.transpose(1, 2), alpha=1.0 / math.sqrt(dh))  # scores + causal mask
            z = torch.bmm(torch.softmax(s, -1), v)
        else:
            z = F.scaled_dot_product_attention(q.view(C * B, H, T, dh), k.view(C * B, H, T, dh),
                                               v.view(C * B, H, T, dh), is_causal=True, scale=1.0 / math.sqrt(dh))
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
        self._dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[self.compute_dtype]
        self._rotary = ((self.model.rotary_cos.to(self.device), self.model.rotary_sin.to(self.device))
                        if self.model.rotary else None)
        # explicit attention scores only for bf16 on CPU (faster there); on CUDA the fused kernel
        # (flash attention in bf16) never materialises the [T, T] scores.
        self._explicit = self.compute_dtype != "float32" and torch.device(self.device).type == "cpu"
        # a pure function of (W, batch), so chain slices may run on threads; not when compiled
        # (the first call compiles, and concurrent first calls would compile twice)
        self.thread_safe = not compile

    def _forward_checked(self, P: dict[str, Tensor], tokens: Any) -> Tensor:
        if not isinstance(tokens, Tensor) or tokens.dim() != 2:
            raise ValueError(f"the fused AttnOnlyTransformer loss needs token batches Long[batch, pos], got {type(tokens).__name__}")
        return self._forward(P, tokens, *self._dims, explicit=self._explicit, dtype=self._dtype, rotary=self._rotary,
                             shortformer=self.model.shortformer)

    def loss_and_grad(self, W: Tensor, batch: Any) -> tuple[Tensor, Tensor]:
        # the per-parameter views are the autograd leaves: differentiating through the slicing of W
        # instead would zero-fill and add a [chains, d] gradient once per parameter
        views = {k: v.detach().requires_grad_(True) for k, v in self.flat.views(W.detach()).items()}
        losses = self._forward_checked(views, batch).to(W.dtype)
        grads = torch.autograd.grad(losses.sum(), list(views.values()))
        return losses.detach(), torch.cat([g.reshape(W.shape[0], -1) for g in grads], dim=1)

    @torch.no_grad()
    def loss(self, W: Tensor, batch: Any) -> Tensor:
        return self._forward_checked(self.flat.views(W), batch).to(W.dtype)
