"""Recipe 'induction': a 2-layer attention-only TransformerLens model that learns induction heads.

Trains on the synthetic task of :mod:`devinterp.recipes.data` with AdamW and saves self-describing
safetensors checkpoints (weights + model config + step + train loss) on the schedule of
:mod:`devinterp.recipes.schedule`. Seeded and deterministic at a fixed thread count.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from devinterp import _io
from devinterp.checkpoints import DirectorySource
from devinterp.config import RunConfig
from devinterp.models.attn_only import build_bridge
from devinterp.recipes.data import induction_batch
from devinterp.recipes.schedule import checkpoint_plan
from devinterp.recipes.train_state import (
    append_refined, data_generator, resume_point, save_step, train_state_path,
)


def train_induction(config: RunConfig, run_dir: str | Path, progress: bool = True) -> DirectorySource:
    """Train the recipe of ``config.recipe`` into ``run_dir/checkpoints`` and return the source.

    If every scheduled checkpoint is already on disk (same config hash), nothing is trained.
    Outputs: ``checkpoints/<step>.safetensors``, with ``train.save_train_state`` also
    ``<step>.train_state.pt`` (AdamW state and the data generator's state, for :func:`resume_induction`),
    and ``checkpoints/index.csv`` (step, file, train_loss, recipe_hash, refined).
    """
    recipe = config.recipe
    run_dir = Path(run_dir)
    plan = checkpoint_plan(config, run_dir)
    ckpt_dir, steps, recipe_hash, index_path = plan.ckpt_dir, plan.steps, plan.recipe_hash, plan.index_path
    if plan.complete():
        return DirectorySource(ckpt_dir, model=recipe.model)

    torch.set_num_threads(config.sweep.threads)
    torch.manual_seed(recipe.train.seed)
    model = build_bridge(recipe.model, seed=recipe.train.seed, device=config.device)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.train.lr, weight_decay=recipe.train.weight_decay)
    gen = torch.Generator().manual_seed(recipe.train.seed + 1)
    t0 = time.perf_counter()
    rows = _train_loop(config, model, opt, gen, 0, recipe.train.steps, set(steps), ckpt_dir, recipe_hash, progress)
    _io.write_csv(index_path, pd.DataFrame(rows).assign(refined=False))
    _io.write_json(
        run_dir / "training.json",
        {"recipe": recipe.name, "recipe_hash": recipe_hash, "seconds": round(time.perf_counter() - t0, 2),
         "steps": recipe.train.steps, "n_checkpoints": len(rows), "final_train_loss": rows[-1]["train_loss"]},
    )
    return DirectorySource(ckpt_dir, model=recipe.model)


def resume_induction(config: RunConfig, run_dir: str | Path, start: int, save_steps: list[int],
                     progress: bool = True) -> list[dict]:
    """Continue the recipe's training run from its checkpoint at step ``start`` and save checkpoints at
    ``save_steps`` (all > ``start``); the run's weights, AdamW state and data stream are restored, so
    the continued run is the original one (at a fixed thread count, bitwise on CPU).

    Appends the new checkpoints to ``checkpoints/index.csv`` (``refined`` = True; steps already there
    are not overwritten) and returns their index rows. Raises FileNotFoundError naming the missing file
    when the checkpoint at ``start`` was saved without its training state.
    """
    from devinterp.checkpoints import load_state_dict

    recipe = config.recipe
    plan = checkpoint_plan(config, run_dir)
    point = resume_point(plan, start, save_steps)
    if point is None:
        return []
    torch.set_num_threads(config.sweep.threads)
    model = build_bridge(recipe.model, seed=recipe.train.seed, device=config.device)
    model.load_state_dict(load_state_dict(point.weights_file))
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.train.lr, weight_decay=recipe.train.weight_decay)
    opt.load_state_dict(point.state["optimizer"])
    rows = _train_loop(config, model, opt, data_generator(point.state), start, point.save_steps[-1],
                       set(point.save_steps), plan.ckpt_dir, plan.recipe_hash, progress)
    return append_refined(plan, point, rows)


def _train_loop(config: RunConfig, model, opt, gen: torch.Generator, first: int, last: int, wanted: set[int],
                ckpt_dir: Path, recipe_hash: str, progress: bool) -> list[dict]:
    """Steps ``first``..``last``: at each, draw the batch, compute the loss, save a checkpoint if the
    step is ``wanted`` (weights before that step's update, with the optimizer state and the data
    generator's state *before* the batch was drawn), then update. Returns the index rows."""
    recipe = config.recipe
    model.train()
    rows = []
    bar = tqdm(range(first, last + 1), desc=f"train {config.name}", unit="step", disable=not progress)
    for step in bar:
        gen_state = gen.get_state() if step in wanted and recipe.train.save_train_state else None
        tokens = induction_batch(recipe.train.batch_size, recipe.model.n_ctx, recipe.model.d_vocab, recipe.data, gen)
        loss = model(tokens.to(config.device), return_type="loss")
        if step in wanted:
            state = None if gen_state is None else {"optimizer": opt.state_dict(), "data_generator": gen_state}
            rows.append(save_step(ckpt_dir, step, model, recipe.model, loss.item(), recipe_hash, state))
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if step == last:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return rows


__all__ = ["resume_induction", "train_induction", "train_state_path"]
