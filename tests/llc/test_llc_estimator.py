"""Contract tests of estimate_llc: SGLD convention, determinism, common random numbers, backends, n/nbeta, masks."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from devinterp.config import LLCSettings, ModelConfig
from devinterp.llc import estimate_llc, head_mask, sgld_step
from devinterp.llc.backends import SequentialLoss, VmapLoss
from devinterp.llc.data import SGLDData
from devinterp.llc.params import FlatParams
from devinterp.metrics.losses import next_token_loss
from devinterp.models.attn_only import AttnOnlyTransformer
from llc_analytic_models import half_mse, regression_problem

FAST = dict(chains=3, burnin=20, draws=40, batch_size=50, epsilon=1e-4, gamma=1.0)


def test_sgld_without_noise_and_localization_is_sgd():
    model, data = regression_problem(3, 2, bias=True)
    with torch.no_grad():
        model.weight.add_(0.3)  # move off the minimum so the gradient is not zero
    x, y = data[0]
    eps, nbeta = 1e-3, 7.0
    flat = FlatParams.of(model)
    w = flat.flatten(model).unsqueeze(0)
    loss, grad = SequentialLoss(model, half_mse, flat, torch.device("cpu"), "float32").loss_and_grad(w, (x, y))
    sgld_step(w, grad, w[0].clone(), None, epsilon=eps, nbeta=nbeta, gamma=0.0, noise_level=0.0)

    ref = copy.deepcopy(model)  # a plain nn.Linear: deepcopy is safe here
    opt = torch.optim.SGD(ref.parameters(), lr=eps * nbeta / 2)
    half_mse(ref, (x, y)).backward()
    opt.step()
    torch.testing.assert_close(w[0], FlatParams.of(ref).flatten(ref), rtol=0, atol=1e-7)


def test_sgld_noise_has_variance_epsilon_and_mask_freezes():
    w = torch.zeros(2, 100_000)
    noise = torch.randn(2, 100_000, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(100_000)
    mask[:50_000] = 1
    sgld_step(w, torch.zeros_like(w), torch.zeros(100_000), noise, epsilon=0.04, nbeta=1.0, gamma=0.0, mask=mask)
    assert w[:, 50_000:].abs().max() == 0
    assert w[:, :50_000].std().item() == pytest.approx(math.sqrt(0.04), rel=0.01)


def test_same_seed_same_result_and_global_rng_untouched():
    model, data = regression_problem(3, 2)
    torch.manual_seed(5)
    a = estimate_llc(model, data, half_mse, **FAST)
    after = torch.rand(1)
    torch.manual_seed(5)
    assert torch.rand(1) == after  # estimate_llc drew nothing from the global generator
    b = estimate_llc(model, data, half_mse, **FAST)
    np.testing.assert_array_equal(a.loss_trace, b.loss_trace)
    assert a.llc == b.llc
    c = estimate_llc(model, data, half_mse, **{**FAST, "seed": 1})
    assert c.llc != a.llc


def test_common_random_numbers_are_independent_of_weights():
    """Batch order and noise depend on the seed only: two models see the same minibatches/noise."""
    d1 = SGLDData.from_data([torch.arange(100.0).view(100, 1)])
    s1, s2 = d1.schedule(30, 16, seed=3), d1.schedule(30, 16, seed=3)
    assert torch.equal(s1, s2)
    assert not torch.equal(s1, d1.schedule(30, 16, seed=4))
    # each sample appears once per epoch
    assert sorted(s1.reshape(-1)[:96].tolist())[:96] == sorted(set(s1.reshape(-1)[:96].tolist()))
    # a chain's trace does not depend on how many chains run (per-chain noise streams)
    model, data = regression_problem(3, 2)
    three = estimate_llc(model, data, half_mse, **FAST)
    five = estimate_llc(model, data, half_mse, **{**FAST, "chains": 5})
    np.testing.assert_allclose(three.loss_trace, five.loss_trace[:3], rtol=1e-6)


def test_vmap_and_sequential_backends_agree():
    model, data = regression_problem(3, 2, bias=True)
    v = estimate_llc(model, data, half_mse, backend="vmap", **FAST)
    s = estimate_llc(model, data, half_mse, backend="sequential", **FAST)
    assert (v.backend, s.backend) == ("vmap", "sequential")
    np.testing.assert_allclose(v.loss_trace, s.loss_trace, rtol=1e-5)
    assert v.llc == pytest.approx(s.llc, rel=1e-4)


def _tiny_transformer(seed=0, positions="standard"):
    cfg = ModelConfig(n_layers=2, n_heads=2, d_model=16, d_head=8, n_ctx=12, d_vocab=11,
                      positional_embedding_type=positions)
    torch.manual_seed(seed)
    model = AttnOnlyTransformer(cfg)
    for p in model.parameters():  # non-trivial layer-norm affine and biases
        torch.nn.init.normal_(p, std=0.3) if p.dim() == 1 else None
    tokens = torch.randint(0, 11, (40, 12), generator=torch.Generator().manual_seed(1))
    return model, list(tokens.split(8))


@pytest.mark.parametrize("positions", ["standard", "rotary", "shortformer"])
def test_fused_backend_equals_the_model_forward(positions):
    model, batches = _tiny_transformer(positions=positions)
    flat = FlatParams.of(model)
    w = flat.flatten(model)
    W = torch.stack([w, w + 0.01 * torch.randn(w.shape, generator=torch.Generator().manual_seed(2))])
    from devinterp.llc.fused_attn_only import fused_for

    fused = fused_for(model, next_token_loss, flat, torch.device("cpu"), "float32")
    assert fused is not None
    ref = VmapLoss(model, next_token_loss, flat, torch.device("cpu"), "float32")
    lf, gf = fused.loss_and_grad(W, batches[0])
    lr_, gr = ref.loss_and_grad(W, batches[0])
    torch.testing.assert_close(lf, lr_, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gf, gr, rtol=1e-4, atol=1e-6)
    # and the whole estimate
    kw = dict(chains=2, burnin=5, draws=10, batch_size=8, epsilon=1e-4, gamma=10.0)
    a = estimate_llc(model, batches, next_token_loss, **kw)
    b = estimate_llc(model, batches, next_token_loss, backend="vmap", **kw)
    assert a.backend == "fused"
    np.testing.assert_allclose(a.loss_trace, b.loss_trace, rtol=1e-4)


def test_fused_bfloat16_matches_float32_within_bf16_rounding():
    # bf16 keeps ~3 significant digits: the losses agree to ~1e-2 relative and the gradients point the
    # same way; a wrong cast (e.g. an embedding table rounded, or a chain's weights mixed up) would not
    model, batches = _tiny_transformer()
    flat = FlatParams.of(model)
    w = flat.flatten(model)
    W = torch.stack([w, w + 0.05 * torch.randn(w.shape, generator=torch.Generator().manual_seed(3))])
    from devinterp.llc.fused_attn_only import fused_for

    f32 = fused_for(model, next_token_loss, flat, torch.device("cpu"), "float32")
    bf16 = fused_for(model, next_token_loss, flat, torch.device("cpu"), "bfloat16")
    l32, g32 = f32.loss_and_grad(W, batches[0])
    l16, g16 = bf16.loss_and_grad(W, batches[0])
    assert l16.dtype == torch.float32 and g16.dtype == torch.float32
    torch.testing.assert_close(l16, l32, rtol=2e-2, atol=0)
    assert float((l16[1] - l16[0]) * (l32[1] - l32[0])) > 0  # the chains stay distinct
    for c in range(2):
        cos = torch.nn.functional.cosine_similarity(g16[c], g32[c], dim=0)
        assert cos > 0.99, (c, float(cos))


def test_chain_slices_on_threads_compute_what_one_thread_computes():
    # run_chains splits thread-safe backends' chains over CPU threads; each chain must be unchanged
    from devinterp.llc.chain_threads import chain_slices
    from devinterp.llc.fused_attn_only import fused_for
    from devinterp.llc.sgld import run_chains

    assert [(s.start, s.stop) for s in chain_slices(5, 2)] == [(0, 2), (2, 5)]
    assert [(s.start, s.stop) for s in chain_slices(1, 4)] == [(0, 1)]
    model, batches = _tiny_transformer()
    flat = FlatParams.of(model)
    w0 = flat.flatten(model)
    fused = fused_for(model, next_token_loss, flat, torch.device("cpu"), "float32")
    assert fused.thread_safe and not VmapLoss(model, next_token_loss, flat, torch.device("cpu"), "float32").thread_safe
    data = SGLDData.from_data(batches)
    kw = dict(epsilon=1e-3, nbeta=10.0, gamma=10.0, noise_level=1.0, chains=4, steps=12, batch_size=8, seed=5)
    threads = torch.get_num_threads()
    one = run_chains(fused, w0, data, workers=1, **kw)
    two = run_chains(fused, w0, data, workers=2, **kw)
    assert torch.get_num_threads() == threads  # the workers' setting is their own
    torch.testing.assert_close(two.losses, one.losses, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(two.drift_norm, one.drift_norm, rtol=1e-4, atol=1e-7)
    assert len(set(one.losses[-1].tolist())) == 4  # four different chains, in the same order


def test_nbeta_and_n_sources():
    x = torch.randn(100, 3)
    y = torch.randn(100, 2)
    model = torch.nn.Linear(3, 2)
    kw = dict(chains=1, burnin=0, draws=2, batch_size=10)
    r = estimate_llc(model, [(x[:60], y[:60]), (x[60:], y[60:])], half_mse, **kw)
    assert r.n == 100 and r.nbeta == pytest.approx(100 / math.log(100))
    assert "n=100" in r.nbeta_source
    loader = DataLoader(TensorDataset(x, y), batch_size=32, drop_last=True, shuffle=True)
    r = estimate_llc(model, loader, half_mse, **kw)
    assert r.n == 100 and "len(data.dataset)" in r.nbeta_source
    r = estimate_llc(model, loader, half_mse, n=1000, **kw)
    assert r.nbeta == pytest.approx(1000 / math.log(1000))
    r = estimate_llc(model, loader, half_mse, settings=LLCSettings(nbeta=3.0, **kw))
    assert r.nbeta == 3.0 and r.nbeta_source == "settings.nbeta"


def test_init_loss_covers_all_data_when_batches_suffice():
    model, data = regression_problem(3, 2)
    r = estimate_llc(model, data, half_mse, chains=1, burnin=0, draws=2, batch_size=100, init_loss_batches=10)
    assert r.init_loss == pytest.approx(float(half_mse(model, data[0]).detach()), rel=1e-6)
    assert r.init_loss_stderr == 0.0



def test_init_loss_defaults_to_all_the_data_and_a_partial_one_adds_its_error_to_the_total():
    """L_n(w*) is the loss on all n samples: by default it is computed exactly (a 7-sample last batch
    too); with fewer batches its standard error enters ``total_stderr`` (chains share it)."""
    torch.manual_seed(0)
    x, y = torch.randn(103, 3), torch.randn(103, 2)
    model = torch.nn.Linear(3, 2)
    full = float(half_mse(model, (x, y)).detach())
    kw = dict(chains=3, burnin=0, draws=5, batch_size=16)
    r = estimate_llc(model, [(x, y)], half_mse, **kw)
    assert r.init_loss == pytest.approx(full, rel=1e-6) and r.init_loss_stderr == 0.0
    assert r.total_stderr == pytest.approx(r.stderr)
    r = estimate_llc(model, [(x, y)], half_mse, init_loss_batches=3, **kw)
    assert r.init_loss_stderr > 0
    assert r.total_stderr == pytest.approx(math.sqrt(r.stderr ** 2 + (r.nbeta * r.init_loss_stderr) ** 2))

def test_burnin_and_thinning_shapes():
    model, data = regression_problem(3, 2)
    r = estimate_llc(model, data, half_mse, **{**FAST, "burnin": 7, "draws": 11, "thin": 3})
    assert r.loss_trace.shape == (3, 11) and r.burnin_trace.shape == (3, 7)
    assert r.chain_llcs.shape == (3,)
    assert r.stderr == pytest.approx(r.chain_llcs.std(ddof=1) / math.sqrt(3))
    assert r.llc == pytest.approx(r.nbeta * (r.loss_trace.mean() - r.init_loss), rel=1e-9)


def test_wbic_when_asked():
    model, data = regression_problem(3, 2)
    r = estimate_llc(model, data, half_mse, wbic=True, **FAST)
    assert r.wbic == pytest.approx(1000 * r.loss_trace.mean())
    assert estimate_llc(model, data, half_mse, **FAST).wbic is None


def test_errors_name_what_is_allowed():
    model, data = regression_problem(3, 2)
    with pytest.raises(TypeError, match="allowed"):
        estimate_llc(model, data, half_mse, step_size=1e-3)
    with pytest.raises(KeyError, match="not parameters"):
        estimate_llc(model, data, half_mse, param_mask={"nope": True}, **FAST)
    with pytest.raises(ValueError, match="shape"):
        estimate_llc(model, data, half_mse, param_mask={"weight": torch.ones(3, 3, dtype=torch.bool)}, **FAST)
    with pytest.raises(ValueError, match="n=..."):
        estimate_llc(model, [None], lambda m, b: (m.weight ** 2).sum(), **FAST)
    with pytest.raises(ValueError, match="backend"):
        estimate_llc(model, data, half_mse, backend="fused", **FAST)


def test_frozen_coordinates_do_not_move_and_head_mask_layout():
    model, batches = _tiny_transformer()
    masks = head_mask(model, 1, 0)
    assert set(masks) == {f"blocks.1.attn.{p}.{k}" for p in "qkv" for k in ("weight", "bias")} | {"blocks.1.attn.o.weight"}
    assert masks["blocks.1.attn.q.weight"][:8].all() and not masks["blocks.1.attn.q.weight"][8:].any()
    assert masks["blocks.1.attn.o.weight"][:, :8].all() and not masks["blocks.1.attn.o.weight"][:, 8:].any()
    r = estimate_llc(model, batches, next_token_loss, param_mask=masks, chains=2, burnin=3, draws=5, batch_size=8)
    assert r.d_sampled == 4 * 8 * 16 + 3 * 8
    with pytest.raises(ValueError, match="head 2"):
        head_mask(model, 0, 2)


def test_restricted_llcs_in_one_batched_run_equal_separate_estimates():
    """estimate_restricted_llcs runs every head's chains together; each head's result must be the
    estimate_llc of that head alone (same minibatches and noise seeds), up to summation order."""
    from devinterp.llc import estimate_restricted_llcs, head_masks

    model, batches = _tiny_transformer()
    settings = dict(chains=2, burnin=3, draws=6, batch_size=8, epsilon=1e-4, gamma=100.0)
    heads = [(0, 0), (1, 1)]
    masks = head_masks(model, heads)
    together = estimate_restricted_llcs(model, batches, next_token_loss, masks, subsets_per_run=2, **settings)
    assert list(together) == heads
    for key in heads:
        alone = estimate_llc(model, batches, next_token_loss, param_mask=masks[key], **settings)
        np.testing.assert_allclose(together[key].chain_llcs, alone.chain_llcs, rtol=1e-4, atol=1e-4)
        assert together[key].d_sampled == alone.d_sampled
    # different heads really are different subsets: their traces differ
    assert not np.allclose(together[heads[0]].loss_trace, together[heads[1]].loss_trace)
    assert set(head_masks(model)) == {(layer, head) for layer in range(2) for head in range(2)}
    one_at_a_time = estimate_restricted_llcs(model, batches, next_token_loss, masks, **settings)  # CPU default
    for key in heads:
        np.testing.assert_allclose(one_at_a_time[key].chain_llcs, together[key].chain_llcs, rtol=1e-4, atol=1e-4)


def test_chain_threads_work_in_a_forked_child():
    # the worker pools are per process: a child forked after they exist must not wait on dead threads
    import multiprocessing as mp

    from devinterp.llc.chain_threads import map_on_workers

    import threading

    both = threading.Barrier(2, timeout=30)  # both worker threads exist (and then idle) in the parent

    def meet(x):
        both.wait()
        return x * 2

    assert map_on_workers(meet, [1, 2]) == [2, 4]
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        assert pool.apply_async(_double_on_workers).get(timeout=20) == [2, 4]


def _double_on_workers():
    from devinterp.llc.chain_threads import map_on_workers

    return map_on_workers(lambda x: x * 2, [1, 2])


def test_a_failing_chain_slice_stops_the_others():
    # one worker's error reaches the caller and the other slice stops instead of running on unseen
    import time

    from devinterp.llc.fused_attn_only import fused_for
    from devinterp.llc.sgld import run_chains

    model, batches = _tiny_transformer()
    flat = FlatParams.of(model)
    fused = fused_for(model, next_token_loss, flat, torch.device("cpu"), "float32")
    calls = {"slow": 0}

    class Failing(type(fused)):
        def loss_and_grad(self, W, batch):
            if W.shape[0] == 1:  # the first slice (1 chain) fails at once
                raise RuntimeError("boom")
            calls["slow"] += 1
            time.sleep(0.01)
            return super().loss_and_grad(W, batch)

    failing = Failing(model, next_token_loss, flat, torch.device("cpu"), "float32")
    data = SGLDData.from_data(batches)
    with pytest.raises(RuntimeError, match="boom"):
        run_chains(failing, flat.flatten(model), data, epsilon=1e-3, nbeta=10.0, gamma=10.0, noise_level=1.0,
                   chains=3, steps=2000, batch_size=8, seed=0, workers=2)
    time.sleep(0.2)
    assert calls["slow"] < 100  # stopped long before its 2000 steps


def test_graphed_loop_computes_what_the_eager_loop_computes():
    # the CUDA-graph loop's bookkeeping (static buffers, the minibatch gathered by a step counter on
    # the device, rows written at the counter, the warm-up undone) run on a CPU: a "capture" that
    # records the step body and replays it by calling it. Every chain must be the eager loop's.
    from devinterp.llc.fused_attn_only import fused_for
    from devinterp.llc.sgld import run_chains

    model, batches = _tiny_transformer()
    flat = FlatParams.of(model)
    w0 = flat.flatten(model)
    data = SGLDData.from_data(batches)
    masks = torch.stack([flat.mask(head_mask(model, 0, 1)), torch.ones_like(w0)])  # a restricted and a full group
    kw = dict(epsilon=1e-3, nbeta=10.0, gamma=10.0, noise_level=1.0, chains=2, steps=30, batch_size=8, seed=3,
              mask=masks, workers=1)
    for backend in (fused_for(model, next_token_loss, flat, torch.device("cpu"), "float32"),
                    VmapLoss(model, next_token_loss, flat, torch.device("cpu"), "float32")):
        recorded = []

        def capture(body):
            recorded.append(body)
            for _ in range(3):  # a warm-up that moves the weights and the counter, as on a GPU
                body()
            return body

        eager = run_chains(backend, w0, data, **kw)
        graphed = run_chains(backend, w0, data, cuda_graph=True, capture=capture, **kw)
        assert graphed.graphed and not eager.graphed and len(recorded) == 1
        assert graphed.steps_run == eager.steps_run == 30
        torch.testing.assert_close(graphed.losses, eager.losses, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(graphed.drift_norm, eager.drift_norm, rtol=1e-6, atol=1e-8)
        assert len(set(graphed.losses[-1].tolist())) == 2


def test_graph_capture_failure_falls_back_to_the_eager_loop(caplog):
    from devinterp.llc.sgld import run_chains

    model, batches = _tiny_transformer()
    flat = FlatParams.of(model)
    w0 = flat.flatten(model)
    data = SGLDData.from_data(batches)
    backend = VmapLoss(model, next_token_loss, flat, torch.device("cpu"), "float32")
    kw = dict(epsilon=1e-3, nbeta=10.0, gamma=10.0, noise_level=1.0, chains=2, steps=10, batch_size=8, seed=3)

    def capture(body):
        body()  # half a warm-up, then capture fails
        raise RuntimeError("operation not permitted when stream is capturing")

    eager = run_chains(backend, w0, data, **kw)
    with caplog.at_level("WARNING", logger="devinterp.llc.sgld"):
        fallback = run_chains(backend, w0, data, cuda_graph=True, capture=capture, **kw)
    assert not fallback.graphed and "CUDA graph capture failed" in caplog.text
    torch.testing.assert_close(fallback.losses, eager.losses)
    # on a CPU without a capture the setting does nothing, and the result says which loop ran
    r = estimate_llc(model, batches, next_token_loss, chains=2, draws=5, burnin=0, cuda_graph=True)
    assert "cuda_graph" not in r.backend


@pytest.mark.slow
@pytest.mark.parametrize("positions", ["standard", "shortformer"])
def test_compiled_fused_backend_equals_eager(positions):
    """sweep.llc.compile (used on GPUs) compiles the fused forward; on the CPU's inductor backend its
    losses and gradients are the eager ones (the GPU path is the same graph)."""
    from devinterp.llc.fused_attn_only import FusedAttnOnlyLoss

    model, batches = _tiny_transformer(positions=positions)
    flat = FlatParams.of(model)
    w = flat.flatten(model)
    W = torch.stack([w, w + 0.01 * torch.randn(w.shape, generator=torch.Generator().manual_seed(3))])
    eager = FusedAttnOnlyLoss(model, next_token_loss, flat, torch.device("cpu"), "float32")
    compiled = FusedAttnOnlyLoss(model, next_token_loss, flat, torch.device("cpu"), "float32", compile=True)
    le, ge = eager.loss_and_grad(W, batches[0])
    lc, gc = compiled.loss_and_grad(W, batches[0])
    torch.testing.assert_close(lc, le, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gc, ge, rtol=1e-4, atol=1e-6)
    assert not compiled.thread_safe
