"""The recipes by name: how each trains, and what data its checkpoints are measured on.

``config.recipe.name`` picks a :class:`RecipeSpec`:

========================  =================  ====================================================
recipe                    model family       data
========================  =================  ====================================================
``induction``             ``attn-only``      random tokens with copied spans (recipes/data.py)
``language``              ``attn-only``      synthetic Zipfian n-gram text with copies (language.py)
``icl-regression``        ``icl-transformer``  in-context linear regression (icl_regression.py)
========================  =================  ====================================================

``sweep_data(config, model)`` builds the sweep's fixed evaluation and SGLD data from the config's
seeds (common random numbers) together with the family's loss functions
(:mod:`devinterp.models.families`). Which metric groups apply to a recipe is declared on its config
class (``metric_groups``; checked when the config is validated).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from devinterp.config import RunConfig, model_family, recipe_family

if TYPE_CHECKING:
    from devinterp.checkpoints import DirectorySource
    from devinterp.metrics import SweepData

# Offsets from sweep.eval_seed for each data set, so they never share a random stream.
HEAD_SEED_OFFSET, LLC_SEED_OFFSET = 1, 2


class FamilyMismatch(ValueError):
    """The checkpoints are of another model family than the recipe measures."""


@dataclass(frozen=True)
class RecipeSpec:
    name: str
    train: Callable[[RunConfig, Path, bool], "DirectorySource"]
    data: Callable[[RunConfig, Any], dict]  # -> eval_batches, head_tokens, llc_batches
    # resume(config, run_dir, start, save_steps, progress) -> new index rows: continue the run from a
    # saved checkpoint (devinterp refine); None where the recipe cannot
    resume: Callable[[RunConfig, Path, int, list[int], bool], list[dict]] | None = None


def _train_induction(config: RunConfig, run_dir: Path, progress: bool) -> "DirectorySource":
    from devinterp.recipes.induction import train_induction

    return train_induction(config, run_dir, progress=progress)


def _train_language(config: RunConfig, run_dir: Path, progress: bool) -> "DirectorySource":
    from devinterp.recipes.language import train_language

    return train_language(config, run_dir, progress=progress)


def _train_icl(config: RunConfig, run_dir: Path, progress: bool) -> "DirectorySource":
    from devinterp.recipes.icl_regression import train_icl_regression

    return train_icl_regression(config, run_dir, progress=progress)


def _resume_induction(config: RunConfig, run_dir: Path, start: int, save_steps: list[int], progress: bool) -> list[dict]:
    from devinterp.recipes.induction import resume_induction

    return resume_induction(config, run_dir, start, save_steps, progress=progress)


def _resume_icl(config: RunConfig, run_dir: Path, start: int, save_steps: list[int], progress: bool) -> list[dict]:
    from devinterp.recipes.icl_regression import resume_icl_regression

    return resume_icl_regression(config, run_dir, start, save_steps, progress=progress)


def _resume_language(config: RunConfig, run_dir: Path, start: int, save_steps: list[int], progress: bool) -> list[dict]:
    from devinterp.recipes.language import resume_language

    return resume_language(config, run_dir, start, save_steps, progress=progress)


def _token_data(config: RunConfig, model, batches: Callable[[int, int, int], list]) -> dict:
    """Eval, head and SGLD data of a token recipe; ``batches(n_sequences, batch_size, seed)``."""
    from devinterp.metrics.heads import repeated_random_tokens

    s = config.sweep
    return {
        "eval_batches": batches(s.eval_sequences, s.eval_batch_size, s.eval_seed),
        "head_tokens": repeated_random_tokens(s.head_sequences, model.n_ctx // 2, model.d_vocab,
                                              s.eval_seed + HEAD_SEED_OFFSET),
        "llc_batches": batches(s.llc_sequences, s.llc.batch_size, s.eval_seed + LLC_SEED_OFFSET),
    }


def _induction_data(config: RunConfig, model) -> dict:
    from devinterp.recipes.data import fixed_batches

    data = config.recipe.data
    return _token_data(config, model, lambda n, b, seed: fixed_batches(n, b, model.n_ctx, model.d_vocab, data, seed))


def _language_data(config: RunConfig, model) -> dict:
    from devinterp.recipes.language import fixed_language_batches

    data = config.recipe.data
    return _token_data(config, model,
                       lambda n, b, seed: fixed_language_batches(n, b, model.n_ctx, model.d_vocab, data, seed))


def _icl_data(config: RunConfig, model) -> dict:
    from devinterp.recipes.icl_regression import fixed_regression_batches

    s, data = config.sweep, config.recipe.data
    return {
        "eval_batches": fixed_regression_batches(s.eval_sequences, s.eval_batch_size, model, data, s.eval_seed),
        "head_tokens": None,
        "llc_batches": fixed_regression_batches(s.llc_sequences, s.llc.batch_size, model, data,
                                                s.eval_seed + LLC_SEED_OFFSET),
    }


RECIPE_SPECS: dict[str, RecipeSpec] = {
    "induction": RecipeSpec("induction", _train_induction, _induction_data, _resume_induction),
    "language": RecipeSpec("language", _train_language, _language_data, _resume_language),
    "icl-regression": RecipeSpec("icl-regression", _train_icl, _icl_data, _resume_icl),
}


def recipe_spec(config: RunConfig) -> RecipeSpec:
    return RECIPE_SPECS[config.recipe.name]


def train_recipe(config: RunConfig, run_dir: str | Path, progress: bool = True) -> "DirectorySource":
    """Train ``config.recipe`` (whichever recipe it names) into ``run_dir/checkpoints``."""
    return recipe_spec(config).train(config, Path(run_dir), progress)


def check_family(config: RunConfig, model) -> None:
    """Raise :class:`FamilyMismatch` when checkpoints of ``model``'s family cannot be measured with
    ``config.recipe`` (its data and losses belong to another family)."""
    have, want = model_family(model), recipe_family(config.recipe)
    if have != want:
        raise FamilyMismatch(
            f"the checkpoints are {have} models, but recipe {config.recipe.name!r} measures {want} models; "
            f"set recipe.name to a recipe of the {have} family"
        )


def _on_device(parts: dict, device: str) -> dict:
    """The sweep data moved once to the measuring device (batches are tensors or tuples of them), so
    that every checkpoint's metrics and SGLD read it there."""
    from torch import Tensor
    from torch.utils._pytree import tree_map

    return tree_map(lambda x: x.to(device) if isinstance(x, Tensor) else x, parts)


def sweep_data(config: RunConfig, model) -> "SweepData":
    """The data every checkpoint is measured on (fixed seeds: common random numbers), for the recipe
    of ``config`` and checkpoints of architecture ``model``, on ``config.device``. A pure function of the two."""
    from devinterp.metrics import SweepData
    from devinterp.models.families import family

    check_family(config, model)
    fam = family(model)
    parts = _on_device(recipe_spec(config).data(config, model), config.device)
    return SweepData(model=model, llc_settings=config.sweep.llc, device=config.device, sweep=config.sweep,
                     loss_fn=fam.loss_fn, heldout_fn=fam.heldout_fn, **parts)


__all__ = ["FamilyMismatch", "RECIPE_SPECS", "RecipeSpec", "check_family", "recipe_spec", "sweep_data",
           "train_recipe"]
