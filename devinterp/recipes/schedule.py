"""Checkpoint schedules: dense in log-step early, linear later."""

from __future__ import annotations

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
