"""Errors of a sweep (torch-free, so the CLI can catch them without importing torch)."""

from __future__ import annotations


class SweepFailed(RuntimeError):
    """Raised after a strict sweep finished with failed checkpoints (the rest were measured and written).

    ``failures`` maps step -> reason; ``table`` is the metrics table of what succeeded.
    """

    def __init__(self, failures: dict[int, str], table):
        self.failures, self.table = failures, table
        shown = "; ".join(f"step {s}: {r}" for s, r in list(failures.items())[:3])
        more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
        super().__init__(f"{len(failures)} checkpoint(s) failed: {shown}{more}")


class SweepLocked(RuntimeError):
    """Another sweep is writing the same run directory."""
