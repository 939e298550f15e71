"""Run independent slices of SGLD chains on CPU worker threads.

On a CPU the fused step of a small model is made of many small kernels; splitting each kernel over
the intra-op threads costs more than it gains. Giving each thread its own slice of chains for the
whole run, with one intra-op thread (``torch threads // workers``), is faster: chains are
independent given the shared minibatch schedule, so the slices never wait for each other
(scripts/bench_chain_threads.py; BENCHMARKS.md, "CPU, quickstart model"). PyTorch kernels
release the GIL, so the slices run in parallel; the intra-op thread count is thread-local, so the
workers' setting leaves the caller's alone.

Only computations that are pure functions of their inputs may run this way (the fused forward is
one): anything that swaps parameters on a shared module (``functional_call``) is not thread-safe.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Callable, Sequence, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}
# a forked child inherits the pools but not their threads: it must make its own
os.register_at_fork(after_in_child=_POOLS.clear)


def _pool(workers: int, threads_each: int) -> ThreadPoolExecutor:
    key = (workers, threads_each)
    if key not in _POOLS:
        _POOLS[key] = ThreadPoolExecutor(workers, thread_name_prefix="devinterp-chains",
                                         initializer=torch.set_num_threads, initargs=(threads_each,))
    return _POOLS[key]


def worker_count(chains: int, device: torch.device) -> int:
    """How many slices to split ``chains`` into: ``min(chains, torch threads)`` on a CPU, else 1."""
    if device.type != "cpu":
        return 1
    return max(1, min(chains, torch.get_num_threads()))


def chain_slices(chains: int, workers: int) -> list[slice]:
    """``workers`` contiguous, near-equal slices of ``range(chains)`` (fewer if chains < workers)."""
    workers = max(1, min(workers, chains))
    bounds = [round(i * chains / workers) for i in range(workers + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


def map_on_workers(fn: Callable[[T], R], items: Sequence[T], stop: threading.Event | None = None) -> list[R]:
    """``[fn(item) for item in items]``, one worker thread per item when there are several.

    Each worker runs with ``torch threads // len(items)`` intra-op threads (at least 1).
    Exceptions are re-raised in the caller. If one worker fails or the caller is interrupted
    (Ctrl-C), ``stop`` is set so that long-running ``fn``s that poll it can return early instead
    of running on unseen.
    """
    if len(items) <= 1:
        return [fn(item) for item in items]
    threads_each = max(1, torch.get_num_threads() // len(items))
    futures = [_pool(len(items), threads_each).submit(fn, item) for item in items]
    try:
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)  # a failure is seen at once, not after the rest
        failed = [f.exception() for f in futures if f in done and f.exception() is not None]
        if failed:
            raise failed[0]
        return [f.result() for f in futures]
    except BaseException:
        if stop is not None:
            stop.set()
        raise
