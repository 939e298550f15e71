"""Sweep runner (checkpoints x metric groups), its Parquet store and its executors (local, ray).

Names load on first use, so ``devinterp.sweep.errors`` stays importable without torch. Calling the
package, ``devinterp.sweep(source, config, out)``, runs :func:`devinterp.api.sweep` (the public API
function of the same name; see :mod:`devinterp._callable_module`).
"""

from __future__ import annotations

from importlib import import_module

from devinterp._callable_module import make_callable
from devinterp.sweep.errors import SweepFailed, SweepLocked

make_callable(__name__, "devinterp.api:sweep")

_LAZY = {
    "CheckpointResult": "devinterp.sweep.runner",
    "CheckpointTask": "devinterp.sweep.runner",
    "measure_checkpoint": "devinterp.sweep.runner",
    "run_sweep": "devinterp.sweep.runner",
    "sweep_data": "devinterp.sweep.runner",
    "MetricStore": "devinterp.sweep.store",
}

__all__ = ["SweepFailed", "SweepLocked", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'devinterp.sweep' has no attribute {name!r}")
