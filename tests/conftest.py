"""Shared fixtures: a tiny config and a tiny real run trained once per test session."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from devinterp.config import RunConfig, parse_config

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

warnings.filterwarnings("ignore", message=".*TransformerBridge.*")

TINY = {
    "name": "tiny",
    "recipe": {
        "model": {"n_layers": 2, "n_heads": 2, "d_model": 32, "d_head": 16, "n_ctx": 32, "d_vocab": 32},
        "data": {"n_spans": 2, "span_min": 4, "span_max": 8},
        "train": {"steps": 120, "batch_size": 16, "seed": 0,
                  "schedule": {"n_log": 3, "switch_step": 40, "linear_every": 40}},
    },
    "sweep": {"eval_sequences": 32, "eval_batch_size": 16, "head_sequences": 8, "llc_sequences": 64,
              "llc": {"chains": 2, "draws": 10, "burnin": 5, "batch_size": 16, "init_loss_batches": 2}},
    "detect": {"bootstrap": 5},
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def tiny_config() -> RunConfig:
    return parse_config(TINY, "tests/conftest.py:TINY")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> tuple[RunConfig, Path]:
    """A tiny induction run trained once (7 checkpoints); returns (config, out folder)."""
    from devinterp.api import train

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("out")
    config = parse_config(TINY, "tests/conftest.py:TINY")
    train(config, out, progress=False)
    return config, out
