"""Measure a user's own training run as it trains: a callback for a plain PyTorch loop.

::

    monitor = StageMonitor(config, out="out", every=50, llc_every=200)
    for step in range(steps):
        ...                       # train
        monitor(step, model)      # any model of the recipe's family (its state_dict is what is read)
    monitor.close()

The model is read through its ``state_dict`` and measured as its family's model (the config's
``recipe.model``: an attention-only transformer, as a TransformerLens bridge or
:class:`~devinterp.models.attn_only.AttnOnlyTransformer`, or an in-context-regression
:class:`~devinterp.models.icl_transformer.ICLTransformer`; tests cover both).

Every ``every`` steps the cheap metric groups (``loss``, ``icl_score``, ``heads``) are measured,
every ``llc_every`` steps also ``llc``; only groups listed in ``config.sweep.metrics`` are measured.
Measuring is :func:`devinterp.sweep.runner.measure_checkpoint` on the sweep data of
:func:`~devinterp.sweep.runner.sweep_data` with the SGLD settings frozen in ``llc_settings.json``,
so the rows are exactly those an offline sweep of the same weights gives. They are written to the
run folder's store (``out/<name>/metrics/<step:08d>__<group>.parquet``, atomically), so
:func:`devinterp.load_results` reads them while training goes on. With ``save=True`` (default)
each measured step's weights are also saved to ``out/<name>/checkpoints/<step>.safetensors`` (with
``index.csv``), so ``devinterp sweep`` can later fill in what was not measured (e.g. the LLC at
the cheap-only steps) with the same checkpoint numbering.

After each measurement with at least ``min_llc_checkpoints`` LLC checkpoints, stages are detected
on the table so far (``config.detect`` settings; errors are logged, never raised) and one line is
logged (logger ``devinterp.monitor``) for each boundary not found by the previous detection.
Detection's warnings (a non-local posterior, unhealthy LLCs dropped) are logged as warnings when
they first appear, not again at every update while they hold. The latest stages table is
``monitor.stages`` (and ``stages.csv`` in the run folder).

The monitor holds the run folder's sweep lock until :meth:`close` (or the end of a ``with``
block), so an offline sweep never writes the same folder at the same time. Measuring neither
changes the model nor the global random state of the training loop.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from contextlib import ExitStack
from pathlib import Path

import pandas as pd

from devinterp import _io
from devinterp.config import RunConfig

log = logging.getLogger("devinterp.monitor")

CHEAP_GROUPS = ("loss", "icl_score", "heads")


class _MemorySource:
    """A one-checkpoint source holding the weights in memory (for ``measure_checkpoint``)."""

    def __init__(self, state_dict, model):
        self._state_dict, self._model = state_dict, model

    def load(self, ckpt):
        return self._state_dict

    def model_config(self):
        return self._model


class StageMonitor:
    """Callback that measures a training run every ``every`` steps (see the module docstring).

    Args:
        config: the run's config (architecture in ``config.recipe.model``; measurement settings in
            ``config.sweep``; ``sweep.calibrate`` must be ``off``, as the SGLD settings are frozen
            before the first checkpoint exists).
        out: the output folder; the run folder is ``out/<config.name>``.
        every: measure the cheap groups at steps divisible by ``every``.
        llc_every: measure ``llc`` too at steps divisible by ``llc_every`` (``None``: never).
        save: save each measured step's weights to ``checkpoints/``.
        detect: run stage detection after each measurement.
        min_llc_checkpoints: LLC checkpoints needed before detection runs.
    """

    def __init__(self, config: RunConfig, out: str | Path = "out", every: int = 50, llc_every: int | None = 200,
                 save: bool = True, detect: bool = True, min_llc_checkpoints: int = 5):
        from devinterp.api import prepare_run_dir
        from devinterp.sweep.calibration import frozen_llc_settings
        from devinterp.sweep.runner import exclusive_lock
        from devinterp.sweep.store import MetricStore

        if every < 1 or (llc_every is not None and llc_every < 1):
            raise ValueError("every and llc_every must be positive")
        if config.sweep.calibrate != "off":
            raise ValueError("StageMonitor needs sweep.calibrate: off (SGLD settings are frozen before training); "
                             "calibrate on a finished run with calibrate_llc and put the result in sweep.llc")
        self.every, self.llc_every, self.save, self.detect = every, llc_every, save, detect
        self.min_llc_checkpoints = min_llc_checkpoints
        self.run_dir = prepare_run_dir(config, out)
        self._stack = ExitStack()
        self._stack.enter_context(exclusive_lock(self.run_dir))
        self.store = MetricStore(self.run_dir)
        self.store.clean_temp()
        llc = frozen_llc_settings(None, config, self.run_dir)  # calibrate off: the source is not read
        self.config = config.model_copy(update={"sweep": config.sweep.model_copy(update={"llc": llc})})
        self.model_config = config.recipe.model
        self.groups = list(dict.fromkeys(config.sweep.metrics))
        self.ckpt_dir = self.run_dir / "checkpoints"
        index_path = self.ckpt_dir / "index.csv"
        self._index = pd.read_csv(index_path).to_dict("records") if index_path.is_file() else []
        # steps already measured or saved (a resumed run): checkpoint numbers continue from them
        self._steps = {int(r["step"]) for r in self._index}
        if self.store.folder.is_dir():
            self._steps |= {int(p.name.split("__")[0]) for p in self.store.folder.glob("*.parquet")}
        self._boundaries: set[int] = set()
        self._warning_kinds: set[str] = set()  # detection's warnings at the last update, numbers masked
        self.stages: pd.DataFrame | None = None
        self.failures: dict[int, str] = {}
        self._closed = False

    # ------------------------------------------------------------------------------------------
    def groups_at(self, step: int) -> list[str]:
        """The metric groups measured at ``step`` (empty when the step is not measured)."""
        wanted = []
        if step % self.every == 0:
            wanted += CHEAP_GROUPS
        if self.llc_every is not None and step % self.llc_every == 0:
            wanted.append("llc")
        return [g for g in self.groups if g in wanted]

    def __call__(self, step: int, model) -> pd.DataFrame | None:
        """Measure ``model`` at ``step`` if the step is due; returns the rows written (or None)."""
        groups = self.groups_at(step)
        if not groups:
            return None
        return self.measure(step, model, groups)

    def measure(self, step: int, model, groups: list[str] | None = None) -> pd.DataFrame:
        """Measure ``groups`` (default: those due at ``step``) now, write them, detect; returns the rows."""
        import torch

        from devinterp.checkpoints import Checkpoint, save_checkpoint
        from devinterp.manifest import update_manifest
        from devinterp.sweep.runner import CheckpointTask, measure_checkpoint

        if self._closed:
            raise RuntimeError("StageMonitor is closed")
        groups = [g for g in (groups if groups is not None else self.groups_at(step)) if not self.store.has(step, g)]
        state_dict = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        path = self.ckpt_dir / f"{step}.safetensors"
        if self.save and not path.is_file():
            save_checkpoint(path, state_dict, step=step, model=self.model_config)
            self._index = [r for r in self._index if int(r["step"]) != step] + [{"step": step, "file": path.name}]
            self._index.sort(key=lambda r: int(r["step"]))
            _io.write_csv(self.ckpt_dir / "index.csv", pd.DataFrame(self._index))
        self._steps.add(step)
        index = sum(s < step for s in self._steps)  # 0-based in step order, as the offline sweep numbers them
        written = []
        if groups:
            before = torch.get_num_threads()
            torch.set_num_threads(self.config.sweep.threads)
            t0 = time.perf_counter()
            try:
                with torch.random.fork_rng(devices=[]):  # building the bridge seeds torch: keep the loop's RNG
                    result = measure_checkpoint(_MemorySource(state_dict, self.model_config),
                                                CheckpointTask(index, Checkpoint(step, path), tuple(groups)),
                                                self.config, self.model_config)
            finally:
                torch.set_num_threads(before)
            for group, rows in result.rows.items():
                self.store.write(self.config.name, step, index, group, rows)
                written.append(group)
            status = {"status": "failed", "reason": result.reason} if result.failed else {"status": "done"}
            status.update(seconds=round(result.seconds, 3), groups=written)
            update_manifest(self.run_dir, checkpoints={str(step): status})
            if result.failed:
                self.failures[step] = result.reason
                log.warning("step %d: measuring failed: %s", step, result.reason)
            else:
                log.debug("step %d: measured %s in %.2fs", step, ",".join(written), time.perf_counter() - t0)
        table = self.store.read()
        if self.detect and written:
            self._detect(table, step)
        return table[table["step"] == step] if not table.empty else table

    # ------------------------------------------------------------------------------------------
    def _detect(self, table: pd.DataFrame, step: int) -> None:
        if table.empty:
            return
        llc = table[(table["metric"] == "llc") & table["chain"].isna()]
        if llc["step"].nunique() < self.min_llc_checkpoints:
            return
        from devinterp.transitions import detect_stages

        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                stages = detect_stages(table, **self.config.detect.model_dump())
        except Exception as err:  # detection is advisory here: never stop the training loop
            log.warning("step %d: stage detection failed: %s: %s", step, type(err).__name__, err)
            return
        self._log_new_warnings(step, [str(w.message) for w in caught])
        self.stages = stages
        _io.write_csv(self.run_dir / "stages.csv", stages)
        later = stages[stages["stage"] > 1]
        boundaries = {int(s) for s in later["start_step"]}
        for r in later.itertuples():
            if int(r.start_step) not in self._boundaries:
                log.info("step %d: stage %d (type %s) began at step %d (confidence %.2f, %d LLC checkpoints)",
                         step, int(r.stage), r.type, int(r.start_step), float(r.confidence),
                         llc["step"].nunique())
        self._boundaries = boundaries

    def _log_new_warnings(self, step: int, messages: list[str]) -> None:
        """Log detection's warnings (e.g. the locality check, unhealthy rows dropped) once each: a
        message is new when it differs from every one of the previous detection other than in its
        numbers, so a warning that holds at every update is logged when it first appears (and again
        only after it has cleared)."""
        kinds = {re.sub(r"[-+]?\d[\d.,e+-]*", "#", m): m for m in messages}
        for kind, message in kinds.items():
            if kind not in self._warning_kinds:
                log.warning("step %d: %s", step, message)
        self._warning_kinds = set(kinds)

    def close(self) -> None:
        """Release the run folder's lock (the folder then belongs to ``devinterp sweep``/``detect``)."""
        if not self._closed:
            self._closed = True
            self._stack.close()

    def __enter__(self) -> "StageMonitor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["StageMonitor", "CHEAP_GROUPS"]
