"""Training recipes: each turns a recipe config (``config.recipe``, chosen by its ``name``) into a
checkpoint folder. :func:`train_recipe` dispatches by name (:mod:`devinterp.recipes.registry`).

Names load on first use, so the registry (and what imports it) stays importable without torch.
"""

from __future__ import annotations

from importlib import import_module

_LAZY = {
    "checkpoint_schedule": "devinterp.recipes.schedule",
    "fixed_batches": "devinterp.recipes.data",
    "induction_batch": "devinterp.recipes.data",
    "train_induction": "devinterp.recipes.induction",
    "fixed_regression_batches": "devinterp.recipes.icl_regression",
    "regression_batch": "devinterp.recipes.icl_regression",
    "train_icl_regression": "devinterp.recipes.icl_regression",
    "fixed_language_batches": "devinterp.recipes.language",
    "language_batch": "devinterp.recipes.language",
    "train_language": "devinterp.recipes.language",
    "recipe_spec": "devinterp.recipes.registry",
    "sweep_data": "devinterp.recipes.registry",
    "train_recipe": "devinterp.recipes.registry",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'devinterp.recipes' has no attribute {name!r}")
