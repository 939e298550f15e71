"""Training recipes: each turns a :class:`~devinterp.config.RecipeConfig` into a checkpoint folder."""

from devinterp.recipes.data import fixed_batches, induction_batch
from devinterp.recipes.induction import train_induction
from devinterp.recipes.schedule import checkpoint_schedule

__all__ = ["checkpoint_schedule", "fixed_batches", "induction_batch", "train_induction"]
