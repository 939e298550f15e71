import hashlib
import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from devinterp.checkpoints import (
    CheckpointError,
    CheckpointSource,
    DirectorySource,
    HuggingFaceSource,
    load_state_dict,
    save_checkpoint,
    save_hf_revision,
)
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


# ---------------------------------------------------------------------------------------------
# The CheckpointSource protocol and Hugging Face revisions from a local cache (hub offline)
# ---------------------------------------------------------------------------------------------

TINY_MODEL = ModelConfig(n_layers=1, n_heads=2, d_model=8, d_head=4, n_ctx=8, d_vocab=8)


def _hub_cache(cache, repo_id, revisions: dict[str, dict], files=("model.safetensors",), config=None):
    """Write a Hugging Face hub cache by hand, laid out as huggingface_hub does: blobs/<sha>,
    snapshots/<commit>/<file> -> ../../blobs/<sha> (symlinks), refs/<revision> = commit."""
    from safetensors.torch import save_file

    repo = cache / ("models--" + repo_id.replace("/", "--"))
    for rev, sd in revisions.items():
        commit = hashlib.sha1(rev.encode()).hexdigest()
        snap = repo / "snapshots" / commit
        snap.mkdir(parents=True)
        payloads = {"config.json": json.dumps(config or {"model_type": "devinterp-attn-only",
                                                          **TINY_MODEL.model_dump()}).encode()}
        tmp = cache / "tmp.bin"
        if "model.safetensors" in files:
            save_file(sd, str(tmp))
            payloads["model.safetensors"] = tmp.read_bytes()
        if "pytorch_model.bin" in files:
            torch.save(sd, tmp)
            payloads["pytorch_model.bin"] = tmp.read_bytes()
        for name, blob in payloads.items():
            sha = hashlib.sha256(blob).hexdigest()
            (repo / "blobs").mkdir(exist_ok=True)
            (repo / "blobs" / sha).write_bytes(blob)
            (snap / name).symlink_to(Path("..") / ".." / "blobs" / sha)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / rev).write_text(commit)
    return repo


def _weights(step):
    return {"w": torch.full((2, 3), float(step)), "b": torch.arange(3.0) + step}


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_sources_follow_the_protocol(tmp_path):
    torch.save({"w": torch.ones(1)}, tmp_path / "step_1.pt")
    _hub_cache(tmp_path / "hub", "org/tiny", {"step0": _weights(0)})
    assert isinstance(DirectorySource(tmp_path), CheckpointSource)
    assert isinstance(HuggingFaceSource("org/tiny", cache_dir=tmp_path / "hub"), CheckpointSource)
    assert not isinstance(object(), CheckpointSource)


def test_hf_revisions_read_from_a_local_cache(tmp_path, offline):
    from huggingface_hub import try_to_load_from_cache

    cache = tmp_path / "hub"
    revisions = {f"step{s}": _weights(s) for s in (1000, 0, 128)}
    _hub_cache(cache, "EleutherAI/tiny-pythia", {**revisions, "main": _weights(9)})
    # the layout is the hub's own: huggingface_hub resolves it
    assert try_to_load_from_cache("EleutherAI/tiny-pythia", "model.safetensors", cache, "step128") is not None
    src = HuggingFaceSource("EleutherAI/tiny-pythia", cache_dir=cache)
    assert src.steps == [0, 128, 1000]  # only step{N} refs, in step order
    assert [c.revision for c in src] == ["step0", "step128", "step1000"]
    sd = src.load(src.checkpoints[1])
    assert torch.equal(sd["w"], _weights(128)["w"]) and torch.equal(sd["b"], _weights(128)["b"])
    assert src.model_config() == TINY_MODEL


def test_hf_revision_not_in_the_cache_says_what_to_prefetch(tmp_path, offline):
    cache = tmp_path / "hub"
    _hub_cache(cache, "org/tiny", {"step0": _weights(0)})
    src = HuggingFaceSource("org/tiny", revisions=["step0", "step512"], cache_dir=cache)
    assert src.steps == [0, 512]
    with pytest.raises(CheckpointError, match=r"pre-fetch it with `hf download org/tiny --revision step512"):
        src.load(src.checkpoints[1])
    with pytest.raises(FileNotFoundError, match="hf download org/absent --revision step"):
        HuggingFaceSource("org/absent", cache_dir=cache)
    with pytest.raises(CheckpointError, match="step{N}"):
        HuggingFaceSource("org/tiny", revisions=["main"], cache_dir=cache)


def test_hf_pytorch_bin_is_loaded_weights_only_and_foreign_architectures_are_named(tmp_path, offline, monkeypatch):
    cache = tmp_path / "hub"
    neox = {"model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"], "hidden_size": 8}
    _hub_cache(cache, "org/neox", {"step3": _weights(3)}, files=("pytorch_model.bin",), config=neox)
    src = HuggingFaceSource("org/neox", cache_dir=cache)
    assert torch.equal(src.load(src.checkpoints[0])["w"], _weights(3)["w"])
    with pytest.raises(CheckpointError, match="GPTNeoXForCausalLM"):
        src.model_config()
    assert HuggingFaceSource("org/neox", cache_dir=cache, model=TINY_MODEL).model_config() == TINY_MODEL
    # a pickle with a payload inside a cached revision is refused like any other
    monkeypatch.chdir(tmp_path)
    snap = src.checkpoints[0].path
    target = (snap / "pytorch_model.bin").resolve()
    with open(target, "wb") as fh:
        pickle.dump({"w": _Payload()}, fh)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        src.load(src.checkpoints[0])
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


def test_hf_sharded_weights(tmp_path, offline):
    cache = tmp_path / "hub"
    repo = _hub_cache(cache, "org/sharded", {"step7": {}}, files=())
    snap = next((repo / "snapshots").iterdir())
    save_checkpoint(snap / "part-1.safetensors", {"w": torch.ones(2)}, step=7, model=TINY_MODEL)
    save_checkpoint(snap / "part-2.safetensors", {"b": torch.zeros(2)}, step=7, model=TINY_MODEL)
    (snap / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"w": "part-1.safetensors", "b": "part-2.safetensors"}}))
    src = HuggingFaceSource("org/sharded", cache_dir=cache)
    assert set(src.load(src.checkpoints[0])) == {"w", "b"}
    (snap / "part-2.safetensors").unlink()
    with pytest.raises(CheckpointError, match="weight shard part-2.safetensors .*`hf download org/sharded --revision step7"):
        src.load(src.checkpoints[0])


def test_save_hf_revision_round_trip(tmp_path):
    for step in (0, 5):
        save_hf_revision(tmp_path, "me/run", f"step{step}", _weights(step), step=step, model=TINY_MODEL)
    src = HuggingFaceSource("me/run", cache_dir=tmp_path)
    assert src.steps == [0, 5] and src.model_config() == TINY_MODEL
    assert torch.equal(src.load(src.checkpoints[1])["b"], _weights(5)["b"])


def test_source_config_paths_resolve_against_the_yaml_and_open(tmp_path):
    import yaml

    from devinterp.api import checkpoint_source
    from devinterp.config import ConfigError, load_config

    (tmp_path / "runs" / "ck").mkdir(parents=True)
    torch.save({"w": torch.ones(1)}, tmp_path / "runs" / "ck" / "step_4.pt")
    save_hf_revision(tmp_path / "runs" / "hub", "me/run", "step2", _weights(2), step=2, model=TINY_MODEL)
    cfg = tmp_path / "runs" / "a.yaml"
    cfg.write_text(yaml.safe_dump({"source": {"kind": "directory", "path": "ck"}}))
    assert checkpoint_source(load_config(cfg)).steps == [4]
    cfg.write_text(yaml.safe_dump({"source": {"kind": "huggingface", "repo_id": "me/run", "cache_dir": "hub"}}))
    src = checkpoint_source(load_config(cfg))
    assert isinstance(src, HuggingFaceSource) and src.steps == [2]
    cfg.write_text(yaml.safe_dump({"checkpoints": "ck", "source": {"kind": "directory", "path": "ck"}}))
    with pytest.raises(ConfigError, match="either checkpoints"):
        load_config(cfg)
