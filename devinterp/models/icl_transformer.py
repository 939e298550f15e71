"""The transformer of in-context linear regression (REFERENCE.md §2.2), plain PyTorch.

Architecture (as Hoogland et al. 2024's ``InContextRegressionTransformer``, [ICL]
``regression/model.py`` + ``dtransformer.py``): a sequence of K pairs (x_k, y_k), x_k in R^D, becomes
2K vector tokens in R^{D+1} that alternate ``[0, x_k]`` and ``[y_k, 0, ..., 0]``. Tokens are embedded
linearly (no bias) and a learned positional embedding is added; then per layer (pre-LayerNorm)
``x = x + Attn(LN(x))``, ``x = x + MLP(LN(x))`` with a ReLU MLP; then ``LN`` and a linear unembedding
back to R^{D+1}. The prediction of y_k is the first coordinate of the output at the x_k token
(position 2k), which by causal attention sees x_1, y_1, ..., x_{k-1}, y_{k-1}, x_k only.

Attention is fused (``F.scaled_dot_product_attention``), with no hooks; ``attention_patterns`` gives
the explicit softmax patterns of every head for reading, and tests check both agree. Parameter names
(``nn.Linear`` layout ``[out, in]``): ``embed.weight`` [d_model, D+1], ``pos_embed`` [2K, d_model],
``blocks.{l}.ln1/ln2.{weight,bias}``, ``blocks.{l}.attn.{q,k,v,o}.weight`` (no biases; head h in rows
``h*d_head:(h+1)*d_head`` of q/k/v and the same columns of o), ``blocks.{l}.mlp.{fc1,fc2}.{weight,bias}``,
``ln_final.{weight,bias}``, ``unembed.{weight,bias}``. With ``layer_norm: false`` the LayerNorms are absent.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from devinterp.config import ICLModelConfig

LN_EPS = 1e-5


def to_tokens(xs: Tensor, ys: Tensor) -> Tensor:
    """Interleave a regression sequence into vector tokens.

    xs: Float[batch, K, D], ys: Float[batch, K]  ->  Float[batch, 2K, D+1], tokens ``[0, x_k]``
    at even positions and ``[y_k, 0, ..., 0]`` at odd positions.
    """
    b, k, d = xs.shape
    x_tok = torch.cat([torch.zeros_like(xs[..., :1]), xs], dim=-1)
    y_tok = torch.cat([ys.unsqueeze(-1), torch.zeros_like(xs)], dim=-1)
    return torch.stack([x_tok, y_tok], dim=2).reshape(b, 2 * k, d + 1)


class ICLTransformer(nn.Module):
    """``forward(xs: Float[batch, K, D], ys: Float[batch, K]) -> Float[batch, K]``: the predictions of
    y_1..y_K, each from the prefix before it (any K <= ``max_examples``)."""

    def __init__(self, cfg: ICLModelConfig):
        super().__init__()
        self.cfg = cfg
        n_ctx, d = 2 * cfg.max_examples, cfg.d_model
        self.embed = nn.Linear(cfg.task_size + 1, d, bias=False)
        # like [ICL]'s Linear(max_tokens, d_model, bias=False): uniform(+-1/sqrt(n_ctx)) at init
        self.pos_embed = nn.Parameter(torch.empty(n_ctx, d).uniform_(-1 / math.sqrt(n_ctx), 1 / math.sqrt(n_ctx)))
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layers))
        self.ln_final = nn.LayerNorm(d, eps=LN_EPS) if cfg.layer_norm else nn.Identity()
        self.unembed = nn.Linear(d, cfg.task_size + 1)

    @classmethod
    def from_state_dict(cls, cfg: ICLModelConfig, state_dict: dict[str, Tensor]) -> "ICLTransformer":
        """Build from a checkpoint's state dict; raises ValueError on missing/odd keys or shapes."""
        from devinterp.models.loading import load_checked

        return load_checked(cls(cfg), state_dict)

    def residual(self, xs: Tensor, ys: Tensor) -> Tensor:
        """The residual stream after the last block: Float[batch, 2K, d_model]."""
        toks = to_tokens(xs, ys)
        x = self.embed(toks) + self.pos_embed[: toks.shape[1]]
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, xs: Tensor, ys: Tensor) -> Tensor:
        out = self.unembed(self.ln_final(self.residual(xs, ys)))  # [batch, 2K, D+1]
        return out[:, 0::2, 0]

    @torch.no_grad()
    def attention_patterns(self, xs: Tensor, ys: Tensor) -> list[Tensor]:
        """Explicit attention patterns of every layer: list of Float[batch, head, query, key]."""
        toks = to_tokens(xs, ys)
        x = self.embed(toks) + self.pos_embed[: toks.shape[1]]
        patterns = []
        for block in self.blocks:
            patterns.append(block.attn.pattern(block.ln1(x)))
            x = block(x)
        return patterns


class _Block(nn.Module):
    def __init__(self, cfg: ICLModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=LN_EPS) if cfg.layer_norm else nn.Identity()
        self.attn = _Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model, eps=LN_EPS) if cfg.layer_norm else nn.Identity()
        self.mlp = _MLP(cfg)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class _MLP(nn.Module):
    def __init__(self, cfg: ICLModelConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.d_model, cfg.d_mlp)
        self.fc2 = nn.Linear(cfg.d_mlp, cfg.d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class _Attention(nn.Module):
    def __init__(self, cfg: ICLModelConfig):
        super().__init__()
        self.n_heads, self.d_head = cfg.n_heads, cfg.d_model // cfg.n_heads
        d = cfg.d_model
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.o = nn.Linear(d, d, bias=False)

    def _heads(self, t: Tensor) -> Tensor:  # [..., pos, d_model] -> [..., n_heads, pos, d_head]
        *lead, pos, _ = t.shape
        return t.view(*lead, pos, self.n_heads, self.d_head).transpose(-3, -2)

    def forward(self, x: Tensor) -> Tensor:
        *lead, pos, d = x.shape
        q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / math.sqrt(self.d_head))
        return self.o(z.transpose(-3, -2).reshape(*lead, pos, d))

    def pattern(self, x: Tensor) -> Tensor:
        q, k = self._heads(self.q(x)), self._heads(self.k(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)
        pos = x.shape[-2]
        mask = torch.ones(pos, pos, dtype=torch.bool, device=x.device).tril()
        return scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)


def regression_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    """Mean squared error of the y-predictions over the batch and all K positions (a scalar):
    the ``loss_fn`` contract of DESIGN.md for this family. ``batch = (xs, ys)``."""
    xs, ys = batch
    return F.mse_loss(model(xs, ys), ys)


def per_example_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    """Squared error of each prediction: Float[batch, K] (position k predicts y_k from k-1 examples)."""
    xs, ys = batch
    return (model(xs, ys) - ys) ** 2


@torch.no_grad()
def heldout_regression_losses(model: nn.Module, batches: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Per-position squared errors on a fixed evaluation set: Float[n_sequences, K]."""
    return torch.cat([per_example_loss(model, b) for b in batches])


__all__ = ["ICLTransformer", "heldout_regression_losses", "per_example_loss", "regression_loss", "to_tokens"]
