#!/usr/bin/env python
"""Does the paper's positional scheme form induction heads where learned absolute positions do not?

Trains a language-recipe config's model with "shortformer" positions (the positional embedding added,
after LayerNorm, to the inputs of queries and keys only, as TransformerLens 2's shortformer; the
residual stream carries tokens alone) with the same initial weights, data stream and optimiser as
`devinterp train`, and prints the held-out loss and the best layer-0 previous-token and layer-1
induction scores (and their multiple of uniform attention's) every 500 steps, with its own held-out
set, outside the sweep; ``standard`` as the third argument runs the usual positions through this same
code (a control: its head scores match `devinterp train`'s checkpoints).

Kept as the record of BENCHMARKS.md's shortformer row (2026-11-28). Since then the recipe has the
option itself (`recipe.model.positional_embedding_type: shortformer`, through the sweep too, with the
bridge made shortformer by two hooks), and this script builds that model; scripts/context_length_study.py's
`v512c128sf` and `v512c256sf-sparse` variants run it end to end.

    python scripts/shortformer_experiment.py CONFIG STEPS [standard]

CONFIG is a YAML file or the name of a variant of scripts/context_length_study.py (e.g. v64c128).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from devinterp.config import load_config, parse_config
from devinterp.metrics.heads import chance_scores, induction_scores, previous_token_scores, repeated_random_tokens
from devinterp.models.attn_only import AttnOnlyTransformer, build_bridge
from devinterp.recipes.language import GENERATE_BATCHES, fixed_language_batches, language_batch


def load(config: str):
    """A run config from a YAML file, or a variant of scripts/context_length_study.py by name."""
    if Path(config).is_file():
        return load_config(config)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from context_length_study import VARIANTS, variant_config

    if config not in VARIANTS:
        sys.exit(f"{config}: neither a config file nor a variant of context_length_study.py ({', '.join(VARIANTS)})")
    return parse_config(variant_config(config), f"context_length_study.py:{config}")


def main(config: str, steps: int, standard: bool) -> None:
    torch.set_num_threads(1)
    cfg = load(config)
    m, data, train = cfg.recipe.model, cfg.recipe.data, cfg.recipe.train
    torch.manual_seed(train.seed)
    # the initial weights of `devinterp train` (from the bridge; the same parameters either way)
    m = m.model_copy(update={"positional_embedding_type": "standard" if standard else "shortformer"})
    model = AttnOnlyTransformer.from_state_dict(m, build_bridge(m, seed=train.seed).state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=train.lr, betas=(0.9, 0.999), weight_decay=train.weight_decay)
    gen = torch.Generator().manual_seed(train.seed + 1)  # the trainer's data stream, in the trainer's chunks
    held_out = torch.cat(fixed_language_batches(32, 32, m.n_ctx, m.d_vocab, data, seed=12345))
    repeated = repeated_random_tokens(32, m.n_ctx // 2, m.d_vocab, seed=999)
    chance = chance_scores(m.n_ctx)
    t0, pending = time.time(), []
    for step in range(steps + 1):
        if step % 500 == 0:
            with torch.no_grad():
                held_patterns, rep_patterns = model.attention_patterns(held_out), model.attention_patterns(repeated)
                logits = model(held_out)
                loss = F.cross_entropy(logits[:, :-1].reshape(-1, m.d_vocab), held_out[:, 1:].reshape(-1))
                prev = float(previous_token_scores(held_patterns)[0].max())
                ind = float(induction_scores(rep_patterns, repeated)[1].max())
            print(f"step {step:6d} loss {float(loss):.3f}  L0 prev max {prev:.3f} ({prev / chance['prev_token']:.1f}x)  "
                  f"L1 ind max {ind:.3f} ({ind / chance['induction']:.1f}x)  [{time.time() - t0:.0f}s]", flush=True)
        if step == steps:
            break
        if not pending:
            chunk = language_batch(train.batch_size * GENERATE_BATCHES["cpu"], m.n_ctx, m.d_vocab, data, gen)
            pending = list(chunk.split(train.batch_size))
        tokens = pending.pop(0)
        loss = F.cross_entropy(model(tokens)[:, :-1].reshape(-1, m.d_vocab), tokens[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        opt.step()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), len(sys.argv) > 3 and sys.argv[3] == "standard")
