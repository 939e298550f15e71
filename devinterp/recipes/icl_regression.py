"""Recipe 'icl-regression': in-context linear regression (Hoogland et al. 2024, REFERENCE.md §2.2).

Data: per sequence a task t ~ N(0, I_D), inputs x_k ~ N(0, I_D) and targets y_k = t.x_k + N(0, sigma^2),
k = 1..K, a fresh task for every sequence (infinite task diversity). The model
(:class:`~devinterp.models.icl_transformer.ICLTransformer`) predicts each y_k from the prefix
(x_1, y_1, ..., x_k); the loss is the mean squared error over all K predictions. Training: AdamW
(weight decay 0 = the paper's Adam) with a one-cycle or constant learning rate; self-describing
safetensors checkpoints (``model_family: icl-transformer``) on the log-spaced schedule of
``train.schedule``; ``training.json`` records the wall time and the final metrics. Seeded and
deterministic at a fixed thread count.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from devinterp import _io
from devinterp.checkpoints import DirectorySource
from devinterp.config import ICLDataConfig, ICLModelConfig, ICLTrainConfig, RunConfig
from devinterp.recipes.schedule import checkpoint_plan
from devinterp.recipes.train_state import append_refined, data_generator, resume_point, save_step

FINAL_EVAL_SEQUENCES = 2048
FINAL_EVAL_SEED = 777  # the final held-out loss in training.json (the sweep has its own seeds)


def regression_batch(batch_size: int, task_size: int, n_examples: int, data: ICLDataConfig,
                     generator: torch.Generator, return_tasks: bool = False):
    """A batch of regression sequences: ``(xs: Float[batch, K, D], ys: Float[batch, K])`` (and the tasks
    ``Float[batch, D]`` with ``return_tasks``). Deterministic given ``generator``; draws t, then x, then the noise."""
    tasks = torch.randn(batch_size, task_size, generator=generator)
    xs = torch.randn(batch_size, n_examples, task_size, generator=generator)
    noise = torch.randn(batch_size, n_examples, generator=generator) * math.sqrt(data.noise_variance)
    ys = torch.einsum("bkd,bd->bk", xs, tasks) + noise
    return (xs, ys, tasks) if return_tasks else (xs, ys)


def fixed_regression_batches(n_sequences: int, batch_size: int, model: ICLModelConfig, data: ICLDataConfig,
                             seed: int) -> list[tuple[Tensor, Tensor]]:
    """A fixed evaluation set of ``n_sequences`` sequences of K = ``model.max_examples`` pairs, split into
    batches ``(xs, ys)`` (the last may be smaller). Same seed -> same data."""
    gen = torch.Generator().manual_seed(seed)
    xs, ys = regression_batch(n_sequences, model.task_size, model.max_examples, data, gen)
    return list(zip(xs.split(batch_size), ys.split(batch_size)))


def ridge_mse(xs: Tensor, ys: Tensor, noise_variance: float) -> Tensor:
    """Squared error of the Bayes-optimal prediction under the task prior N(0, I): the posterior mean
    (ridge with penalty sigma^2) of t from the k earlier pairs, at every position. Float[batch, K].

    Baseline for the recipe (the paper's 'ridge' solution, which ICL approaches): at k = 0 it predicts 0.
    """
    b, k, d = xs.shape
    out = torch.empty(b, k, dtype=xs.dtype)
    eye = torch.eye(d, dtype=xs.dtype)
    for j in range(k):
        x_prev, y_prev = xs[:, :j], ys[:, :j]
        a = x_prev.transpose(1, 2) @ x_prev + max(noise_variance, 1e-12) * eye  # [b, d, d]
        t_hat = torch.linalg.solve(a, (x_prev.transpose(1, 2) @ y_prev.unsqueeze(-1))).squeeze(-1)
        out[:, j] = (torch.einsum("bd,bd->b", xs[:, j], t_hat) - ys[:, j]) ** 2
    return out


def lr_factor(step: int, train: ICLTrainConfig) -> float:
    """Multiplier of ``train.lr`` at ``step`` (one-cycle: linear up to 1 at pct_start, then down)."""
    if train.lr_schedule == "constant":
        return 1.0
    low = 1.0 / train.div_factor
    warm = max(train.pct_start * train.steps, 1.0)
    if step <= warm:
        return low + (1.0 - low) * step / warm
    return max(1.0 - (1.0 - low) * (step - warm) / max(train.steps - warm, 1.0), low)


def train_icl_regression(config: RunConfig, run_dir: str | Path, progress: bool = True) -> DirectorySource:
    """Train ``config.recipe`` (an icl-regression recipe) into ``run_dir/checkpoints``; return the source.

    If every scheduled checkpoint is already on disk (same recipe hash), nothing is trained.
    Writes ``checkpoints/<step>.safetensors`` (with ``train.save_train_state`` also
    ``<step>.train_state.pt``, for :func:`resume_icl_regression`), ``checkpoints/index.csv`` (step, file,
    train_loss, recipe_hash, refined) and ``training.json`` (wall time, steps, final train loss, final held-out loss with its
    baselines: predicting 0 and the Bayes-optimal ridge predictor).
    """
    recipe = config.recipe
    model_cfg, data, train = recipe.model, recipe.data, recipe.train
    run_dir = Path(run_dir)
    plan = checkpoint_plan(config, run_dir)
    ckpt_dir, steps, recipe_hash, index_path = plan.ckpt_dir, plan.steps, plan.recipe_hash, plan.index_path
    if plan.complete():
        return DirectorySource(ckpt_dir, model=model_cfg)

    from devinterp.models.icl_transformer import ICLTransformer, heldout_regression_losses

    torch.set_num_threads(config.sweep.threads)
    torch.manual_seed(train.seed)
    model = ICLTransformer(model_cfg).to(config.device)
    opt, sched = _optimizer(model, train)
    gen = torch.Generator().manual_seed(train.seed + 1)
    t0 = time.perf_counter()
    rows = _train_loop(config, model, opt, sched, gen, 0, train.steps, set(steps), ckpt_dir, recipe_hash, progress)
    seconds = time.perf_counter() - t0
    _io.write_csv(index_path, pd.DataFrame(rows).assign(refined=False))

    model.eval()
    evals = fixed_regression_batches(FINAL_EVAL_SEQUENCES, 256, model_cfg, data, FINAL_EVAL_SEED)
    per_pos = heldout_regression_losses(model, [(x.to(config.device), y.to(config.device)) for x, y in evals]).cpu()
    xs_all, ys_all = torch.cat([x for x, _ in evals]), torch.cat([y for _, y in evals])
    ridge = ridge_mse(xs_all.double(), ys_all.double(), data.noise_variance)
    _io.write_json(run_dir / "training.json", {
        "recipe": recipe.name, "recipe_hash": recipe_hash, "seconds": round(seconds, 2), "steps": train.steps,
        "n_checkpoints": len(rows), "threads": config.sweep.threads, "device": config.device,
        "final_train_loss": rows[-1]["train_loss"],
        "final_eval_loss": float(per_pos.mean()),
        "final_eval_loss_by_position": [round(float(v), 5) for v in per_pos.mean(0)],
        "eval_sequences": FINAL_EVAL_SEQUENCES,
        "baseline_zero_loss": float((ys_all.double() ** 2).mean()),
        "baseline_ridge_loss": float(ridge.mean()),
        "baseline_ridge_by_position": [round(float(v), 5) for v in ridge.mean(0)],
    })
    return DirectorySource(ckpt_dir, model=model_cfg)


def resume_icl_regression(config: RunConfig, run_dir: str | Path, start: int, save_steps: list[int],
                          progress: bool = True) -> list[dict]:
    """Continue the recipe's run from its checkpoint at ``start`` and save checkpoints at ``save_steps``
    (all > ``start``): weights, AdamW and learning-rate-schedule state and the data stream are
    restored, so the continued run is the original one (bitwise on CPU at a fixed thread count).
    Appends the new rows to ``index.csv`` (``refined`` = True) and returns them; errors as
    :func:`devinterp.recipes.train_state.resume_point`."""
    from devinterp.checkpoints import load_state_dict
    from devinterp.models.icl_transformer import ICLTransformer

    train = config.recipe.train
    plan = checkpoint_plan(config, run_dir)
    point = resume_point(plan, start, save_steps)
    if point is None:
        return []
    torch.set_num_threads(config.sweep.threads)
    model = ICLTransformer(config.recipe.model).to(config.device)
    model.load_state_dict(load_state_dict(point.weights_file))
    opt, sched = _optimizer(model, train)
    opt.load_state_dict(point.state["optimizer"])
    sched.load_state_dict(point.state["scheduler"])
    rows = _train_loop(config, model, opt, sched, data_generator(point.state), start, point.save_steps[-1],
                       set(point.save_steps), plan.ckpt_dir, plan.recipe_hash, progress)
    return append_refined(plan, point, rows)


def _optimizer(model, train: ICLTrainConfig):
    opt = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, train))


def _train_loop(config: RunConfig, model, opt, sched, gen: torch.Generator, first: int, last: int, wanted: set[int],
                ckpt_dir: Path, recipe_hash: str, progress: bool) -> list[dict]:
    """Steps ``first``..``last``: draw the batch, compute the loss, save a checkpoint at ``wanted`` steps
    (weights, optimizer, schedule and data-stream state before that step's batch and update), update.
    Returns the index rows."""
    from devinterp.models.icl_transformer import regression_loss

    model_cfg, data, train = config.recipe.model, config.recipe.data, config.recipe.train
    model.train()
    rows = []
    bar = tqdm(range(first, last + 1), desc=f"train {config.name}", unit="step", disable=not progress)
    for step in bar:
        gen_state = gen.get_state() if step in wanted and train.save_train_state else None
        xs, ys = regression_batch(train.batch_size, model_cfg.task_size, model_cfg.max_examples, data, gen)
        loss = regression_loss(model, (xs.to(config.device), ys.to(config.device)))
        if step in wanted:  # weights before this step's update
            state = None if gen_state is None else {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                                    "data_generator": gen_state}
            rows.append(save_step(ckpt_dir, step, model, model_cfg, loss.item(), recipe_hash, state))
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if step == last:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return rows


__all__ = ["fixed_regression_batches", "lr_factor", "regression_batch", "resume_icl_regression", "ridge_mse",
           "train_icl_regression"]
