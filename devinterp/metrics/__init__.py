"""Per-checkpoint measurements, registered by group name in :data:`GROUPS`."""

from devinterp.metrics.base import CheckpointModels, SweepData, row
from devinterp.metrics.groups import GROUPS

__all__ = ["GROUPS", "CheckpointModels", "SweepData", "row"]
