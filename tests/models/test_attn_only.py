import pytest
import torch

from devinterp.config import ModelConfig
from devinterp.models import AttnOnlyTransformer, build_bridge
from devinterp.models.attn_only import apply_rotary, rotary_tables


@pytest.mark.parametrize("positions", ["standard", "rotary", "shortformer"])
def test_fast_forward_equals_transformerlens_bridge(positions):
    """The hook-free SDPA forward must give the bridge's logits (REFERENCE §4; issue: <= 1e-5 relative)."""
    cfg = ModelConfig(n_layers=2, n_heads=4, d_model=64, d_head=16, n_ctx=64, d_vocab=64,
                      positional_embedding_type=positions)
    bridge = build_bridge(cfg, seed=3)
    gen = torch.Generator().manual_seed(0)
    # perturb every weight, biases and LayerNorm included, so none of them is a no-op
    sd = {k: v + 0.2 * torch.randn(v.shape, generator=gen) for k, v in bridge.state_dict().items()}
    bridge.load_state_dict(sd)
    fast = AttnOnlyTransformer.from_state_dict(cfg, bridge.state_dict())
    tokens = torch.randint(0, 64, (4, 64), generator=gen)
    with torch.no_grad():
        ref, got = bridge(tokens), fast(tokens)
    rel = (ref - got).norm() / ref.norm()
    assert rel < 1e-5
    # and the attention patterns the head scores read: the bridge's hook_pattern, ours computed explicitly
    from devinterp.metrics.heads import attention_patterns

    for theirs, ours in zip(attention_patterns(bridge, tokens), fast.attention_patterns(tokens)):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_wrong_shape_is_named():
    cfg = ModelConfig(d_model=32, d_head=8, n_heads=4, n_ctx=32, d_vocab=32)
    sd = AttnOnlyTransformer(cfg).state_dict()
    sd["embed.weight"] = torch.zeros(10, 32)
    try:
        AttnOnlyTransformer.from_state_dict(cfg, sd)
    except ValueError as err:
        assert "embed.weight" in str(err) and "(10, 32)" in str(err)
    else:
        raise AssertionError("no error")


def test_rotary_scores_depend_only_on_the_offset():
    """RoPE's defining property: <R_i q, R_j k> is a function of i - j (a rotation by angle (i - j) w per
    pair of dimensions), so 'attend to the previous token' is one map at every position."""
    cos, sin = rotary_tables(32, 8)
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(8, generator=gen), torch.randn(8, generator=gen)
    rq, rk = apply_rotary(q.expand(32, 8), cos, sin), apply_rotary(k.expand(32, 8), cos, sin)
    scores = rq @ rk.T  # [i, j]
    for offset in (0, 1, 5):
        diagonal = torch.diagonal(scores, -offset)
        torch.testing.assert_close(diagonal, diagonal[0].expand_as(diagonal), rtol=1e-5, atol=1e-5)
    # and the rotation keeps each vector's norm
    torch.testing.assert_close(rq.norm(dim=-1), q.norm().expand(32), rtol=1e-5, atol=1e-6)


def test_rotary_model_has_no_positional_embedding_and_sees_order():
    cfg = ModelConfig(n_layers=1, n_heads=2, d_model=16, d_head=8, n_ctx=8, d_vocab=10,
                      positional_embedding_type="rotary")
    model = AttnOnlyTransformer(cfg)
    assert not any("pos_embed" in k for k in model.state_dict())
    assert set(model.state_dict()) == set(build_bridge(cfg).state_dict())
    # without positions in the residual, attention still tells orders apart: the last token's logits
    # for (a, b, c) and (b, a, c) differ (a position-free model would give the same)
    with torch.no_grad():
        one, two = model(torch.tensor([[1, 2, 3]])), model(torch.tensor([[2, 1, 3]]))
    assert (one[0, -1] - two[0, -1]).abs().max() > 1e-4


def _shortformer_by_hand(sd: dict, cfg: ModelConfig, tokens: torch.Tensor) -> torch.Tensor:
    """TransformerLens 2's shortformer forward written out per head (TransformerBlock.forward:
    ``query_input = ln1(resid) + pos``, ``key_input`` the same, ``value_input = ln1(resid)``; the
    residual starts as the token embedding alone): a second implementation for the test below."""
    T, H, dh = tokens.shape[1], cfg.n_heads, cfg.d_head
    ln = lambda x, w, b: torch.nn.functional.layer_norm(x, x.shape[-1:], w, b, eps=1e-5)  # noqa: E731
    pos = sd["pos_embed.weight"][:T]
    resid = sd["embed.weight"][tokens]
    for layer in range(cfg.n_layers):
        p = f"blocks.{layer}."
        normed = ln(resid, sd[p + "ln1.weight"], sd[p + "ln1.bias"])
        out = sd[p + "attn.o.bias"].clone()
        for h in range(H):
            rows = slice(h * dh, (h + 1) * dh)
            proj = lambda x, n: x @ sd[p + f"attn.{n}.weight"][rows].T + sd[p + f"attn.{n}.bias"][rows]  # noqa: E731
            q, k, v = proj(normed + pos, "q"), proj(normed + pos, "k"), proj(normed, "v")
            scores = q @ k.transpose(-1, -2) / dh ** 0.5
            scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
            out = out + (scores.softmax(-1) @ v) @ sd[p + "attn.o.weight"][:, rows].T
        resid = resid + out
    return ln(resid, sd["ln_final.weight"], sd["ln_final.bias"]) @ sd["unembed.weight"].T + sd["unembed.bias"]


def test_shortformer_is_the_papers_scheme():
    """Shortformer positions (REFERENCE.md §2.1, the paper's model): ours and the bridge's (TransformerLens
    4 with our two hooks) give TransformerLens 2's forward written out by hand, and differ from standard
    positions on the same weights."""
    cfg = ModelConfig(n_layers=2, n_heads=2, d_model=16, d_head=8, n_ctx=12, d_vocab=20,
                      positional_embedding_type="shortformer")
    gen = torch.Generator().manual_seed(4)
    bridge = build_bridge(cfg, seed=1)
    sd = {k: v + 0.3 * torch.randn(v.shape, generator=gen) for k, v in bridge.state_dict().items()}
    bridge.load_state_dict(sd)  # the hooks survive reloading
    tokens = torch.randint(0, 20, (3, 12), generator=gen)
    with torch.no_grad():
        by_hand = _shortformer_by_hand(sd, cfg, tokens)
        ours = AttnOnlyTransformer.from_state_dict(cfg, sd)(tokens)
        bridge.reset_hooks()  # permanent hooks stay
        theirs = bridge(tokens)
        standard = AttnOnlyTransformer.from_state_dict(cfg.model_copy(update={"positional_embedding_type": "standard"}),
                                                       sd)(tokens)
    torch.testing.assert_close(ours, by_hand, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(theirs, by_hand, rtol=1e-5, atol=1e-5)
    assert (standard - by_hand).abs().max() > 1e-2


def test_shortformer_values_carry_no_position():
    """With queries and keys zeroed (uniform attention) a one-layer shortformer model's last-position
    logits are the same for any order of the earlier tokens: positions reach only the attention pattern.
    Standard positions, in the residual stream, tell the orders apart. (One layer: in a second, the
    earlier positions' residuals already depend on the order of their own prefixes.)"""
    tokens = torch.tensor([[1, 2, 3, 4, 5, 6]])
    shuffled = tokens[:, [3, 0, 4, 1, 2, 5]]  # the first five reordered, the same last token
    last = {}
    for positions in ("shortformer", "standard"):
        cfg = ModelConfig(n_layers=1, n_heads=2, d_model=16, d_head=8, n_ctx=8, d_vocab=10,
                          positional_embedding_type=positions)
        model = AttnOnlyTransformer(cfg)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(torch.zeros_like(p) if ".attn.q." in name or ".attn.k." in name
                        else torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))))
            last[positions] = (model(tokens)[0, -1], model(shuffled)[0, -1])
    torch.testing.assert_close(*last["shortformer"], rtol=1e-5, atol=1e-5)
    assert (last["standard"][0] - last["standard"][1]).abs().max() > 1e-3


def test_shortformer_bridge_trains_as_the_fast_model():
    """The quickstart recipe trains the bridge itself: through the shortformer hooks its gradients
    (positional embedding included) are the fast model's."""
    from devinterp.metrics.losses import next_token_loss

    cfg = ModelConfig(n_layers=2, n_heads=2, d_model=16, d_head=8, n_ctx=12, d_vocab=20,
                      positional_embedding_type="shortformer")
    bridge = build_bridge(cfg, seed=2)
    fast = AttnOnlyTransformer.from_state_dict(cfg, bridge.state_dict())
    tokens = torch.randint(0, 20, (3, 12), generator=torch.Generator().manual_seed(6))
    bridge(tokens, return_type="loss").backward()
    next_token_loss(fast, tokens).backward()
    by_storage = {p.data_ptr(): p for p in bridge.parameters()}  # the bridge's own names differ
    theirs = {n: by_storage[t.data_ptr()].grad for n, t in bridge.state_dict().items() if t.data_ptr() in by_storage}
    assert theirs["pos_embed.weight"].abs().max() > 0 and len(theirs) >= len(list(bridge.parameters()))
    for name, grad in theirs.items():
        torch.testing.assert_close(grad, dict(fast.named_parameters())[name].grad, rtol=1e-4, atol=1e-6)
