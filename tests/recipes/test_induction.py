import pandas as pd
import torch

from devinterp.config import InductionDataConfig, ScheduleConfig
from devinterp.recipes import checkpoint_schedule, induction_batch
from devinterp.checkpoints import DirectorySource


def test_schedule_log_then_linear():
    steps = checkpoint_schedule(3000, ScheduleConfig(n_log=12, switch_step=400, linear_every=75))
    assert steps[0] == 0 and steps[-1] == 3000 and len(steps) >= 40
    early = [s for s in steps if 0 < s < 400]
    ratios = [b / a for a, b in zip(early, early[1:])]
    assert max(ratios) / min(ratios) < 3  # roughly geometric
    late = [s for s in steps if s >= 400]
    assert set(b - a for a, b in zip(late, late[1:])) <= {75, 3000 - late[-2]}


def test_copied_spans_are_copies():
    cfg = InductionDataConfig(n_spans=1, span_min=8, span_max=8)
    x = induction_batch(200, 64, 64, cfg, torch.Generator().manual_seed(0))
    # each sequence holds an 8-token span that appears again at least 8 tokens later
    found = 0
    for seq in x.tolist():
        windows = {}
        for i in range(57):
            windows.setdefault(tuple(seq[i:i + 8]), i)  # first occurrence of each 8-gram
        found += any(windows.get(tuple(seq[j:j + 8]), j) <= j - 8 for j in range(57))
    assert found == 200


def test_data_is_seeded():
    cfg = InductionDataConfig()
    a = induction_batch(4, 64, 64, cfg, torch.Generator().manual_seed(5))
    b = induction_batch(4, 64, 64, cfg, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_tiny_training_is_deterministic_and_self_describing(tiny_run, tmp_path):
    from devinterp.recipes import train_induction

    config, out = tiny_run
    folder = out / "tiny" / "checkpoints"
    index = pd.read_csv(folder / "index.csv")
    assert index["step"].tolist() == checkpoint_schedule(120, config.recipe.train.schedule)
    # loss goes down from chance
    assert index["train_loss"].iloc[-1] < index["train_loss"].iloc[0]
    src = DirectorySource(folder)
    assert src.model_config() == config.recipe.model  # rebuilt from the checkpoint alone
    again = train_induction(config, tmp_path, progress=False)
    last = src.checkpoints[-1]
    a, b = src.load(last), again.load(again.checkpoints[-1])
    assert all(torch.equal(a[k], b[k]) for k in a)
