"""StageMonitor in a user's own training loop: its table equals an offline sweep of its checkpoints."""

import logging
import warnings

import pandas as pd
import pytest
import torch

from devinterp.monitor import StageMonitor

KEYS = ["run", "step", "checkpoint", "metric", "layer", "head", "chain"]
COLUMNS = KEYS + ["value"]


def _train_with_monitor(config, out, every, llc_every, use_monitor=True, **kwargs):
    """The TINY recipe trained in a plain loop, the way a user would, with the monitor called each step."""
    from devinterp.models.attn_only import build_bridge
    from devinterp.recipes.data import induction_batch

    recipe = config.recipe
    model = build_bridge(recipe.model, seed=recipe.train.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.train.lr, weight_decay=recipe.train.weight_decay)
    gen = torch.Generator().manual_seed(recipe.train.seed + 1)
    rng_draws = []
    monitor = StageMonitor(config, out=out, every=every, llc_every=llc_every, **kwargs) if use_monitor else None
    try:
        for step in range(recipe.train.steps + 1):
            tokens = induction_batch(recipe.train.batch_size, recipe.model.n_ctx, recipe.model.d_vocab, recipe.data, gen)
            loss = model(tokens, return_type="loss")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if monitor is not None:
                monitor(step, model)
            rng_draws.append(torch.rand(1).item())  # the monitor must not touch the loop's global RNG
    finally:
        if monitor is not None:
            monitor.close()
    return monitor, rng_draws


def _sorted(df):
    return df[COLUMNS].sort_values(KEYS).reset_index(drop=True)


@pytest.mark.slow
def test_monitor_table_equals_the_offline_sweep_of_its_checkpoints(tiny_config, tmp_path, caplog):
    from devinterp.api import checkpoint_source, load_results, sweep

    config = tiny_config
    torch.manual_seed(7)
    with caplog.at_level(logging.INFO, logger="devinterp.monitor"):
        monitor, draws = _train_with_monitor(config, tmp_path / "live", every=10, llc_every=20)

    run_dir = tmp_path / "live" / "tiny"
    live = load_results(run_dir).metrics
    steps = list(range(0, config.recipe.train.steps + 1, 10))
    assert sorted(live["step"].unique()) == steps
    llc_steps = sorted(live.loc[live["metric"] == "llc", "step"].unique())
    assert llc_steps == list(range(0, config.recipe.train.steps + 1, 20))
    assert sorted((run_dir / "checkpoints").glob("*.safetensors")) and len(list(
        (run_dir / "checkpoints").glob("*.safetensors"))) == len(steps)
    assert live.groupby("step")["checkpoint"].first().tolist() == list(range(len(steps)))

    # the offline sweep (all groups, llc at every checkpoint) over the checkpoints the monitor saved
    offline_cfg = config.model_copy(update={"checkpoints": run_dir / "checkpoints"})
    offline = sweep(checkpoint_source(offline_cfg), offline_cfg, tmp_path / "offline", progress=False)
    measured = live[["step", "metric"]].drop_duplicates()
    offline = offline.merge(measured, on=["step", "metric"])  # the monitor measured llc every 20 steps only
    pd.testing.assert_frame_equal(_sorted(live), _sorted(offline), check_exact=True)

    # detection ran (>= 5 LLC checkpoints) and its result is kept; new boundaries were logged
    assert monitor.stages is not None and (run_dir / "stages.csv").is_file()
    n_boundaries = int((monitor.stages["stage"] > 1).sum())
    lines = [r.getMessage() for r in caplog.records if r.name == "devinterp.monitor" and "began at step" in r.getMessage()]
    assert (n_boundaries == 0) or lines

    # the lock is released on close: the offline sweep can fill in the LLC at the cheap-only steps in place
    filled = sweep(checkpoint_source(config, tmp_path / "live"), config, tmp_path / "live", progress=False)
    assert sorted(filled.loc[filled["metric"] == "llc", "step"].unique()) == steps
    pd.testing.assert_frame_equal(_sorted(filled.merge(measured, on=["step", "metric"])), _sorted(live),
                                  check_exact=True)


def test_monitor_does_not_change_the_training_loop_and_logs_detection_errors(tiny_config, tmp_path, caplog,
                                                                           monkeypatch):
    import devinterp.transitions as transitions

    config = tiny_config.model_copy(update={
        "recipe": tiny_config.recipe.model_copy(update={"train": tiny_config.recipe.train.model_copy(
            update={"steps": 8})}),
        "sweep": tiny_config.sweep.model_copy(update={"metrics": ["loss", "llc"]}),
    })

    def broken(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(transitions, "detect_stages", broken)
    torch.manual_seed(3)
    with caplog.at_level(logging.INFO, logger="devinterp.monitor"):
        monitor, with_monitor = _train_with_monitor(config, tmp_path, every=2, llc_every=2, min_llc_checkpoints=3)
    torch.manual_seed(3)
    _, without = _train_with_monitor(config, None, 1, 1, use_monitor=False)
    assert with_monitor == without  # same global random stream with and without measuring
    assert any("stage detection failed: RuntimeError: boom" in r.getMessage() for r in caplog.records)
    assert monitor.stages is None
    live = pd.read_parquet(tmp_path / "tiny" / "metrics" / "00000008__llc.parquet")
    assert live["checkpoint"].iloc[0] == 4


def test_monitor_refuses_auto_calibration(tiny_config, tmp_path):
    config = tiny_config.model_copy(update={"sweep": tiny_config.sweep.model_copy(update={"calibrate": "auto"})})
    with pytest.raises(ValueError, match="calibrate"):
        StageMonitor(config, out=tmp_path)


def test_monitor_logs_one_line_per_new_boundary(tiny_config, tmp_path, caplog, monkeypatch):
    import devinterp.transitions as transitions

    config = tiny_config.model_copy(update={
        "recipe": tiny_config.recipe.model_copy(update={"train": tiny_config.recipe.train.model_copy(
            update={"steps": 10})}),
        "sweep": tiny_config.sweep.model_copy(update={"metrics": ["loss", "llc"]}),
    })
    seen = []

    def fake(metrics, **settings):  # a boundary at step 4 from the 4th LLC checkpoint on
        n = metrics.loc[metrics["metric"] == "llc", "step"].nunique()
        seen.append(n)
        starts = [0, 4] if n >= 4 else [0]
        if n >= 4:  # holds from the 4th update on, its numbers changing: logged once
            warnings.warn(f"run 'tiny': locality slope {n / 10:.2f} ± 0.03, significantly below 0.5")
        if n in (3, 5):  # clears in between: logged both times
            warnings.warn(f"dropped the llc at {n - 2} checkpoint(s) flagged unhealthy")
        return pd.DataFrame({"run": "tiny", "stage": range(1, len(starts) + 1), "start_step": starts,
                             "type": "A", "confidence": 0.9})

    monkeypatch.setattr(transitions, "detect_stages", fake)
    with caplog.at_level(logging.INFO, logger="devinterp.monitor"):
        monitor, _ = _train_with_monitor(config, tmp_path, every=2, llc_every=2, min_llc_checkpoints=3)
    assert seen == [3, 4, 5, 6]  # detection runs from the 3rd LLC checkpoint on, after each measurement
    lines = [r.getMessage() for r in caplog.records if "began at step" in r.getMessage()]
    assert lines == ["step 6: stage 2 (type A) began at step 4 (confidence 0.90, 4 LLC checkpoints)"]
    assert list(monitor.stages["start_step"]) == [0, 4]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == ["step 4: dropped the llc at 1 checkpoint(s) flagged unhealthy",
                      "step 6: run 'tiny': locality slope 0.40 ± 0.03, significantly below 0.5",
                      "step 8: dropped the llc at 3 checkpoint(s) flagged unhealthy"]


@pytest.mark.slow
def test_monitor_measures_the_icl_regression_family_like_the_offline_sweep(tmp_path):
    # another model family (ICLTransformer, regression loss) in a plain loop: same rows as the offline sweep
    from devinterp.api import checkpoint_source, load_results, sweep
    from devinterp.config import parse_config
    from devinterp.models.icl_transformer import ICLTransformer, regression_loss
    from devinterp.recipes.icl_regression import regression_batch

    config = parse_config({
        "name": "icl-live",
        "recipe": {"name": "icl-regression", "model": {"task_size": 2, "max_examples": 4, "n_layers": 1, "n_heads": 2,
                                                      "d_model": 16, "d_mlp": 16},
                   "train": {"steps": 30, "batch_size": 16}},
        "sweep": {"metrics": ["loss", "llc"], "eval_sequences": 64, "eval_batch_size": 32, "llc_sequences": 64,
                  "threads": 1, "calibrate": "off",
                  "llc": {"epsilon": 1e-3, "gamma": 100.0, "nbeta": 10.0, "chains": 2, "burnin": 5, "draws": 10,
                          "batch_size": 16, "init_loss_batches": 2}},
    }, "test")
    recipe = config.recipe
    torch.manual_seed(0)
    model = ICLTransformer(recipe.model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    with StageMonitor(config, out=tmp_path / "live", every=10, llc_every=10, detect=False) as monitor:
        for step in range(recipe.train.steps + 1):
            xs, ys = regression_batch(16, recipe.model.task_size, recipe.model.max_examples, recipe.data, gen)
            loss = regression_loss(model, (xs, ys))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            monitor(step, model)
    run_dir = tmp_path / "live" / "icl-live"
    live = load_results(run_dir).metrics
    assert sorted(live["step"].unique()) == [0, 10, 20, 30]
    assert set(live["metric"]) == {"loss", "llc"}
    offline_cfg = config.model_copy(update={"checkpoints": run_dir / "checkpoints"})
    offline = sweep(checkpoint_source(offline_cfg), offline_cfg, tmp_path / "offline", progress=False)
    pd.testing.assert_frame_equal(_sorted(live), _sorted(offline), check_exact=True)
