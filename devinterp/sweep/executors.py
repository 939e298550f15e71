"""Where a sweep measures its checkpoints: in-process, a local process pool, or a Ray cluster.

Every executor calls the same pure function, :func:`~devinterp.sweep.runner.measure_checkpoint`,
and hands each :class:`~devinterp.sweep.runner.CheckpointResult` back to the main process, which
alone writes the Parquet files and the manifest. Every worker builds the same sweep data from the
config's fixed seeds and runs ``sweep.threads`` torch threads, so the table is the same on every
executor.

An executor has one method that matters::

    run(source, config, model, tasks, write_group, finish)

``finish(result)`` is called in the main process once per task, as tasks complete (any order);
``write_group(index, group, rows)`` may be called earlier for single groups (the in-process
executor does, so a killed sweep keeps every group that finished).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Sequence

import torch

from devinterp.checkpoints import CheckpointSource
from devinterp.config import ExecutorConfig, ModelConfig, RunConfig
from devinterp.sweep.runner import CheckpointResult, CheckpointTask, measure_checkpoint

log = logging.getLogger("devinterp.sweep")

WriteGroup = Callable[[int, str, list], None]
Finish = Callable[[CheckpointResult], None]

# Test hook: a Ray worker whose task finds this file missing creates it and dies, once, so a test
# can check that a lost worker's task is retried. Unset in normal use.
RAY_DIE_ONCE_ENV = "DEVINTERP_TEST_RAY_DIE_ONCE"


class InProcessExecutor:
    """The checkpoints one after another in the calling process (``sweep.threads`` torch threads)."""

    kind = "local"

    def run(self, source: CheckpointSource, config: RunConfig, model: ModelConfig, tasks: Sequence[CheckpointTask],
            write_group: WriteGroup, finish: Finish) -> None:
        before = torch.get_num_threads()
        torch.set_num_threads(config.sweep.threads)
        try:
            for task in tasks:
                result = measure_checkpoint(source, task, config, model,
                                            on_group=lambda g, rows, i=task.index: write_group(i, g, rows))
                finish(result)
        finally:
            torch.set_num_threads(before)

    def close(self) -> None:
        pass


def _pool_init(threads: int) -> None:
    torch.set_num_threads(threads)


def _pool_measure(source, task, config, model) -> CheckpointResult:
    return measure_checkpoint(source, task, config, model)


class PoolExecutor:
    """``workers`` spawned processes (``sweep.threads`` torch threads each), one checkpoint per call.

    If a worker dies (killed, out of memory), the pool breaks: the unfinished checkpoints go to a
    fresh pool, and one that has now been in flight in ``attempts`` broken pools is recorded as
    failed with that reason (a rerun measures it again).
    """

    kind = "local"

    def __init__(self, workers: int, attempts: int = 3):
        self.workers, self.attempts = workers, attempts

    def run(self, source, config, model, tasks, write_group, finish) -> None:
        import multiprocessing as mp

        pending = list(tasks)
        tries = {t.index: 0 for t in tasks}
        while pending:
            pool = ProcessPoolExecutor(min(self.workers, len(pending)), mp_context=mp.get_context("spawn"),
                                       initializer=_pool_init, initargs=(config.sweep.threads,))
            try:
                futures = {pool.submit(_pool_measure, source, t, config, model): t for t in pending}
                pending = []
                not_done = set(futures)
                while not_done:
                    done, not_done = wait(not_done, return_when=FIRST_COMPLETED)
                    for fut in done:
                        task = futures[fut]
                        try:
                            result = fut.result()
                        except BrokenProcessPool as err:
                            tries[task.index] += 1
                            if tries[task.index] < self.attempts:
                                pending.append(task)
                                continue
                            result = CheckpointResult(task.index, task.step, errors={
                                "load": f"worker process died {self.attempts} times while measuring it: {err}"})
                        finish(result)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
            pending.sort(key=lambda t: t.index)

    def close(self) -> None:
        pass


def _ray_measure(source, task, config, model):
    """The body of one Ray task (runs in a Ray worker process; cached data persist across tasks)."""
    marker = os.environ.get(RAY_DIE_ONCE_ENV)
    if marker and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)  # simulate a lost worker: Ray retries the task
    torch.set_num_threads(config.sweep.threads)
    return measure_checkpoint(source, task, config, model)


class RayExecutor:
    """One Ray task per checkpoint on a cluster (``address``) or a local one started here.

    Each task asks for ``cpus_per_task`` CPUs and ``gpus_per_task`` GPUs (default: 1 when the config's
    device is cuda) and is retried up to ``max_retries`` times when its worker dies. Workers read the
    checkpoints themselves, so the source must be reachable from every node (a shared folder, or the
    Hugging Face cache pre-fetched on each node).
    """

    kind = "ray"

    def __init__(self, settings: ExecutorConfig, device: str = "cpu"):
        try:
            import ray
        except ImportError:
            raise ImportError("executor kind 'ray' needs Ray: pip install 'devinterp-phases[ray]'") from None
        self.ray = ray
        self.settings = settings
        self.gpus = settings.gpus_per_task
        if self.gpus is None:
            self.gpus = 1.0 if str(device).startswith("cuda") else 0.0
        self._started_here = False
        if not ray.is_initialized():
            kwargs = dict(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
            if settings.runtime_env:
                kwargs["runtime_env"] = settings.runtime_env
            if settings.address is None:
                ray.init(num_cpus=settings.workers, **kwargs)
            else:
                ray.init(address=settings.address, **kwargs)
            self._started_here = True

    def run(self, source, config, model, tasks, write_group, finish) -> None:
        ray = self.ray
        remote = ray.remote(_ray_measure).options(
            num_cpus=self.settings.cpus_per_task, num_gpus=self.gpus, max_retries=self.settings.max_retries,
            retry_exceptions=False,
        )
        source_ref, config_ref, model_ref = ray.put(source), ray.put(config), ray.put(model)
        refs = {remote.remote(source_ref, t, config_ref, model_ref): t for t in tasks}
        not_done = list(refs)
        while not_done:
            done, not_done = ray.wait(not_done, num_returns=1)
            for ref in done:
                task = refs[ref]
                try:
                    result = ray.get(ref)
                except Exception as err:  # worker lost more than max_retries times, or a Ray error
                    result = CheckpointResult(task.index, task.step,
                                              errors={"load": f"ray task failed: {type(err).__name__}: {err}"[:2000]})
                finish(result)

    def close(self) -> None:
        if self._started_here:
            self.ray.shutdown()


def make_executor(spec, config: RunConfig):
    """An executor object from an :class:`ExecutorConfig` (or pass an executor object through)."""
    if not isinstance(spec, ExecutorConfig):
        return spec
    if spec.kind == "ray":
        return RayExecutor(spec, device=config.device)
    if spec.workers > 1:
        return PoolExecutor(spec.workers)
    return InProcessExecutor()
