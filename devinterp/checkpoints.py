"""Checkpoint sources: where a run's weights come from, loaded safely.

Every source follows the :class:`CheckpointSource` protocol: ``steps`` and iteration over
:class:`Checkpoint` in step order, ``load(ckpt)`` -> state dict, ``model_config()`` -> the
architecture. Two kinds exist:

* :class:`DirectorySource`: ``*.safetensors`` / ``*.pt`` / ``*.pth`` files in one folder.
* :class:`HuggingFaceSource`: revisions ``step{N}`` (Pythia-style) of a Hugging Face model repo,
  read from the local hub cache only; a revision that is not cached fails with the command that
  pre-fetches it. The hub is never contacted.

Only safetensors files and ``torch.load(weights_only=True)`` are used, so a pickle that would
run code is refused and never executed. Sources are plain picklable objects (paths and
settings), so executors can send them to worker processes and Ray tasks.

Checkpoints written by our recipes are self-describing: the safetensors metadata holds the step,
the model family (``model_family``: ``attn-only``, ``icl-transformer``; absent in older files, which
are ``attn-only``), the model config (JSON) and the train loss, like nanoGPT's checkpoints.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Protocol, runtime_checkable

import pandas as pd
from safetensors import safe_open

from devinterp import _io
from devinterp.config import MODEL_FAMILIES, AnyModelConfig, ModelConfig, model_family

if TYPE_CHECKING:  # torch loads on first use: listing checkpoints and resuming a finished sweep need none
    from torch import Tensor

SUFFIXES = (".safetensors", ".pt", ".pth")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and why."""


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint of a source: its training step and where it lives (a file, or a Hugging Face
    snapshot folder); ``revision`` names the hub revision for Hugging Face sources."""

    step: int
    path: Path
    revision: str | None = None


@runtime_checkable
class CheckpointSource(Protocol):
    """The contract every checkpoint source follows (a user's own source only needs these)."""

    @property
    def steps(self) -> list[int]:
        """Training steps of the checkpoints, ascending."""
        ...

    def __iter__(self) -> Iterator[Checkpoint]:
        """The checkpoints in step order."""
        ...

    def __len__(self) -> int: ...

    def load(self, ckpt: Checkpoint) -> dict[str, Tensor]:
        """The checkpoint's state dict on CPU; raises :class:`CheckpointError` naming it and why."""
        ...

    def model_config(self) -> AnyModelConfig:
        """The architecture the checkpoints share (its class names the model family)."""
        ...


class ListedSource:
    """Base of the built-in sources: a list ``self.checkpoints`` in step order gives ``steps``,
    iteration and ``len``; subclasses add ``load``, ``model_config`` and ``describe``."""

    checkpoints: list[Checkpoint]

    def __len__(self) -> int:
        return len(self.checkpoints)

    def __iter__(self) -> Iterator[Checkpoint]:
        return iter(self.checkpoints)

    @property
    def steps(self) -> list[int]:
        return [c.step for c in self.checkpoints]

    def describe(self) -> dict:
        """What the manifest records about the source."""
        return {"kind": type(self).__name__}

    @staticmethod
    def _check_unique(where: object, found: list[Checkpoint]) -> list[Checkpoint]:
        steps = [c.step for c in found]
        if len(set(steps)) != len(steps):
            raise CheckpointError(f"{where}: several checkpoints share a step: {sorted(steps)}")
        return sorted(found, key=lambda c: c.step)


def save_checkpoint(
    path: str | Path, state_dict: dict[str, Tensor], *, step: int, model: AnyModelConfig, extra: dict | None = None
) -> Path:
    """Write ``state_dict`` as safetensors (atomically) with step, model family, model config and
    ``extra`` as metadata."""
    from safetensors.torch import save_file

    meta = {"step": str(step), "model_family": model_family(model), "model_config": model.model_dump_json()}
    meta.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    return _io.atomic_write(path, lambda p: save_file(tensors, str(p), metadata=meta))


def _step_from_name(path: Path) -> int | None:
    numbers = re.findall(r"\d+", path.stem)
    return int(numbers[-1]) if numbers else None


class DirectorySource(ListedSource):
    """Checkpoints in one folder: ``*.safetensors``, ``*.pt`` or ``*.pth``.

    Steps come from ``index.csv`` (columns ``step``, ``file``) when present, else from the last
    number in each file name (``step_800.pt`` -> 800). ``model`` is the architecture used when a
    checkpoint does not describe itself.
    """

    def __init__(self, folder: str | Path, model: AnyModelConfig | None = None):
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
                if p.suffix in SUFFIXES and not p.name.startswith(".") and not p.name.endswith(".train_state.pt"):
                    step = _step_from_name(p)
                    if step is None:
                        raise CheckpointError(f"{p}: cannot tell the step from the file name; add an index.csv")
                    found.append(Checkpoint(step, p))
        return self._check_unique(self.folder, found)

    def describe(self) -> dict:
        return {"kind": "directory", "path": str(self.folder)}

    def model_config(self) -> AnyModelConfig:
        """The architecture: from the first readable checkpoint's metadata, else the one given."""
        for ckpt in self.checkpoints:
            found = _safetensors_model_config(ckpt.path)
            if found is not None:
                return found
        if self.model is None:
            raise CheckpointError(f"{self.folder}: checkpoints carry no model config; give one (recipe.model)")
        return self.model

    def load(self, ckpt: Checkpoint) -> dict[str, Tensor]:
        """The checkpoint's state dict (float tensors on CPU). Raises CheckpointError with the reason."""
        return load_state_dict(ckpt.path)


def load_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Load a state dict from safetensors or a weights-only torch file; never runs pickled code."""
    import torch
    from safetensors.torch import load_file
    from torch import Tensor

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file is missing")
    try:
        if path.suffix == ".safetensors":
            sd = load_file(str(path))
        else:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Detected pickle protocol")
                obj = torch.load(path, map_location="cpu", weights_only=True)
            sd = obj.get("model", obj.get("state_dict", obj)) if isinstance(obj, dict) else obj
    except pickle.UnpicklingError as err:  # a pickle that wants more than tensors: never run it
        found = re.search(r"Unsupported global: GLOBAL [\w.]+", str(err))
        raise CheckpointError(
            f"{path}: cannot be loaded safely: the pickle holds more than tensors"
            f"{' (' + found.group(0) + ')' if found else ''}; refused without running it. Save the weights as "
            "safetensors (or a plain state dict) where you trust the file"
        ) from None
    except Exception as err:  # corrupt or truncated
        raise CheckpointError(f"{path}: cannot be loaded safely: {type(err).__name__}: {str(err)[:300]}") from None
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: does not hold a state dict of tensors")
    return sd


def _safetensors_model_config(path: Path) -> AnyModelConfig | None:
    """The model config in a safetensors file's metadata (its class from ``model_family``; files
    without one are attention-only), or None (not safetensors, unreadable, absent)."""
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="numpy") as fh:  # metadata only
            meta = fh.metadata() or {}
    except Exception:  # unreadable file: the caller tries the next; the sweep reports it
        return None
    if "model_config" not in meta:
        return None
    family = meta.get("model_family", "attn-only")
    if family not in MODEL_FAMILIES:
        raise CheckpointError(f"{path}: model family {family!r} is not one this version knows "
                              f"({', '.join(MODEL_FAMILIES)})")
    try:
        return MODEL_FAMILIES[family].model_validate_json(meta["model_config"])
    except Exception:  # a config that does not validate: treat as absent
        return None


# --------------------------------------------------------------------------------------------
# Hugging Face revisions from the local cache
# --------------------------------------------------------------------------------------------

HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json")
_STEP_REVISION = re.compile(r"^step(\d+)$")


def hf_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The hub cache: ``cache_dir``, else huggingface_hub's (``HF_HUB_CACHE``, ``HF_HOME/hub``,
    ``~/.cache/huggingface/hub``)."""
    if cache_dir is not None:
        return Path(cache_dir)
    try:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformer-lens
        if os.environ.get("HF_HUB_CACHE"):
            return Path(os.environ["HF_HUB_CACHE"])
        home = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
        return Path(home) / "hub"


def hf_repo_cache(repo_id: str, cache_dir: str | Path | None = None) -> Path:
    """``<cache>/models--org--name``: the hub cache folder of a model repo."""
    return hf_cache_dir(cache_dir) / ("models--" + repo_id.replace("/", "--"))


class HuggingFaceSource(ListedSource):
    """Revisions of a Hugging Face model repo (``step0``, ``step1000``, ... as Pythia publishes them),
    read from the local hub cache with the hub offline.

    ``revisions``: the revisions to read (their steps from ``step{N}``); null = every ``step{N}``
    ref found in the cache. Each revision's snapshot holds ``model.safetensors`` (or
    ``pytorch_model.bin``, loaded weights-only; sharded ``*.index.json`` too) and ``config.json``.
    A revision that is not in the cache is listed and fails when loaded, with the command that
    pre-fetches it; nothing is ever downloaded.
    """

    def __init__(self, repo_id: str, revisions: list[str] | None = None, cache_dir: str | Path | None = None,
                 model: ModelConfig | None = None):
        self.repo_id = repo_id
        self.cache = hf_repo_cache(repo_id, cache_dir)
        self.model = model
        if revisions is None:
            revisions = self._cached_step_revisions()
            if not revisions:
                raise FileNotFoundError(
                    f"{self.cache}: no step{{N}} revisions of {repo_id} in the local Hugging Face cache; the hub is "
                    f"not contacted, so pre-fetch them first, e.g. `{self.prefetch_command('step1000')}` for each "
                    "step, or list `revisions:` in the source config"
                )
        found = []
        for rev in revisions:
            m = _STEP_REVISION.match(rev)
            if m is None:
                raise CheckpointError(f"{repo_id}@{rev}: cannot tell the step from the revision name (want step{{N}})")
            snapshot = self._snapshot(rev)
            found.append(Checkpoint(int(m.group(1)), snapshot or self.cache / "refs" / rev, revision=rev))
        self.checkpoints = self._check_unique(repo_id, found)

    def prefetch_command(self, revision: str) -> str:
        cache = f" --cache-dir {self.cache.parent}" if self.cache.parent != hf_cache_dir() else ""
        return f"hf download {self.repo_id} --revision {revision}{cache}"

    def describe(self) -> dict:
        return {"kind": "huggingface", "repo_id": self.repo_id, "cache": str(self.cache)}

    def _cached_step_revisions(self) -> list[str]:
        refs = self.cache / "refs"
        if not refs.is_dir():
            return []
        return [p.name for p in refs.iterdir() if p.is_file() and _STEP_REVISION.match(p.name)]

    def _snapshot(self, revision: str) -> Path | None:
        """The snapshot folder of a revision (a ref name or a commit hash), or None if not cached."""
        ref = self.cache / "refs" / revision
        commit = ref.read_text().strip() if ref.is_file() else revision
        folder = self.cache / "snapshots" / commit
        return folder if folder.is_dir() else None

    def _not_cached(self, ckpt: Checkpoint, what: str) -> CheckpointError:
        return CheckpointError(
            f"{self.repo_id}@{ckpt.revision}: {what} is not in the local Hugging Face cache {self.cache.parent} "
            f"(the hub is not contacted); pre-fetch it with `{self.prefetch_command(ckpt.revision)}`"
        )

    def load(self, ckpt: Checkpoint) -> dict[str, Tensor]:
        snapshot = self._snapshot(ckpt.revision)
        if snapshot is None:
            raise self._not_cached(ckpt, "the revision")
        for name in HF_WEIGHT_FILES:
            path = snapshot / name
            if not path.exists():
                continue
            if name.endswith(".index.json"):
                try:
                    shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
                except (OSError, ValueError, KeyError, AttributeError) as err:
                    raise CheckpointError(f"{path}: not a valid weight index: {err}") from None
                state_dict = {}
                for shard in shards:
                    if not (snapshot / shard).exists():
                        raise self._not_cached(ckpt, f"weight shard {shard}")
                    state_dict.update(load_state_dict(snapshot / shard))
                return state_dict
            return load_state_dict(path)
        raise self._not_cached(ckpt, f"no weight file ({', '.join(HF_WEIGHT_FILES)})")

    def model_config(self) -> ModelConfig:
        """From a cached snapshot: safetensors metadata, else ``config.json`` in our ModelConfig fields
        (``model_type: devinterp-attn-only``); other architectures are refused with their name."""
        for ckpt in self.checkpoints:
            snapshot = self._snapshot(ckpt.revision)
            if snapshot is None:
                continue
            found = _safetensors_model_config(snapshot / "model.safetensors")
            if found is not None:
                return found
            cfg_file = snapshot / "config.json"
            if cfg_file.is_file():
                raw = json.loads(cfg_file.read_text())
                fields = {k: v for k, v in raw.items() if k in ModelConfig.model_fields}
                required = set(ModelConfig.model_fields) - {"positional_embedding_type"}  # optional, newer
                if raw.get("model_type") == "devinterp-attn-only" or required <= set(fields):
                    return ModelConfig.model_validate(fields)
                if self.model is None:
                    arch = raw.get("architectures") or raw.get("model_type")
                    raise CheckpointError(
                        f"{cfg_file}: architecture {arch} is not one the sweep's metrics can measure "
                        "(the attention-only family of devinterp.models); give recipe.model if the weights fit it"
                    )
        if self.model is None:
            raise CheckpointError(f"{self.repo_id}: no cached revision describes the model; give recipe.model")
        return self.model


def save_hf_revision(cache_dir: str | Path, repo_id: str, revision: str, state_dict: dict[str, Tensor], *,
                     step: int, model: ModelConfig) -> Path:
    """Write one revision of our model into a hub-cache layout (``refs/<revision>`` -> commit,
    ``snapshots/<commit>/{model.safetensors, config.json}``) and return the snapshot folder.

    For tests and for sharing a run offline; the result reads back with :class:`HuggingFaceSource`.
    """
    import hashlib

    repo = hf_repo_cache(repo_id, cache_dir)
    commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    save_checkpoint(snapshot / "model.safetensors", state_dict, step=step, model=model)
    _io.write_json(snapshot / "config.json", {"model_type": "devinterp-attn-only", **model.model_dump()})
    _io.write_text(repo / "refs" / revision, commit)
    return snapshot


def open_source(spec, model: ModelConfig | None = None) -> "DirectorySource | HuggingFaceSource":
    """The source a :class:`~devinterp.config.SourceConfig` (or a folder path) describes."""
    if isinstance(spec, (str, Path)):
        return DirectorySource(spec, model=model)
    if spec.kind == "directory":
        return DirectorySource(spec.path, model=model)
    return HuggingFaceSource(spec.repo_id, spec.revisions, spec.cache_dir, model=model)
