"""Training state beside the checkpoints, so a recipe's run can be continued exactly (``devinterp refine``).

At each saved step ``s`` a recipe that supports resuming writes ``checkpoints/<s>.train_state.pt``:
``{"step": s, "optimizer": ..., "data_generator": ..., [other recipe state, e.g. "scheduler"]}``, all
taken *before* step ``s``'s batch is drawn and its update applied, next to the weights of
``<s>.safetensors`` (also before the update). Continuing from there replays the original run. (The
language recipe draws its batches in chunks: its generator state is the one before the chunk holding
step ``s``, saved with the step's position in that chunk.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from devinterp import _io
from devinterp.recipes.schedule import CheckpointPlan

TRAIN_STATE_SUFFIX = ".train_state.pt"


def train_state_path(ckpt_dir: Path, step: int) -> Path:
    """Where the optimizer and data-stream state of checkpoint ``step`` is kept."""
    return Path(ckpt_dir) / f"{step}{TRAIN_STATE_SUFFIX}"


def save_train_state(ckpt_dir: Path, step: int, state: dict) -> None:
    """Write ``state`` (tensors and plain values) for checkpoint ``step``, atomically."""
    _io.atomic_write(train_state_path(ckpt_dir, step), lambda p: torch.save({"step": step, **state}, p))


def save_step(ckpt_dir: Path, step: int, model, model_cfg, loss: float, recipe_hash: str,
              train_state: dict | None = None) -> dict:
    """Save checkpoint ``step`` (the weights before that step's update, with its train loss and the
    recipe hash) and, if given, its training state; return its ``index.csv`` row."""
    from devinterp.checkpoints import save_checkpoint

    path = save_checkpoint(Path(ckpt_dir) / f"{step}.safetensors", model.state_dict(), step=step, model=model_cfg,
                           extra={"train_loss": loss, "recipe_hash": recipe_hash})
    if train_state is not None:
        save_train_state(ckpt_dir, step, train_state)
    return {"step": step, "file": path.name, "train_loss": loss, "recipe_hash": recipe_hash}


@dataclass
class ResumePoint:
    """What :func:`resume_point` found: the run's index, the state to load, and the steps to save."""

    index: pd.DataFrame
    weights_file: Path
    state: dict
    save_steps: list[int]


def resume_point(plan: CheckpointPlan, start: int, save_steps: list[int]) -> ResumePoint | None:
    """Check that training can continue from checkpoint ``start`` and load its state.

    ``save_steps`` minus the steps already in the index are the ones to create (sorted); None when
    there are none. Raises ValueError (no checkpoint at ``start``, or a step to save <= ``start``) and
    FileNotFoundError naming the missing training-state file.
    """
    index = pd.read_csv(plan.index_path)
    if start not in set(index["step"].astype(int)):
        raise ValueError(f"{plan.index_path}: no checkpoint at step {start} to resume from")
    state_path = train_state_path(plan.ckpt_dir, start)
    if not state_path.is_file():
        raise FileNotFoundError(f"{state_path}: the training state of step {start} was not saved "
                                "(train.save_train_state); refine needs it to resume training")
    todo = sorted(set(int(s) for s in save_steps) - set(index["step"].astype(int)))
    if not todo:
        return None
    if todo[0] <= start:
        raise ValueError(f"steps to save ({todo[0]}) must come after the resume step {start}")
    file = index.loc[index["step"].astype(int) == start, "file"].iloc[0]
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    return ResumePoint(index, plan.ckpt_dir / str(file), state, todo)


def data_generator(state: dict, device: str | torch.device = "cpu") -> torch.Generator:
    """The training data stream's generator as it was saved (a generator on ``device``, where it ran)."""
    gen = torch.Generator(device=device)
    gen.set_state(state["data_generator"])
    return gen


def append_refined(plan: CheckpointPlan, point: ResumePoint, rows: list[dict]) -> list[dict]:
    """Add the new checkpoints' index rows (``refined`` = True) to ``index.csv`` atomically; return them."""
    rows = [r for r in rows if r["step"] in set(point.save_steps)]
    merged = pd.concat([point.index, pd.DataFrame(rows).assign(refined=True)], ignore_index=True)
    _io.write_csv(plan.index_path, merged.sort_values("step").reset_index(drop=True))
    return rows


__all__ = ["ResumePoint", "append_refined", "data_generator", "resume_point", "save_step", "save_train_state",
           "train_state_path", "TRAIN_STATE_SUFFIX"]
