"""The sweep: every checkpoint x every metric group, resumable, one failure never stops the rest."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from devinterp import _io
from devinterp.checkpoints import CheckpointError, DirectorySource
from devinterp.config import RunConfig
from devinterp.manifest import environment, update_manifest
from devinterp.metrics import GROUPS, CheckpointModels, SweepData
from devinterp.models.attn_only import AttnOnlyTransformer, build_bridge
from devinterp.recipes.data import fixed_batches
from devinterp.sweep.store import MetricStore

log = logging.getLogger("devinterp.sweep")

# Offsets from sweep.eval_seed for each data set, so they never share a random stream.
HEAD_SEED_OFFSET, LLC_SEED_OFFSET = 1, 2


def sweep_data(config: RunConfig, source: DirectorySource) -> SweepData:
    """The data every checkpoint is measured on (fixed seeds: common random numbers)."""
    model = source.model_config()
    s, recipe = config.sweep, config.recipe
    eval_batches = fixed_batches(s.eval_sequences, s.eval_batch_size, model.n_ctx, model.d_vocab, recipe.data, s.eval_seed)
    from devinterp.metrics.heads import repeated_random_tokens

    head_tokens = repeated_random_tokens(s.head_sequences, model.n_ctx // 2, model.d_vocab, s.eval_seed + HEAD_SEED_OFFSET)
    llc_batches = fixed_batches(
        s.llc_sequences, s.llc.batch_size, model.n_ctx, model.d_vocab, recipe.data, s.eval_seed + LLC_SEED_OFFSET
    )
    return SweepData(model=model, eval_batches=eval_batches, head_tokens=head_tokens, llc_batches=llc_batches,
                     llc_settings=s.llc, device=config.device)


def run_sweep(source: DirectorySource, config: RunConfig, run_dir: str | Path, progress: bool = True) -> pd.DataFrame:
    """Measure every checkpoint of ``source`` with the groups of ``config.sweep.metrics``.

    Writes ``run_dir/metrics/*.parquet`` (skipping groups already on disk), ``llc_settings.json`` and
    the checkpoint statuses in ``manifest.json``; returns the whole metrics table. A checkpoint that
    cannot be loaded or measured is recorded as failed with its reason and the sweep goes on.
    """
    run_dir = Path(run_dir)
    store = MetricStore(run_dir)
    torch.set_num_threads(config.sweep.threads)
    data = sweep_data(config, source)
    groups = list(dict.fromkeys(config.sweep.metrics))
    if "llc" in groups:
        _io.write_json(run_dir / "llc_settings.json", {"settings": config.sweep.llc.model_dump(), "calibration": None})

    todo = [(i, c) for i, c in enumerate(source) if not all(store.has(c.step, g) for g in groups)]
    statuses: dict[str, dict] = {}
    bridge = None
    t0 = time.perf_counter()
    bar = tqdm(total=len(todo) * len(groups), desc=f"sweep {config.name}", unit="metric", disable=not progress)
    for index, ckpt in todo:
        missing = [g for g in groups if not store.has(ckpt.step, g)]
        bar.set_postfix(step=ckpt.step)
        try:
            state_dict = source.load(ckpt)
            fast = AttnOnlyTransformer.from_state_dict(data.model, state_dict).to(config.device).eval()
        except (CheckpointError, ValueError) as err:
            statuses[str(ckpt.step)] = {"status": "failed", "reason": str(err)}
            log.warning("checkpoint %s failed: %s", ckpt.step, err)
            bar.update(len(missing))
            continue
        if bridge is None:
            bridge = build_bridge(data.model, device=config.device)

        def load_bridge(sd, _bridge=bridge):
            _bridge.load_state_dict(sd)
            return _bridge

        models = CheckpointModels(state_dict=state_dict, fast=fast, _bridge_factory=load_bridge)
        failed = []
        for group in missing:
            try:
                store.write(config.name, ckpt.step, index, group, GROUPS[group](models, data))
            except Exception as err:  # isolate: record and go on with the rest
                failed.append(f"{group}: {type(err).__name__}: {err}")
                log.warning("checkpoint %s, metric %s failed: %s", ckpt.step, group, err)
            bar.update(1)
        statuses[str(ckpt.step)] = {"status": "failed", "reason": "; ".join(failed)} if failed else {"status": "done"}
        if progress:
            bar.write(f"checkpoint {ckpt.step}: {statuses[str(ckpt.step)]['status']}")
    bar.close()
    elapsed = time.perf_counter() - t0
    for c in source:
        statuses.setdefault(str(c.step), {"status": "done"})
    update_manifest(run_dir, run=config.name, config_hash=config.hash(), checkpoints=statuses,
                    timings={"sweep_seconds": round(elapsed, 2)}, **environment())
    return store.read()
