import os
import pickle

import pytest
import torch

from devinterp.checkpoints import CheckpointError, DirectorySource, load_state_dict, save_checkpoint
from devinterp.config import ModelConfig


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint directory does not exist"):
        DirectorySource(tmp_path / "nope")


def test_empty_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoints found"):
        DirectorySource(tmp_path)


def test_pt_files_with_steps_in_names(tmp_path):
    for step in (10, 2, 300):
        torch.save({"w": torch.full((2,), float(step))}, tmp_path / f"step_{step}.pt")
    src = DirectorySource(tmp_path, model=ModelConfig())
    assert src.steps == [2, 10, 300]
    assert src.load(src.checkpoints[1])["w"][0] == 10


def test_safetensors_round_trip_carries_config(tmp_path):
    cfg = ModelConfig(d_model=8, d_head=4, n_heads=2, n_ctx=8, d_vocab=8)
    save_checkpoint(tmp_path / "5.safetensors", {"w": torch.ones(3)}, step=5, model=cfg)
    src = DirectorySource(tmp_path)
    assert src.model_config() == cfg
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"w": _Payload()}, fh)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_state_dict(path)
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


def test_truncated_safetensors_is_refused(tmp_path):
    cfg = ModelConfig()
    path = save_checkpoint(tmp_path / "1.safetensors", {"w": torch.ones(100)}, step=1, model=cfg)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="1.safetensors"):
        load_state_dict(path)
