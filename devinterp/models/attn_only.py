"""The attention-only transformer of the induction recipes, two ways.

* :func:`build_bridge` makes the TransformerLens 4 model (``TransformerBridge.boot_native``): the
  reference implementation, with hooks, used for training and for reading attention patterns.
* :class:`AttnOnlyTransformer` is a plain ``nn.Module`` computed from the *same state dict* (same
  parameter names) with fused attention (``F.scaled_dot_product_attention``) and no hooks: the fast
  path that SGLD runs thousands of times. Tests check its logits equal the bridge's.

Architecture (TransformerLens defaults for ``attn_only=True``): token + learned positional
embedding, then per layer ``x = x + Attn(LN(x))``, then ``LN`` and unembed. With
``positional_embedding_type="rotary"`` there is no ``pos_embed``: queries and keys are rotated by
:func:`apply_rotary` (TransformerLens's native RoPE: adjacent pairs, base 10,000, all of d_head). With
``"shortformer"`` (the paper's scheme, TransformerLens 2's ``shortformer``; Press et al. 2021) the
residual stream carries the token embedding alone and ``pos_embed`` is added, after ``ln1``, to the
inputs of the queries and keys only (values see no positions); TransformerLens 4's native bridge has
no such option, so :func:`build_bridge` makes it with two permanent hooks. Linear layers use the
``nn.Linear`` layout ``[out, in]``; q/k/v weights are ``[n_heads*d_head, d_model]`` with head h in
rows ``h*d_head:(h+1)*d_head``; ``o.weight`` is ``[d_model, n_heads*d_head]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from devinterp.config import ModelConfig

LN_EPS = 1e-5  # TransformerLens LayerNorm epsilon
ROTARY_BASE = 10_000.0  # TransformerLens's default rotary_base


def rotary_tables(n_ctx: int, d_head: int, base: float = ROTARY_BASE) -> tuple[Tensor, Tensor]:
    """RoPE's (cos, sin), each Float[n_ctx, d_head], in TransformerLens's adjacent-pair layout:
    dimensions (2i, 2i+1) rotate together by angle ``pos * base**(-2i/d_head)``."""
    inv_freq = 1.0 / (base ** (torch.arange(0, d_head, 2).float() / d_head))
    angles = torch.outer(torch.arange(n_ctx).float(), inv_freq)
    return angles.cos().repeat_interleave(2, -1), angles.sin().repeat_interleave(2, -1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate queries or keys ``x: [..., pos, d_head]`` by the tables' first ``pos`` rows."""
    T = x.shape[-2]
    rotated_half = torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)  # (x0, x1) -> (-x1, x0)
    return x * cos[:T].to(x.dtype) + rotated_half * sin[:T].to(x.dtype)


def bridge_config(cfg: ModelConfig, seed: int = 0, device: str = "cpu"):
    """TransformerLens ``TransformerBridgeConfig`` for a :class:`ModelConfig` (shortformer: the
    standard one, whose parameters are the same; :func:`build_bridge` adds the hooks)."""
    from transformer_lens import TransformerBridgeConfig

    positions = "standard" if cfg.positional_embedding_type == "shortformer" else cfg.positional_embedding_type
    return TransformerBridgeConfig(
        d_model=cfg.d_model, d_head=cfg.d_head, n_heads=cfg.n_heads, n_layers=cfg.n_layers,
        n_ctx=cfg.n_ctx, d_vocab=cfg.d_vocab, attn_only=True, seed=seed, device=device,
        positional_embedding_type=positions, rotary_base=ROTARY_BASE,
    )


def add_shortformer_hooks(bridge, n_layers: int) -> None:
    """Turn a standard-positions bridge into a shortformer one, with permanent hooks (they survive
    ``reset_hooks()`` and ``load_state_dict``): ``hook_pos_embed`` keeps the positional embedding
    ``[batch, pos, d_model]`` aside and puts zeros in the residual stream; each layer's
    ``attn.q.hook_in`` and ``attn.k.hook_in`` (the LayerNormed residual) get it added."""
    kept: dict[str, Tensor] = {}

    def keep_out_of_residual(pos: Tensor, hook) -> Tensor:
        kept["pos"] = pos
        return torch.zeros_like(pos)

    def add_positions(x: Tensor, hook) -> Tensor:
        return x + kept["pos"]

    bridge.add_perma_hook("hook_pos_embed", keep_out_of_residual)
    for layer in range(n_layers):
        for name in ("q", "k"):
            bridge.add_perma_hook(f"blocks.{layer}.attn.{name}.hook_in", add_positions)


def build_bridge(cfg: ModelConfig, seed: int = 0, device: str = "cpu", state_dict: dict | None = None):
    """A fresh TransformerLens bridge (optionally loaded with ``state_dict``).

    Never ``copy.deepcopy`` a bridge (REFERENCE.md §4); build a new one and load the weights.
    """
    from transformer_lens import TransformerBridge

    torch.manual_seed(seed)
    # boot_native moves the model only when told by its own argument (the config's device is not used)
    model = TransformerBridge.boot_native(bridge_config(cfg, seed=seed, device=device), device=device)
    if cfg.positional_embedding_type == "shortformer":
        add_shortformer_hooks(model, cfg.n_layers)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model


class AttnOnlyTransformer(nn.Module):
    """Hook-free attention-only transformer with the bridge's parameter names.

    ``forward(tokens: Long[batch, pos]) -> Float[batch, pos, d_vocab]`` logits.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d, hd = cfg.d_model, cfg.n_heads * cfg.d_head
        self.embed = nn.Embedding(cfg.d_vocab, d)
        self.rotary = cfg.positional_embedding_type == "rotary"
        self.shortformer = cfg.positional_embedding_type == "shortformer"
        if self.rotary:
            cos, sin = rotary_tables(cfg.n_ctx, cfg.d_head)  # buffers, not in the state dict (as the bridge)
            self.register_buffer("rotary_cos", cos, persistent=False)
            self.register_buffer("rotary_sin", sin, persistent=False)
        else:
            self.pos_embed = nn.Embedding(cfg.n_ctx, d)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layers))
        self.ln_final = nn.LayerNorm(d, eps=LN_EPS)
        self.unembed = nn.Linear(d, cfg.d_vocab)
        del hd

    @classmethod
    def from_state_dict(cls, cfg: ModelConfig, state_dict: dict[str, Tensor]) -> "AttnOnlyTransformer":
        """Build from a bridge (or checkpoint) state dict; raises ValueError on missing/odd keys or shapes."""
        from devinterp.models.loading import load_checked

        return load_checked(cls(cfg), state_dict)

    def forward(self, tokens: Tensor) -> Tensor:
        return self._run(tokens)

    @torch.no_grad()
    def attention_patterns(self, tokens: Tensor) -> list[Tensor]:
        """Each layer's attention ``Float[batch, head, q, k]`` (softmax of the causal scores) for
        ``tokens: Long[batch, pos]``: what the bridge's ``blocks.{l}.attn.hook_pattern`` holds."""
        patterns: list[Tensor] = []
        self._run(tokens, patterns)
        return patterns

    def _run(self, tokens: Tensor, patterns: list[Tensor] | None = None) -> Tensor:
        x = self.embed(tokens)  # [batch, pos, d_model]
        rotary, qk_pos = None, None
        if self.rotary:
            rotary = (self.rotary_cos, self.rotary_sin)
        else:
            pos = self.pos_embed(torch.arange(tokens.shape[-1], device=tokens.device))
            if self.shortformer:
                qk_pos = pos  # queries and keys only; the residual carries tokens alone
            else:
                x = x + pos
        for block in self.blocks:
            x = x + block(x, rotary, qk_pos, patterns)
        return self.unembed(self.ln_final(x))


class _Block(nn.Module):
    """One attention-only layer: returns Attn(LN(x)), the residual update."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=LN_EPS)
        self.attn = _Attention(cfg)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor] | None = None, qk_pos: Tensor | None = None,
                patterns: list[Tensor] | None = None) -> Tensor:
        return self.attn(self.ln1(x), rotary, qk_pos, patterns)


class _Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.d_head = cfg.n_heads, cfg.d_head
        inner = cfg.n_heads * cfg.d_head
        self.q = nn.Linear(cfg.d_model, inner)
        self.k = nn.Linear(cfg.d_model, inner)
        self.v = nn.Linear(cfg.d_model, inner)
        self.o = nn.Linear(inner, cfg.d_model)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor] | None = None, qk_pos: Tensor | None = None,
                patterns: list[Tensor] | None = None) -> Tensor:
        """``rotary``: RoPE's (cos, sin) tables, applied to queries and keys; ``qk_pos``: shortformer
        positions ``[pos, d_model]``, added to the inputs of queries and keys; None for none. With
        ``patterns`` given, the attention ``[..., head, q, k]`` is computed explicitly and appended."""
        *lead, pos, _ = x.shape

        def heads(t: Tensor) -> Tensor:  # [..., pos, n_heads*d_head] -> [..., n_heads, pos, d_head]
            return t.view(*lead, pos, self.n_heads, self.d_head).transpose(-3, -2)

        qk_in = x if qk_pos is None else x + qk_pos
        q, k, v = heads(self.q(qk_in)), heads(self.k(qk_in)), heads(self.v(x))
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        if patterns is None:
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / math.sqrt(self.d_head))
        else:
            causal = torch.ones(pos, pos, dtype=torch.bool, device=x.device).triu(1)
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.d_head)
            patterns.append(scores.masked_fill(causal, float("-inf")).softmax(-1))
            z = patterns[-1] @ v
        return self.o(z.transpose(-3, -2).reshape(*lead, pos, self.n_heads * self.d_head))
