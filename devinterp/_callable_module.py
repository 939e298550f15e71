"""Let a submodule that shares its name with a public function be called like that function.

``devinterp.sweep`` (the function of DESIGN.md's API) and ``devinterp/sweep/`` (the package) share a
name, as do ``devinterp.refine`` and ``devinterp/refine.py``. Python sets ``devinterp.sweep`` to the
submodule as soon as anything imports it, hiding the function; making the module object callable
keeps ``devinterp.sweep(source, config, out)`` working whatever was imported first.
"""

from __future__ import annotations

import sys
import types
from importlib import import_module


def make_callable(module_name: str, target: str) -> None:
    """Calling module ``module_name`` calls ``target`` ("package.module:function"), imported on first call."""
    where, name = target.split(":")

    class CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return getattr(import_module(where), name)(*args, **kwargs)

    sys.modules[module_name].__class__ = CallableModule
