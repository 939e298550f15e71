"""The sweep: every checkpoint x every metric group, resumable, one failure never stops the rest.

Measuring one checkpoint is the pure function :func:`measure_checkpoint` (load, build the models,
run the missing metric groups, return their rows and any errors); it writes nothing. Executors
(:mod:`devinterp.sweep.executors`: in-process, a process pool, Ray) call it wherever they run, and
the main process alone writes the Parquet files and the manifest, as results come back.

Every process builds the same :class:`~devinterp.metrics.SweepData` from the config's fixed seeds
(:func:`sweep_data`), once per process, so a checkpoint gives the same rows on every executor.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import pandas as pd
from tqdm.auto import tqdm

from devinterp.checkpoints import Checkpoint, CheckpointError, CheckpointSource
from devinterp.config import MODEL_FAMILIES, AnyModelConfig, RunConfig, config_hash
from devinterp.manifest import environment, read_manifest, update_manifest
from devinterp.recipes.registry import HEAD_SEED_OFFSET, LLC_SEED_OFFSET, check_family  # noqa: F401 (offsets re-exported)
from devinterp.sweep.errors import SweepFailed, SweepLocked
from devinterp.sweep.store import MetricStore

if TYPE_CHECKING:  # torch and the metrics load on first use: resuming a finished sweep needs neither
    from devinterp.metrics import SweepData

log = logging.getLogger("devinterp.sweep")

MODEL_CONFIGS = tuple(MODEL_FAMILIES.values())


def sweep_data(config: RunConfig, source: CheckpointSource | AnyModelConfig) -> SweepData:
    """The data every checkpoint is measured on (fixed seeds: common random numbers).

    A pure function of the config and the model config: every worker process builds the same data.
    What data, and which loss, depend on the recipe and its model family
    (:func:`devinterp.recipes.registry.sweep_data`); raises
    :class:`~devinterp.recipes.registry.FamilyMismatch` when the checkpoints are of another family.
    """
    from devinterp.recipes.registry import sweep_data as recipe_sweep_data

    model = source if isinstance(source, MODEL_CONFIGS) else source.model_config()
    return recipe_sweep_data(config, model)


# --------------------------------------------------------------------------------------------
# Measuring one checkpoint (runs in any process)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointTask:
    """One checkpoint to measure: its index in step order and the metric groups still missing."""

    index: int
    checkpoint: Checkpoint
    groups: tuple[str, ...]

    @property
    def step(self) -> int:
        return self.checkpoint.step


@dataclass
class CheckpointResult:
    """What measuring one checkpoint gave: rows per finished group, reasons per failed group
    (``"load"`` when the checkpoint itself could not be used)."""

    index: int
    step: int
    rows: dict[str, list[dict]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    worker: str = ""

    @property
    def failed(self) -> bool:
        return bool(self.errors)

    @property
    def reason(self) -> str:
        return "; ".join(v if k == "load" else f"{k}: {v}" for k, v in self.errors.items())


class _Context:
    """Per-process cache: the sweep data, the model family, and (attention-only family) one
    TransformerLens bridge reloaded per checkpoint (never deep-copied, REFERENCE.md §4)."""

    def __init__(self, config: RunConfig, model: AnyModelConfig):
        from devinterp.models.families import family

        self.data = sweep_data(config, model)
        self.device = config.device
        self.family = family(model)
        self.bridge = (self.family.build_reference(self.data.model, self.device)
                       if self.family.build_reference is not None else None)


_CONTEXTS: dict[tuple, _Context] = {}


def _context(config: RunConfig, model: AnyModelConfig) -> _Context:
    key = (config_hash(config.sweep.model_copy(update={"executor": type(config.sweep.executor)(), "strict": False})),
           config_hash(config.recipe), type(model).__name__, model.model_dump_json(), config.device)
    if key not in _CONTEXTS:
        _CONTEXTS.clear()  # one sweep at a time per process: keep memory bounded
        _CONTEXTS[key] = _Context(config, model)
    return _CONTEXTS[key]


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def measure_checkpoint(
    source: CheckpointSource,
    task: CheckpointTask,
    config: RunConfig,
    model: AnyModelConfig | None = None,
    on_group: Callable[[str, list[dict]], None] | None = None,
) -> CheckpointResult:
    """Measure ``task.groups`` at one checkpoint; never raises for a bad checkpoint or a failing group.

    Loads the weights from ``source``, builds the hook-free model (and, lazily, the bridge), runs each
    group on the sweep data (built once per process from the config's seeds) and returns the rows.
    Writes nothing; ``on_group(group, rows)`` is called as each group finishes (the in-process
    executor uses it to write each group as soon as it exists).
    """
    from devinterp.metrics import GROUPS, CheckpointModels

    t0, c0 = time.perf_counter(), time.process_time()
    result = CheckpointResult(task.index, task.step, worker=worker_name())

    def done() -> CheckpointResult:
        result.seconds, result.cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        return result

    try:
        model = model or source.model_config()
        ctx = _context(config, model)
        state_dict = source.load(task.checkpoint)
    except CheckpointError as err:
        result.errors["load"] = str(err)
        return done()
    except Exception as err:  # a source of the user's own, or building the sweep data: isolate it too
        result.errors["load"] = f"{task.checkpoint.path}: {type(err).__name__}: {err}"
        return done()
    try:
        fast = ctx.family.build_fast(ctx.data.model, state_dict).to(config.device).eval()
    except (ValueError, RuntimeError) as err:  # wrong shapes or keys: name the checkpoint
        result.errors["load"] = f"{task.checkpoint.path}: {err}"
        return done()
    models = CheckpointModels(state_dict=state_dict, fast=fast, _bridge_factory=ctx.bridge,
                              heldout_fn=ctx.data.heldout_fn)
    for group in task.groups:
        try:
            rows = GROUPS[group](models, ctx.data)
        except Exception as err:  # isolate: record and go on with the other groups
            result.errors[group] = f"{type(err).__name__}: {err}"
            continue
        result.rows[group] = rows
        if on_group is not None:
            on_group(group, rows)
    return done()


# --------------------------------------------------------------------------------------------
# The sweep (main process: plans, dispatches, writes)
# --------------------------------------------------------------------------------------------


@contextmanager
def exclusive_lock(run_dir: Path):
    """Hold ``run_dir/.sweep.lock`` (an advisory lock the OS drops when the process dies, even by
    SIGKILL) so two sweeps never write one folder; no-op where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".sweep.lock", "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            raise SweepLocked(f"{run_dir}: another sweep is writing this folder (pid {fh.read().strip() or '?'})") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def plan(source: CheckpointSource, groups: list[str], store: MetricStore) -> list[CheckpointTask]:
    """The checkpoints with at least one group missing on disk, each with its missing groups."""
    tasks = []
    for index, ckpt in enumerate(source):
        missing = tuple(g for g in groups if not store.has(ckpt.step, g))
        if missing:
            tasks.append(CheckpointTask(index, ckpt, missing))
    return tasks


def run_sweep(
    source: CheckpointSource,
    config: RunConfig,
    run_dir: str | Path,
    progress: bool = True,
    strict: bool | None = None,
    executor=None,
) -> pd.DataFrame:
    """Measure every checkpoint of ``source`` with the groups of ``config.sweep.metrics``.

    Writes ``run_dir/metrics/*.parquet`` (skipping groups already on disk; leftover temp files of a
    killed write are removed), ``llc_settings.json`` and the checkpoint statuses in
    ``manifest.json`` (updated as each checkpoint finishes); returns the whole metrics table. A
    checkpoint that cannot be loaded or measured is recorded as failed with its reason and the sweep
    goes on; with ``strict`` (default ``config.sweep.strict``) :class:`SweepFailed` is raised at the
    end if any failed. ``executor`` overrides ``config.sweep.executor`` (an ExecutorConfig or an
    executor object from :mod:`devinterp.sweep.executors`).
    """
    run_dir = Path(run_dir)
    strict = config.sweep.strict if strict is None else strict
    store = MetricStore(run_dir)
    groups = list(dict.fromkeys(config.sweep.metrics))
    with exclusive_lock(run_dir):
        removed = store.clean_temp()
        if removed:
            log.info("removed %d temp file(s) left by an interrupted write", removed)
        tasks = plan(source, groups, store)
        if tasks:  # something to measure: the checkpoints must be of the recipe's model family
            check_family(config, source.model_config())
        if "llc" in groups and tasks:
            from devinterp.sweep.calibration import frozen_llc_settings

            llc = frozen_llc_settings(source, config, run_dir)  # same settings for every checkpoint
            config = config.model_copy(update={"sweep": config.sweep.model_copy(update={"llc": llc})})
        known = read_manifest(run_dir).get("checkpoints", {})
        statuses = {str(c.step): {"status": "done"} for c in source
                    if known.get(str(c.step), {}).get("status") != "done" and all(store.has(c.step, g) for g in groups)}
        if statuses:
            update_manifest(run_dir, checkpoints=statuses)
        t0 = time.perf_counter()
        failures: dict[int, str] = {}
        if tasks:
            failures = _dispatch(source, config, run_dir, tasks, groups, store, progress, executor)
        elapsed = time.perf_counter() - t0
        desc = source.describe() if hasattr(source, "describe") else {"kind": type(source).__name__}
        ex = executor if executor is not None else config.sweep.executor
        update_manifest(run_dir, run=config.name, config_hash=config.hash(), source=desc,
                        sweep={"executor": getattr(ex, "kind", type(ex).__name__), "measured": len(tasks),
                               "failed": len(failures)},
                        timings={"sweep_seconds": round(elapsed, 2)}, **environment())
        table = store.read()
        if store.renumber({c.step: i for i, c in enumerate(source)}, table):
            log.info("checkpoint indices renumbered: the source gained checkpoints between measured ones")
            table = store.read()
    if strict and failures:
        raise SweepFailed(failures, table)
    return table


def _dispatch(source, config, run_dir, tasks, groups, store, progress, executor) -> dict[int, str]:
    from devinterp.sweep.executors import make_executor

    model = source.model_config()
    total = sum(len(t.groups) for t in tasks)
    by_index = {t.index: t for t in tasks}
    failures: dict[int, str] = {}
    bar = tqdm(total=total, desc=f"sweep {config.name}", unit="metric", disable=not progress)
    n_done = 0
    advanced = dict.fromkeys(by_index, 0)

    def write_group(index: int, group: str, rows: list[dict]) -> None:
        task = by_index[index]
        if not store.has(task.step, group):
            store.write(config.name, task.step, index, group, rows)
            advanced[index] += 1
            bar.update(1)

    def finish(result: CheckpointResult) -> None:
        nonlocal n_done
        for group, rows in result.rows.items():
            write_group(result.index, group, rows)
        bar.update(len(by_index[result.index].groups) - advanced[result.index])  # failed groups
        n_done += 1
        status = {"status": "failed", "reason": result.reason} if result.failed else {"status": "done"}
        status.update(seconds=round(result.seconds, 3), cpu_seconds=round(result.cpu_seconds, 3), worker=result.worker)
        update_manifest(run_dir, checkpoints={str(result.step): status})
        if result.failed:
            failures[result.step] = result.reason
            log.warning("checkpoint %s (%d/%d) failed: %s", result.step, n_done, len(tasks), result.reason)
        else:
            log.info("checkpoint %s (%d/%d) done in %.2fs [%s]", result.step, n_done, len(tasks), result.seconds,
                     result.worker)

    redirect = nullcontext()
    if progress:
        from tqdm.contrib.logging import logging_redirect_tqdm

        redirect = logging_redirect_tqdm()  # log lines above the bar, not through it
    ex = make_executor(executor if executor is not None else config.sweep.executor, config)
    try:
        with redirect:
            ex.run(source, config, model, tasks, write_group, finish)
    finally:
        ex.close()
        bar.close()
    return failures
