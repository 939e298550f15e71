"""Checkpoint sources: where a run's weights come from, loaded safely.

A source lists ``(step, path)`` pairs in step order and loads one checkpoint's state dict.
Only safetensors files and ``torch.load(weights_only=True)`` are used, so a pickle that would
run code is refused and never executed.

Checkpoints written by our recipes are self-describing: the safetensors metadata holds the step,
the model config (JSON) and the train loss, like nanoGPT's checkpoints.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor

from devinterp import _io
from devinterp.config import ModelConfig

SUFFIXES = (".safetensors", ".pt", ".pth")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and why."""


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path


def save_checkpoint(
    path: str | Path, state_dict: dict[str, Tensor], *, step: int, model: ModelConfig, extra: dict | None = None
) -> Path:
    """Write ``state_dict`` as safetensors (atomically) with step, model config and ``extra`` as metadata."""
    meta = {"step": str(step), "model_config": model.model_dump_json()}
    meta.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    return _io.atomic_write(path, lambda p: save_file(tensors, str(p), metadata=meta))


def _step_from_name(path: Path) -> int | None:
    numbers = re.findall(r"\d+", path.stem)
    return int(numbers[-1]) if numbers else None


class DirectorySource:
    """Checkpoints in one folder: ``*.safetensors``, ``*.pt`` or ``*.pth``.

    Steps come from ``index.csv`` (columns ``step``, ``file``) when present, else from the last
    number in each file name (``step_800.pt`` -> 800). ``model`` is the architecture used when a
    checkpoint does not describe itself.
    """

    def __init__(self, folder: str | Path, model: ModelConfig | None = None):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"{self.folder}: checkpoint directory does not exist")
        self.model = model
        self.checkpoints = self._scan()
        if not self.checkpoints:
            raise FileNotFoundError(
                f"{self.folder}: no checkpoints found (expected files ending in {', '.join(SUFFIXES)})"
            )

    def _scan(self) -> list[Checkpoint]:
        index = self.folder / "index.csv"
        if index.is_file():
            df = pd.read_csv(index)
            missing = {"step", "file"} - set(df.columns)
            if missing:
                raise CheckpointError(f"{index}: missing column(s) {sorted(missing)}")
            found = [Checkpoint(int(r.step), self.folder / str(r.file)) for r in df.itertuples()]
        else:
            found = []
            for p in sorted(self.folder.iterdir()):
                if p.suffix in SUFFIXES and not p.name.startswith("."):
                    step = _step_from_name(p)
                    if step is None:
                        raise CheckpointError(f"{p}: cannot tell the step from the file name; add an index.csv")
                    found.append(Checkpoint(step, p))
        steps = [c.step for c in found]
        if len(set(steps)) != len(steps):
            raise CheckpointError(f"{self.folder}: several checkpoints share a step: {sorted(steps)}")
        return sorted(found, key=lambda c: c.step)

    def __len__(self) -> int:
        return len(self.checkpoints)

    def __iter__(self):
        return iter(self.checkpoints)

    @property
    def steps(self) -> list[int]:
        return [c.step for c in self.checkpoints]

    def model_config(self) -> ModelConfig:
        """The architecture: from the first readable checkpoint's metadata, else the one given."""
        for ckpt in self.checkpoints:
            if ckpt.path.suffix == ".safetensors" and ckpt.path.is_file():
                try:
                    with safe_open(str(ckpt.path), framework="pt") as fh:
                        meta = fh.metadata() or {}
                except Exception:  # unreadable file: try the next; the sweep reports it
                    continue
                if "model_config" in meta:
                    return ModelConfig.model_validate_json(meta["model_config"])
        if self.model is None:
            raise CheckpointError(f"{self.folder}: checkpoints carry no model config; give one (recipe.model)")
        return self.model

    def load(self, ckpt: Checkpoint) -> dict[str, Tensor]:
        """The checkpoint's state dict (float tensors on CPU). Raises CheckpointError with the reason."""
        return load_state_dict(ckpt.path)


def load_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Load a state dict from safetensors or a weights-only torch file; never runs pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file is missing")
    try:
        if path.suffix == ".safetensors":
            sd = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
            sd = obj.get("model", obj.get("state_dict", obj)) if isinstance(obj, dict) else obj
    except Exception as err:  # corrupt, truncated or a pickle that wants to run code
        raise CheckpointError(f"{path}: cannot be loaded safely: {type(err).__name__}: {str(err)[:300]}") from None
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: does not hold a state dict of tensors")
    return sd
CheckpointSource = DirectorySource  # the one source kind so far; others will share its interface
