import torch

from devinterp.config import ModelConfig
from devinterp.models import AttnOnlyTransformer, build_bridge


def test_fast_forward_equals_transformerlens_bridge():
    """The hook-free SDPA forward must give the bridge's logits (REFERENCE §4; issue: <= 1e-5 relative)."""
    cfg = ModelConfig(n_layers=2, n_heads=4, d_model=64, d_head=16, n_ctx=64, d_vocab=64)
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
