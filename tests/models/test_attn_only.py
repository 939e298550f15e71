import pytest
import torch

from devinterp.config import ModelConfig
from devinterp.models import AttnOnlyTransformer, build_bridge
from devinterp.models.attn_only import apply_rotary, rotary_tables


@pytest.mark.parametrize("positions", ["standard", "rotary"])
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
