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
from devinterp.checkpoints import DirectorySource, save_checkpoint
from devinterp.config import RunConfig
from devinterp.models.attn_only import build_bridge
from devinterp.recipes.data import induction_batch
from devinterp.recipes.schedule import checkpoint_schedule


def train_induction(config: RunConfig, run_dir: str | Path, progress: bool = True) -> DirectorySource:
    """Train the recipe of ``config.recipe`` into ``run_dir/checkpoints`` and return the source.

    If every scheduled checkpoint is already on disk (same config hash), nothing is trained.
    Outputs: ``checkpoints/<step>.safetensors`` and ``checkpoints/index.csv`` (step, file, train_loss).
    """
    recipe = config.recipe
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    steps = checkpoint_schedule(recipe.train.steps, recipe.train.schedule)
    recipe_hash = _recipe_hash(config)
    index_path = ckpt_dir / "index.csv"
    if index_path.is_file():
        index = pd.read_csv(index_path)
        if _index_complete(index, steps, ckpt_dir, recipe_hash):
            return DirectorySource(ckpt_dir, model=recipe.model)

    torch.set_num_threads(config.sweep.threads)
    torch.manual_seed(recipe.train.seed)
    model = build_bridge(recipe.model, seed=recipe.train.seed, device=config.device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.train.lr, weight_decay=recipe.train.weight_decay)
    gen = torch.Generator().manual_seed(recipe.train.seed + 1)
    wanted = set(steps)
    rows = []
    t0 = time.perf_counter()
    bar = tqdm(range(recipe.train.steps + 1), desc=f"train {config.name}", unit="step", disable=not progress)
    for step in bar:
        tokens = induction_batch(recipe.train.batch_size, recipe.model.n_ctx, recipe.model.d_vocab, recipe.data, gen)
        loss = model(tokens.to(config.device), return_type="loss")
        if step in wanted:
            path = save_checkpoint(
                ckpt_dir / f"{step}.safetensors", model.state_dict(), step=step, model=recipe.model,
                extra={"train_loss": loss.item(), "recipe_hash": recipe_hash},
            )
            rows.append({"step": step, "file": path.name, "train_loss": loss.item(), "recipe_hash": recipe_hash})
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if step == recipe.train.steps:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _io.write_csv(index_path, pd.DataFrame(rows))
    _io.write_json(
        run_dir / "training.json",
        {"recipe": recipe.name, "recipe_hash": recipe_hash, "seconds": round(time.perf_counter() - t0, 2),
         "steps": recipe.train.steps, "n_checkpoints": len(rows), "final_train_loss": rows[-1]["train_loss"]},
    )
    return DirectorySource(ckpt_dir, model=recipe.model)


def _recipe_hash(config: RunConfig) -> str:
    from devinterp.config import config_hash

    return config_hash(config.recipe)


def _index_complete(index: pd.DataFrame, steps: list[int], ckpt_dir: Path, recipe_hash: str) -> bool:
    if "recipe_hash" not in index.columns or set(index["recipe_hash"].astype(str)) != {recipe_hash}:
        return False
    if sorted(index["step"].tolist()) != steps:
        return False
    return all((ckpt_dir / f).is_file() for f in index["file"])


__all__ = ["train_induction"]
