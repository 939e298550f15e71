"""Checkpoint schedules: dense in log-step early, linear later."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from devinterp.config import ScheduleConfig


def checkpoint_schedule(total_steps: int, schedule: ScheduleConfig) -> list[int]:
    """Sorted unique steps in [0, total_steps]: 0, ``n_log`` log-spaced steps in [1, switch_step),
    then every ``linear_every`` steps from ``switch_step``, and always ``total_steps`` itself."""
    switch = min(schedule.switch_step, total_steps)
    steps = {0, total_steps}
    if schedule.n_log > 0 and switch > 1:
        steps.update(int(s) for s in np.unique(np.round(np.geomspace(1, switch, schedule.n_log, endpoint=False))))
    steps.update(range(switch, total_steps + 1, schedule.linear_every))
    return sorted(s for s in steps if 0 <= s <= total_steps)


def checkpoints_complete(ckpt_dir: Path, steps: list[int], recipe_hash: str) -> bool:
    """Whether ``ckpt_dir/index.csv`` already lists every scheduled step (more are fine: ``refine``
    adds some), all written by this very recipe (``recipe_hash``) and all present on disk: then a
    recipe has nothing to train."""
    import pandas as pd

    index_path = Path(ckpt_dir) / "index.csv"
    if not index_path.is_file():
        return False
    index = pd.read_csv(index_path)
    if "recipe_hash" not in index.columns or set(index["recipe_hash"].astype(str)) != {recipe_hash}:
        return False
    if not set(steps) <= set(index["step"].tolist()):
        return False
    return all((Path(ckpt_dir) / f).is_file() for f in index["file"])


@dataclass(frozen=True)
class CheckpointPlan:
    """Where a recipe's run keeps its checkpoints, which steps it saves, and the recipe's hash."""

    ckpt_dir: Path
    steps: list[int]
    recipe_hash: str

    @property
    def index_path(self) -> Path:
        return self.ckpt_dir / "index.csv"

    def complete(self) -> bool:
        """Nothing to train: see :func:`checkpoints_complete`."""
        return checkpoints_complete(self.ckpt_dir, self.steps, self.recipe_hash)


def checkpoint_plan(config, run_dir: str | Path) -> CheckpointPlan:
    """The :class:`CheckpointPlan` of ``config.recipe`` trained into ``run_dir/checkpoints``."""
    from devinterp.config import config_hash

    train = config.recipe.train
    return CheckpointPlan(Path(run_dir) / "checkpoints", checkpoint_schedule(train.steps, train.schedule),
                          config_hash(config.recipe))
