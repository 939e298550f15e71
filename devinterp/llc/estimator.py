"""``estimate_llc``: the local learning coefficient of a model at its current weights.

Pipeline (one job per step): settings and data are resolved, the weights become one flat vector
``w*`` (:mod:`params`), a backend computes every chain's loss and gradient at once
(:mod:`backends`), :func:`~devinterp.llc.sgld.run_chains` advances the chains, and
:mod:`diagnostics` judges the traces.

Estimate (REFERENCE.md §1.2, §1.4): per chain c, llc_c = nbeta * (mean_t L^(c,t) - L_n(w*)) over
the draws after burn-in (every ``thin``-th step); llc = mean_c llc_c, stderr = std_c / sqrt(C).
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Hashable, Iterable

import numpy as np
import torch
from pydantic import ValidationError
from torch import Tensor, nn

from devinterp.config import LLCSettings
from devinterp.llc.backends import make_chain_loss
from devinterp.llc.data import SGLDData
from devinterp.llc.diagnostics import diagnose
from devinterp.llc.params import FlatParams
from devinterp.llc.result import LLCResult
from devinterp.llc.sgld import run_chains


def resolve_settings(settings: LLCSettings | None, overrides: dict[str, Any]) -> LLCSettings:
    """``settings`` (default ``LLCSettings()``) with ``overrides`` applied and validated."""
    base = settings if settings is not None else LLCSettings()
    if not isinstance(base, LLCSettings):
        raise TypeError(f"settings must be an LLCSettings, got {type(base).__name__}")
    if not overrides:
        return base
    unknown = sorted(set(overrides) - set(LLCSettings.model_fields))
    if unknown:
        raise TypeError(f"unknown LLC setting(s) {unknown}; allowed: {sorted(LLCSettings.model_fields)}")
    try:
        return LLCSettings.model_validate({**base.model_dump(), **overrides})
    except ValidationError as err:
        raise ValueError(f"invalid LLC setting: {err}") from None


def resolve_nbeta(settings: LLCSettings, n: int | None, n_source: str) -> tuple[float, str]:
    """nbeta and a description of where it came from: the setting, or n/log(n)."""
    if settings.nbeta is not None:
        return float(settings.nbeta), "settings.nbeta"
    if n is None:
        raise ValueError(
            "cannot set nbeta = n/log(n): the number of samples n is unknown for this data "
            "(batches are not tensors); pass n=... or settings.nbeta"
        )
    if n <= 1:
        raise ValueError(f"nbeta = n/log(n) needs n > 1 samples, got n={n}; pass settings.nbeta instead")
    return n / math.log(n), f"n/log(n) with n={n} ({n_source})"


def _init_loss(chain_loss, w0: Tensor, data: SGLDData, settings: LLCSettings) -> tuple[float, float]:
    """L_n(w*) averaged (sample-weighted) over the init batches, and its standard error."""
    batches, sizes, fpc = data.init_batches(settings.init_loss_batches, settings.batch_size, settings.seed)
    vals = np.array([float(chain_loss.loss(w0.unsqueeze(0), b)[0]) for b in batches])
    mean = float(np.average(vals, weights=sizes))
    se = float(vals.std(ddof=1) / math.sqrt(len(vals)) * math.sqrt(max(fpc, 0.0))) if len(vals) > 1 else (
        0.0 if fpc <= 0 else float("nan"))
    return mean, se


def estimate_llc(
    model: nn.Module,
    data: Iterable[Any],
    loss_fn: Callable[[nn.Module, Any], Tensor],
    *,
    settings: LLCSettings | None = None,
    n: int | None = None,
    device: torch.device | str | None = None,
    param_mask: dict[str, Tensor | bool] | None = None,
    **overrides: Any,
) -> LLCResult:
    """Estimate the LLC of ``model`` at its current weights w* by SGLD (REFERENCE.md §1.3).

    model:      any ``nn.Module`` (left unchanged; never copied). Its trainable parameters are sampled.
    data:       a re-iterable of batches (list of tensors, DataLoader, ...): read once, pooled, and
                re-batched to ``settings.batch_size`` in a seed-fixed order (see :mod:`devinterp.llc.data`).
    loss_fn:    ``loss_fn(model, batch) -> scalar`` mean loss of the batch (nats for nbeta to mean
                what it says).
    settings:   :class:`~devinterp.config.LLCSettings` (defaults there); ``**overrides`` replace
                single fields, e.g. ``estimate_llc(m, d, f, epsilon=1e-4)``.
    n:          number of samples behind nbeta = n/log(n); default: ``len(data.dataset)`` for a
                DataLoader, else the number of pooled samples. Ignored when ``settings.nbeta`` is set.
    device:     where to sample; default the model's device (the model must live there).
    param_mask: ``{parameter name: bool tensor of its shape | bool}``; only those coordinates are
                sampled (weight-restricted LLC, §1.7), every other parameter is frozen at w*.

    Returns an :class:`LLCResult`. Deterministic for a given ``settings.seed`` (same minibatches and
    noise at every call, whatever the weights: common random numbers).
    """
    settings = resolve_settings(settings, overrides)
    return _estimate_groups(model, data, loss_fn, settings, n, device, [param_mask])[0]


def estimate_restricted_llcs(
    model: nn.Module,
    data: Iterable[Any],
    loss_fn: Callable[[nn.Module, Any], Tensor],
    masks: dict[Hashable, dict[str, Tensor | bool] | None],
    *,
    settings: LLCSettings | None = None,
    n: int | None = None,
    device: torch.device | str | None = None,
    subsets_per_run: int | None = None,
    **overrides: Any,
) -> dict[Hashable, LLCResult]:
    """Weight-restricted LLCs of several parameter subsets (e.g. every attention head), batched.

    ``masks``: ``{key: param_mask}`` as for :func:`estimate_llc` (e.g. ``{(1, 2): head_mask(model, 1, 2)}``).
    ``subsets_per_run`` subsets advance together, ``subsets_per_run * settings.chains`` chains in one
    batched forward/backward per step. Default: all of them on CUDA (where one big batch beats many
    small kernel launches) and one at a time on a CPU (measured: batching the 8 heads of the
    quickstart model ran 0.71x as fast as one head after another, the larger activations falling
    out of cache; BENCHMARKS.md). The chains of each subset use the same minibatches and noise
    seeds as ``estimate_llc(..., param_mask=masks[key])`` would, so each result equals that call's
    (measured: identical) whatever the batching. Returns ``{key: LLCResult}``; each result's
    ``seconds`` and ``chain_steps_per_s`` describe the run it was part of.
    """
    if not masks:
        raise ValueError("masks is empty: give at least one parameter subset")
    settings = resolve_settings(settings, overrides)
    keys = list(masks)
    if subsets_per_run is None:
        first = next(iter(model.parameters()), None)
        where = torch.device(device) if device is not None else (first.device if first is not None else None)
        subsets_per_run = len(keys) if where is not None and where.type == "cuda" else 1
    if subsets_per_run < 1:
        raise ValueError(f"subsets_per_run must be at least 1, got {subsets_per_run}")
    results: list[LLCResult] = []
    for i in range(0, len(keys), subsets_per_run):
        chunk = keys[i: i + subsets_per_run]
        results += _estimate_groups(model, data, loss_fn, settings, n, device, [masks[k] for k in chunk])
    return dict(zip(keys, results))


def _estimate_groups(model, data, loss_fn, settings: LLCSettings, n, device, param_masks: list) -> list[LLCResult]:
    """One SGLD run of ``len(param_masks) * settings.chains`` chains; group g's chains are restricted to
    ``param_masks[g]`` (None: every parameter) and chain c of every group uses noise seed ``seed + c``."""
    first = next(iter(model.parameters()), None)
    if first is None:
        raise ValueError(f"{type(model).__name__} has no parameters")
    device = torch.device(device) if device is not None else first.device
    if first.device.type != device.type:
        raise ValueError(f"the model is on {first.device} but device={device} was asked; move the model there first")
    flat = FlatParams.of(model)
    w0 = flat.flatten(model, device)
    masks = [flat.mask(pm, device) for pm in param_masks]
    sdata = SGLDData.from_data(data, n=n, device=device)
    nbeta, nbeta_source = resolve_nbeta(settings, sdata.n, sdata.n_source)

    probe_batch = sdata.batch(None if sdata.raw_batches is None and sdata.n_pooled <= settings.batch_size
                              else (0 if sdata.raw_batches is not None else torch.arange(settings.batch_size)))
    chain_loss, backend = make_chain_loss(
        model, loss_fn, flat, device, settings.compute_dtype, settings.backend,
        probe=(w0.unsqueeze(0).repeat(min(settings.chains, 2), 1), probe_batch), compile=settings.compile,
    )
    init_loss, init_se = _init_loss(chain_loss, w0, sdata, settings)

    C, G = settings.chains, len(masks)
    if G == 1:
        mask, offsets = masks[0], None
    else:
        ones = torch.ones_like(w0)
        mask = torch.stack([m if m is not None else ones for m in masks]).repeat_interleave(C, dim=0)
        offsets = list(range(C)) * G
    steps = settings.burnin + settings.draws * settings.thin
    t0 = time.perf_counter()
    run = run_chains(
        chain_loss, w0, sdata, epsilon=settings.epsilon, nbeta=nbeta, gamma=settings.gamma,
        noise_level=settings.noise_level, chains=C * G, steps=steps, batch_size=settings.batch_size,
        seed=settings.seed, mask=mask, seed_offsets=offsets, cuda_graph=settings.cuda_graph,
    )
    if run.graphed:
        backend += "+cuda_graph"
    seconds = time.perf_counter() - t0
    losses = run.losses.double().numpy().T  # [G*C, steps]
    results = []
    for g, m in enumerate(masks):
        chains = slice(g * C, (g + 1) * C)
        d_sampled = int(m.sum()) if m is not None else flat.d
        noise_norm = math.sqrt(settings.epsilon) * settings.noise_level * math.sqrt(d_sampled)
        results.append(_summarise(
            losses[chains], run.drift_norm[settings.burnin: run.steps_run, chains], noise_norm, settings,
            init_loss=init_loss, init_se=init_se, nbeta=nbeta, nbeta_source=nbeta_source, n=sdata.n,
            d_sampled=d_sampled, backend=backend, seconds=seconds,
            chain_steps_per_s=C * G * run.steps_run / max(seconds, 1e-12)))
    return results


def _summarise(losses: np.ndarray, drift: Tensor, noise_norm: float, settings: LLCSettings, *, init_loss: float,
               init_se: float, nbeta: float, nbeta_source: str, n: int | None, d_sampled: int, backend: str,
               seconds: float, chain_steps_per_s: float) -> LLCResult:
    """The estimate, its stderr and diagnosis from one group's ``losses: Float[chains, steps]``."""
    burnin_trace = losses[:, : settings.burnin]
    loss_trace = losses[:, settings.burnin :: settings.thin][:, : settings.draws]
    chain_llcs = nbeta * (loss_trace.mean(axis=1) - init_loss)
    llc = float(chain_llcs.mean())
    stderr = float(chain_llcs.std(ddof=1) / math.sqrt(len(chain_llcs))) if len(chain_llcs) > 1 else float("nan")
    diag = diagnose(loss_trace, chain_llcs, llc=llc, stderr=stderr, init_loss=init_loss,
                    init_loss_stderr=init_se, nbeta=nbeta, d_sampled=d_sampled)
    drift = drift.double()
    stats = dict(diag.stats)
    stats["drift_noise_ratio"] = float(drift.mean()) / noise_norm if noise_norm > 0 and drift.numel() else float("nan")
    wbic = None
    if settings.wbic:
        if n is None:
            raise ValueError("settings.wbic needs the number of samples n; pass n=...")
        wbic = float(n * loss_trace.mean())
    return LLCResult(
        llc=llc, stderr=stderr, chain_llcs=chain_llcs, loss_trace=loss_trace, burnin_trace=burnin_trace,
        init_loss=init_loss, init_loss_stderr=init_se, nbeta=nbeta, nbeta_source=nbeta_source, n=n,
        healthy=diag.healthy, reasons=diag.reasons, settings=settings, d_sampled=d_sampled, backend=backend,
        seconds=seconds, chain_steps_per_s=chain_steps_per_s, diagnostics=stats, wbic=wbic,
    )
