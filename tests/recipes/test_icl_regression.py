"""Recipe icl-regression: data statistics, the model's forward, training, the pipeline end to end,
and the config errors of a recipe that is not the token family."""

from __future__ import annotations

import math

import pytest
import torch

from devinterp.config import ConfigError, ICLDataConfig, ICLModelConfig, ICLTrainConfig, parse_config
from devinterp.models.icl_transformer import ICLTransformer, regression_loss, to_tokens
from devinterp.recipes.icl_regression import fixed_regression_batches, lr_factor, regression_batch, ridge_mse

TINY_ICL = {
    "name": "icltiny",
    "recipe": {
        "name": "icl-regression",
        "model": {"task_size": 2, "max_examples": 4, "n_layers": 2, "n_heads": 2, "d_model": 16, "d_mlp": 16},
        "train": {"steps": 60, "batch_size": 32, "lr": 0.01, "lr_schedule": "constant",
                  "schedule": {"n_log": 5, "switch_step": 60, "linear_every": 60}},
    },
    "sweep": {"metrics": ["loss", "llc"], "eval_sequences": 64, "eval_batch_size": 32, "llc_sequences": 64,
              "llc": {"chains": 2, "draws": 8, "burnin": 4, "batch_size": 16, "init_loss_batches": 2,
                      "backend": "sequential", "epsilon": 1e-4, "gamma": 10.0, "nbeta": 20.0}},
    "detect": {"bootstrap": 3},
}


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def test_batches_have_the_shapes_of_the_model_config():
    xs, ys, ts = regression_batch(7, 4, 8, ICLDataConfig(), torch.Generator().manual_seed(0), return_tasks=True)
    assert xs.shape == (7, 8, 4) and ys.shape == (7, 8) and ts.shape == (7, 4)
    batches = fixed_regression_batches(10, 4, ICLModelConfig(task_size=3, max_examples=5), ICLDataConfig(), seed=1)
    assert [tuple(x.shape) for x, _ in batches] == [(4, 5, 3), (4, 5, 3), (2, 5, 3)]
    assert [tuple(y.shape) for _, y in batches] == [(4, 5), (4, 5), (2, 5)]


def test_targets_are_linear_in_the_inputs_plus_noise_of_the_configured_variance():
    n, d, k, var = 20000, 4, 8, 0.125
    xs, ys, ts = regression_batch(n, d, k, ICLDataConfig(noise_variance=var), torch.Generator().manual_seed(3),
                                  return_tasks=True)
    noise = (ys - torch.einsum("bkd,bd->bk", xs, ts)).double().flatten()
    m = noise.numel()
    # sample variance of m Gaussian draws: sd = var * sqrt(2/m); allow 5 sd
    assert abs(noise.var().item() - var) < 5 * var * math.sqrt(2 / m)
    assert abs(noise.mean().item()) < 5 * math.sqrt(var / m)
    # x and t are standard normal; the noise is independent of x
    assert abs(xs.double().var().item() - 1) < 5 * math.sqrt(2 / xs.numel())
    assert abs(ts.double().var().item() - 1) < 5 * math.sqrt(2 / ts.numel())
    corr = torch.corrcoef(torch.stack([noise, xs[..., 0].double().flatten()]))[0, 1]
    assert abs(corr.item()) < 5 / math.sqrt(m)
    # a fresh task for every sequence: tasks of different sequences are uncorrelated
    assert abs(torch.corrcoef(ts[:, :2].double().T)[0, 1].item()) < 5 / math.sqrt(n)


def test_data_is_seeded_and_the_sets_differ_by_seed():
    cfg, data = ICLModelConfig(), ICLDataConfig()
    a = fixed_regression_batches(8, 8, cfg, data, seed=5)
    b = fixed_regression_batches(8, 8, cfg, data, seed=5)
    c = fixed_regression_batches(8, 8, cfg, data, seed=6)
    assert torch.equal(a[0][0], b[0][0]) and torch.equal(a[0][1], b[0][1])
    assert not torch.equal(a[0][0], c[0][0])


def test_bayes_optimal_baseline_matches_theory():
    """Before any example the posterior mean is 0, so its MSE is E[(t.x)^2] + sigma^2 = D + sigma^2; with
    many examples it approaches the noise floor sigma^2 (ridge with penalty sigma^2 = posterior mean)."""
    d, var = 4, 0.125
    xs, ys = regression_batch(20000, d, 40, ICLDataConfig(noise_variance=var), torch.Generator().manual_seed(4))
    mse = ridge_mse(xs.double(), ys.double(), var).mean(0)
    assert mse[0].item() == pytest.approx(d + var, rel=0.03)
    # OLS with k > D+1 examples has expected excess risk sigma^2 * D / (k - D - 1); Bayes is no worse
    k = 39
    assert var <= mse[k].item() <= var * (1 + d / (k - d - 1)) * 1.05
    assert all(mse[i + 1] < mse[i] for i in range(10))  # more examples, lower loss


def test_tokens_interleave_x_and_y():
    xs = torch.arange(12.0).view(1, 3, 4)
    ys = torch.tensor([[100.0, 200.0, 300.0]])
    toks = to_tokens(xs, ys)
    assert toks.shape == (1, 6, 5)
    assert torch.equal(toks[0, 0], torch.tensor([0.0, 0, 1, 2, 3]))
    assert torch.equal(toks[0, 1], torch.tensor([100.0, 0, 0, 0, 0]))
    assert torch.equal(toks[0, 4], torch.tensor([0.0, 8, 9, 10, 11]))
    assert torch.equal(toks[0, 5], torch.tensor([300.0, 0, 0, 0, 0]))


def test_one_cycle_learning_rate():
    tr = ICLTrainConfig(steps=1000, pct_start=0.5, div_factor=100)
    assert lr_factor(0, tr) == pytest.approx(0.01)
    assert lr_factor(500, tr) == pytest.approx(1.0)
    assert lr_factor(1000, tr) == pytest.approx(0.01)
    assert lr_factor(250, tr) == pytest.approx(0.505)
    assert lr_factor(123, ICLTrainConfig(lr_schedule="constant")) == 1.0


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


def _reference_forward(sd: dict, cfg: ICLModelConfig, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Independent computation from the state dict: explicit per-head loops, masked softmax and LayerNorm
    by hand, tokens built by hand."""
    b, k, d = xs.shape
    tokens = torch.zeros(b, 2 * k, d + 1, dtype=torch.float64)
    for i in range(k):
        tokens[:, 2 * i, 1:] = xs[:, i]
        tokens[:, 2 * i + 1, 0] = ys[:, i]
    p = {n: v.double() for n, v in sd.items()}

    def ln(x, name):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-5) * p[name + ".weight"] + p[name + ".bias"]

    T, dh = 2 * k, cfg.d_model // cfg.n_heads
    x = tokens @ p["embed.weight"].T + p["pos_embed"][:T]
    for layer in range(cfg.n_layers):
        pre = f"blocks.{layer}."
        h = ln(x, pre + "ln1")
        heads = []
        for hd in range(cfg.n_heads):
            rows = slice(hd * dh, (hd + 1) * dh)
            q = h @ p[pre + "attn.q.weight"][rows].T
            kk = h @ p[pre + "attn.k.weight"][rows].T
            v = h @ p[pre + "attn.v.weight"][rows].T
            scores = q @ kk.transpose(1, 2) / math.sqrt(dh)
            for i in range(T):
                scores[:, i, i + 1:] = float("-inf")
            heads.append(torch.softmax(scores, -1) @ v)
        x = x + torch.cat(heads, -1) @ p[pre + "attn.o.weight"].T
        h = ln(x, pre + "ln2")
        hidden = torch.clamp(h @ p[pre + "mlp.fc1.weight"].T + p[pre + "mlp.fc1.bias"], min=0)
        x = x + hidden @ p[pre + "mlp.fc2.weight"].T + p[pre + "mlp.fc2.bias"]
    out = ln(x, "ln_final") @ p["unembed.weight"].T + p["unembed.bias"]
    return out[:, 0::2, 0]


def _trained_ish_model(cfg: ICLModelConfig) -> ICLTransformer:
    torch.manual_seed(0)
    model = ICLTransformer(cfg)
    with torch.no_grad():  # LayerNorm affine away from its (1, 0) init, so the check sees it
        for name, p in model.named_parameters():
            if "ln" in name:
                p.add_(0.3 * torch.randn_like(p))
    return model.eval()


def test_fast_forward_matches_an_independent_computation_and_is_deterministic():
    cfg = ICLModelConfig(task_size=3, max_examples=5, n_layers=2, n_heads=2, d_model=8, d_mlp=12)
    model = _trained_ish_model(cfg)
    xs, ys = regression_batch(6, 3, 5, ICLDataConfig(), torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model(xs, ys)
        again = model(xs, ys)
    assert out.shape == (6, 5)
    assert torch.equal(out, again)
    ref = _reference_forward(model.state_dict(), cfg, xs.double(), ys.double())
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)
    # the explicit attention patterns are causal distributions
    pats = model.attention_patterns(xs, ys)
    assert len(pats) == 2 and pats[0].shape == (6, 2, 10, 10)
    torch.testing.assert_close(pats[0].sum(-1), torch.ones(6, 2, 10))
    assert pats[1].triu(1).abs().max() == 0


def test_prediction_k_sees_only_the_prefix():
    cfg = ICLModelConfig(task_size=2, max_examples=6, d_model=16, d_mlp=16, n_heads=2)
    model = _trained_ish_model(cfg)
    xs, ys = regression_batch(3, 2, 6, ICLDataConfig(), torch.Generator().manual_seed(8))
    with torch.no_grad():
        base = model(xs, ys)
        ys2 = ys.clone()
        ys2[:, 3] += 5.0  # y_3 must not affect predictions 0..3 (it is the target of prediction 3)
        xs2 = xs.clone()
        xs2[:, 4] += 5.0  # x_4 must not affect predictions 0..3
        changed_y, changed_x = model(xs, ys2), model(xs2, ys)
    assert torch.equal(changed_y[:, :4], base[:, :4]) and not torch.equal(changed_y[:, 4:], base[:, 4:])
    assert torch.equal(changed_x[:, :4], base[:, :4]) and not torch.equal(changed_x[:, 4], base[:, 4])


def test_state_dict_round_trip_and_shape_errors():
    cfg = ICLModelConfig(task_size=2, max_examples=3, d_model=8, d_mlp=8, n_heads=2)
    model = ICLTransformer(cfg)
    again = ICLTransformer.from_state_dict(cfg, model.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ValueError, match="shape"):
        ICLTransformer.from_state_dict(cfg.model_copy(update={"max_examples": 4}), model.state_dict())
    with pytest.raises(ValueError, match="missing"):
        ICLTransformer.from_state_dict(cfg.model_copy(update={"layer_norm": False}), model.state_dict())


def test_a_few_training_steps_lower_the_loss():
    cfg, data = ICLModelConfig(), ICLDataConfig()
    torch.manual_seed(0)
    model = ICLTransformer(cfg)
    evals = fixed_regression_batches(256, 256, cfg, data, seed=9)
    with torch.no_grad():
        before = regression_loss(model, evals[0]).item()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    for _ in range(150):
        loss = regression_loss(model, regression_batch(64, 4, 8, data, gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = regression_loss(model, evals[0]).item()
    zero = (evals[0][1] ** 2).mean().item()  # predicting 0, the prior mean
    assert after < before - 0.1 and after < zero


# ---------------------------------------------------------------------------------------------
# Config and pipeline
# ---------------------------------------------------------------------------------------------


def test_recipe_union_and_defaults():
    cfg = parse_config({"recipe": {"name": "icl-regression"}})
    assert type(cfg.recipe).__name__ == "ICLRegressionRecipeConfig"
    assert cfg.sweep.metrics == ["loss", "llc", "position_loss"]  # the recipe's default groups
    assert cfg.recipe.model == ICLModelConfig() and cfg.recipe.data.noise_variance == 0.125
    assert parse_config(cfg.model_dump(mode="json")) == cfg  # the resolved config reloads unchanged
    assert type(parse_config({}).recipe).__name__ == "RecipeConfig"  # no name: induction, as before


@pytest.mark.parametrize("group", ["heads", "icl_score", "head_llc"])
def test_token_only_group_on_regression_names_the_field(group, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(f"recipe: {{name: icl-regression}}\nsweep: {{metrics: [loss, {group}]}}\n")
    from devinterp.config import load_config

    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: sweep.metrics.1: group '{group}' does not apply to recipe 'icl-regression'")


def test_other_recipe_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"x.yaml: recipe.name: unknown recipe name.*\(got 'regression'\)"):
        parse_config({"recipe": {"name": "regression"}}, "x.yaml")
    with pytest.raises(ConfigError, match=r"x.yaml: recipe.model.n_ctx: unknown key"):
        parse_config({"recipe": {"name": "icl-regression", "model": {"n_ctx": 16}}}, "x.yaml")
    with pytest.raises(ConfigError, match=r"recipe.model: .*n_heads \(3\) must divide d_model \(64\)"):
        parse_config({"recipe": {"name": "icl-regression", "model": {"n_heads": 3}}}, "x.yaml")
    with pytest.raises(ConfigError, match=r"sweep.metrics.0: group 'position_loss' does not apply to recipe 'induction'"):
        parse_config({"sweep": {"metrics": ["position_loss"]}}, "x.yaml")


def test_config_file_loads():
    from devinterp.config import load_config

    cfg = load_config("configs/icl-regression.yaml")
    assert cfg.recipe.name == "icl-regression" and cfg.recipe.model.n_heads == 4
    assert (cfg.recipe.model.task_size, cfg.recipe.model.max_examples, cfg.recipe.data.noise_variance) == (4, 8, 0.125)
    assert {"loss", "llc"} <= set(cfg.sweep.metrics)
    # the 5x longer variant differs only in its name, length and checkpoint schedule
    long = load_config("configs/icl-regression-100k.yaml")
    assert long.recipe.train.steps == 5 * cfg.recipe.train.steps
    assert long.sweep == cfg.sweep and long.recipe.model == cfg.recipe.model and long.recipe.data == cfg.recipe.data
    assert long.recipe.train.model_dump(exclude={"steps", "schedule"}) == cfg.recipe.train.model_dump(
        exclude={"steps", "schedule"})


@pytest.fixture(scope="module")
def icl_run(tmp_path_factory):
    import devinterp

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("icl")
    config = parse_config(TINY_ICL, "tests/recipes/test_icl_regression.py:TINY_ICL")
    return config, out, devinterp.run(config, out, progress=False)


def test_run_end_to_end_on_regression(icl_run):
    import json

    from devinterp.checkpoints import DirectorySource
    from devinterp.recipes.schedule import checkpoint_schedule

    config, out, results = icl_run
    run_dir = out / "icltiny"
    steps = checkpoint_schedule(60, config.recipe.train.schedule)
    m = results.metrics
    assert set(m["metric"]) == {"loss", "llc"}
    assert sorted(m.loc[m["metric"] == "loss", "step"]) == steps
    agg = m[(m["metric"] == "llc") & m["chain"].isna()]
    assert sorted(agg["step"]) == steps and agg["stderr"].notna().all()
    assert (m.loc[m["metric"] == "llc", "chain"].dropna().nunique()) == 2
    assert (run_dir / "stages.csv").is_file() and (run_dir / "report.html").is_file()
    # the loss is the MSE on the held-out set: the last checkpoint beats the first
    loss = m[m["metric"] == "loss"].set_index("step")["value"]
    assert loss[60] < loss[0]
    # self-describing checkpoints: the folder alone gives the family and architecture
    src = DirectorySource(run_dir / "checkpoints")
    assert src.model_config() == config.recipe.model
    training = json.loads((run_dir / "training.json").read_text())
    assert training["recipe"] == "icl-regression" and training["seconds"] > 0
    assert training["final_eval_loss"] < training["baseline_zero_loss"] + 1.0
    assert training["baseline_ridge_loss"] < training["baseline_zero_loss"]


def test_sweep_loss_is_the_mean_of_the_per_position_losses(icl_run, tmp_path):
    from devinterp.api import sweep
    from devinterp.checkpoints import DirectorySource

    config, out, results = icl_run
    cfg = config.model_copy(update={"name": "pos", "checkpoints": out / "icltiny" / "checkpoints",
                                    "sweep": config.sweep.model_copy(update={"metrics": ["loss", "position_loss"]})})
    table = sweep(DirectorySource(cfg.checkpoints), cfg, tmp_path, progress=False)
    pos = table[table["metric"] == "position_loss"]
    assert sorted(pos["position"].unique()) == [0, 1, 2, 3]
    by_step = pos.groupby("step")["value"].mean()
    loss = table[table["metric"] == "loss"].set_index("step")["value"]
    torch.testing.assert_close(torch.tensor(by_step.sort_index().to_numpy()),
                               torch.tensor(loss.sort_index().to_numpy()), rtol=1e-5, atol=1e-6)
    # the same numbers as the run's own sweep (common random numbers)
    first = results.metrics[results.metrics["metric"] == "loss"].set_index("step")["value"]
    torch.testing.assert_close(torch.tensor(first.sort_index().to_numpy()),
                               torch.tensor(loss.sort_index().to_numpy()))


def test_checkpoints_of_another_family_are_refused(icl_run, tiny_run, tmp_path):
    from devinterp.api import sweep
    from devinterp.checkpoints import DirectorySource
    from devinterp.recipes.registry import FamilyMismatch

    config, out, _ = icl_run
    _, token_out = tiny_run
    cfg = config.model_copy(update={"name": "mix", "checkpoints": token_out / "tiny" / "checkpoints"})
    with pytest.raises(FamilyMismatch, match="attn-only models, but recipe 'icl-regression' measures icl-transformer"):
        sweep(DirectorySource(cfg.checkpoints), cfg, tmp_path, progress=False)


def test_checkpoint_metadata_names_the_family_and_old_files_are_attention_only(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from devinterp.checkpoints import DirectorySource, save_checkpoint
    from devinterp.config import ModelConfig

    icl = ICLModelConfig(task_size=2, max_examples=3, d_model=8, d_mlp=8, n_heads=2)
    (tmp_path / "a").mkdir()
    path = save_checkpoint(tmp_path / "a" / "5.safetensors", ICLTransformer(icl).state_dict(), step=5, model=icl)
    with safe_open(str(path), framework="pt") as fh:
        assert fh.metadata()["model_family"] == "icl-transformer"
    assert DirectorySource(tmp_path / "a").model_config() == icl
    # a checkpoint written before families existed: no model_family key -> the attention-only family
    (tmp_path / "b").mkdir()
    old = ModelConfig(n_heads=2, d_model=8, d_head=4, n_ctx=8, d_vocab=8)
    save_file({"w": torch.ones(2)}, str(tmp_path / "b" / "3.safetensors"),
              metadata={"step": "3", "model_config": old.model_dump_json()})
    assert DirectorySource(tmp_path / "b").model_config() == old


def test_resume_reproduces_the_one_cycle_run_bitwise(tmp_path):
    """Weights, AdamW, the one-cycle schedule's position and the data stream are restored: resuming from
    an earlier checkpoint gives exactly the checkpoint the uninterrupted run saved later."""
    import pandas as pd

    from devinterp.checkpoints import load_state_dict
    from devinterp.recipes.icl_regression import resume_icl_regression, train_icl_regression

    torch.set_num_threads(1)
    spec = {**TINY_ICL, "recipe": {**TINY_ICL["recipe"], "train": {
        "steps": 40, "batch_size": 16, "lr": 0.01, "lr_schedule": "onecycle", "pct_start": 0.5, "div_factor": 10,
        "schedule": {"n_log": 4, "switch_step": 40, "linear_every": 40}}}}
    config = parse_config(spec, "test")
    run_dir = tmp_path / "icltiny"
    train_icl_regression(config, run_dir, progress=False)
    ckpt_dir = run_dir / "checkpoints"
    index = pd.read_csv(ckpt_dir / "index.csv")
    steps = sorted(index["step"])
    start, target = steps[-3], steps[-1]  # the resumed stretch crosses the schedule's peak at step 20
    assert start < 20 < target
    original = load_state_dict(ckpt_dir / f"{target}.safetensors")
    index[index["step"] != target].to_csv(ckpt_dir / "index.csv", index=False)
    (ckpt_dir / f"{target}.safetensors").unlink()
    rows = resume_icl_regression(config, run_dir, start, [target], progress=False)
    assert [r["step"] for r in rows] == [target]
    again = load_state_dict(ckpt_dir / f"{target}.safetensors")
    for name, value in original.items():
        assert torch.equal(value, again[name]), name
    assert bool(pd.read_csv(ckpt_dir / "index.csv").set_index("step").loc[target, "refined"])


def test_refine_densifies_a_regression_run(icl_run, tmp_path):
    """`devinterp refine` on the regression recipe: new checkpoints inside the window, measured, re-detected."""
    import shutil

    import pandas as pd

    import devinterp
    from devinterp.checkpoints import DirectorySource

    config, out, _ = icl_run
    run_dir = tmp_path / "icltiny"
    shutil.copytree(out / "icltiny", run_dir)
    steps = DirectorySource(run_dir / "checkpoints").steps
    mid = steps[len(steps) // 2]
    pd.DataFrame([{"run": "icltiny", "stage": 1, "start_step": 0, "end_step": mid, "type": "A"},
                  {"run": "icltiny", "stage": 2, "start_step": mid, "end_step": steps[-1], "type": "A",
                   "boundary_lo": mid, "boundary_hi": mid}]).to_csv(run_dir / "stages.csv", index=False)
    devinterp.refine(run_dir, points=3, progress=False)
    after = DirectorySource(run_dir / "checkpoints").steps
    lo, hi = steps[steps.index(mid) - 1], steps[steps.index(mid) + 1]
    new = sorted(set(after) - set(steps))
    assert new and all(lo < s < hi for s in new)
    metrics = devinterp.load_results(run_dir).metrics
    assert set(metrics.loc[metrics["metric"] == "llc", "step"]) == set(after)
