"""Recipe 'language': the paper's attention-only language model on offline synthetic text.

The paper (Hoogland et al. 2024, REFERENCE.md §2.1) trained a 2-layer attention-only transformer on a
filtered Pile; here the text is synthetic, generated from a fixed random "language" so that unigram
statistics, bigrams, trigrams and induction each lower the loss:

* **Unigrams**: token probabilities follow Zipf's law, p(rank r) ~ 1 / r^s (s = ``zipf_exponent``),
  over a random assignment of ranks to token ids.
* **Bigrams**: every token a has ``bigram_successors`` successors (drawn by unigram frequency), used
  with Zipf weights; with probability ``bigram_prob`` the next token is drawn from the successors of
  the previous token.
* **Trigrams**: ``trigram_contexts`` frequent pairs (a, b) each have one fixed next token; where the
  previous two tokens form such a pair, the rule fires with probability ``trigram_prob`` (checked first).
* Otherwise the next token is a unigram draw.
* **Induction**: afterwards, up to ``n_copies`` spans (each kept with probability ``copy_prob``) of
  ``span_min``..``span_max`` tokens are copied from earlier in the sequence to a later offset, as in
  the induction recipe: the copy's tokens after its first are predictable only by induction.

The language (ranks, tables) depends on ``table_seed`` and the vocabulary only, so training and
evaluation data share it; the sequences depend on the generator. Generation is vectorised over the
batch (one loop over positions for the Markov chain; one gather per copied span).

Training (:func:`train_language`): AdamW with the recipe's lr and weight decay (the paper: 1e-3,
0.05, constant), gradient clipping, on the fused hook-free model (same weights and names as the
TransformerLens bridge it is initialised from); checkpoints on the log-then-linear schedule, each with
its training state so that :func:`resume_language` (``devinterp refine``) can continue the run exactly.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from devinterp import _io
from devinterp.checkpoints import DirectorySource
from devinterp.config import LanguageDataConfig, RunConfig
from devinterp.recipes.schedule import checkpoint_plan
from devinterp.recipes.train_state import (
    append_refined, data_generator, resume_point, save_step, train_state_path,
)

# Training batches generated per call of the Markov chain: its loop over positions costs about the
# same for any batch size, so it is amortised over several batches (more on a GPU, where the data are
# generated on the device with a device generator).
GENERATE_BATCHES = {"cpu": 8, "cuda": 64}


@dataclass(frozen=True)
class LanguageTables:
    """The fixed random language: unigram probabilities, bigram successors and weights, trigram rules."""

    unigram: Tensor  # Float[V]: probability of each token id
    successors: Tensor  # Long[V, S]: bigram successors of each token
    successor_weights: Tensor  # Float[S]: Zipf weights over a token's successors
    trigram_keys: Tensor  # Long[R] sorted a*V+b of the pairs with a rule
    trigram_next: Tensor  # Long[R]: the next token of each rule

    def trigram_lookup(self, a: Tensor, b: Tensor, d_vocab: int) -> tuple[Tensor, Tensor]:
        """(has_rule: Bool, next_token: Long) for pairs (a, b) of the same shape."""
        if self.trigram_keys.numel() == 0:
            return torch.zeros_like(a, dtype=torch.bool), torch.zeros_like(a)
        key = a * d_vocab + b
        idx = torch.searchsorted(self.trigram_keys, key).clamp(max=self.trigram_keys.numel() - 1)
        return self.trigram_keys[idx] == key, self.trigram_next[idx]


def zipf_probabilities(n: int, exponent: float) -> Tensor:
    """p(rank r) = r^-s / sum_k k^-s for r = 1..n (float64)."""
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    w = ranks.pow(-exponent)
    return w / w.sum()


@lru_cache(maxsize=8)
def _tables(d_vocab: int, zipf_exponent: float, bigram_successors: int, trigram_contexts: int,
            table_seed: int) -> LanguageTables:
    gen = torch.Generator().manual_seed(table_seed)
    by_rank = zipf_probabilities(d_vocab, zipf_exponent)
    token_of_rank = torch.randperm(d_vocab, generator=gen)
    unigram = torch.empty(d_vocab, dtype=torch.float64)
    unigram[token_of_rank] = by_rank
    s = min(bigram_successors, d_vocab)
    successors = torch.multinomial(unigram.expand(d_vocab, -1), s, replacement=False, generator=gen)
    successor_weights = zipf_probabilities(s, zipf_exponent)
    # trigram rules on frequent pairs: a by unigram frequency, b a likely successor of a
    r = min(trigram_contexts, d_vocab * s)
    a = torch.multinomial(unigram, r, replacement=True, generator=gen)
    b = successors[a, torch.multinomial(successor_weights, r, replacement=True, generator=gen)]
    keys, first = torch.unique(a * d_vocab + b, return_inverse=True)
    nxt = torch.multinomial(unigram, keys.numel(), replacement=True, generator=gen)
    del first
    return LanguageTables(unigram.float(), successors, successor_weights.float(), keys, nxt)


def language_tables(d_vocab: int, data: LanguageDataConfig, device: str | torch.device = "cpu") -> LanguageTables:
    """The language of ``data`` over ``d_vocab`` tokens (cached; depends on ``table_seed``, not on a
    generator; built on the CPU and copied to ``device``)."""
    return _tables_on(d_vocab, data.zipf_exponent, data.bigram_successors, data.trigram_contexts, data.table_seed,
                      str(torch.device(device)))


@lru_cache(maxsize=8)
def _tables_on(d_vocab: int, zipf_exponent: float, bigram_successors: int, trigram_contexts: int, table_seed: int,
               device: str) -> LanguageTables:
    t = _tables(d_vocab, zipf_exponent, bigram_successors, trigram_contexts, table_seed)
    if device == "cpu":
        return t
    return LanguageTables(*(getattr(t, f).to(device) for f in ("unigram", "successors", "successor_weights",
                                                                "trigram_keys", "trigram_next")))


def markov_text(batch_size: int, n_ctx: int, d_vocab: int, data: LanguageDataConfig,
                generator: torch.Generator) -> Tensor:
    """Sequences of the n-gram language without copies: Long[batch_size, n_ctx], on the generator's device."""
    dev = generator.device
    tables = language_tables(d_vocab, data, dev)
    b, t = batch_size, n_ctx
    u_tri = torch.rand(b, t, generator=generator, device=dev)
    u_bi = torch.rand(b, t, generator=generator, device=dev)
    uni = torch.multinomial(tables.unigram, b * t, replacement=True, generator=generator).view(b, t)
    pick = torch.multinomial(tables.successor_weights, b * t, replacement=True, generator=generator).view(b, t)
    x = torch.empty(b, t, dtype=torch.long, device=dev)
    x[:, 0] = uni[:, 0]
    use_bi = u_bi < data.bigram_prob
    for i in range(1, t):
        prev = x[:, i - 1]
        # the trigram rule where the pair has one (chance trigram_prob); else a bigram (chance
        # bigram_prob); else a unigram draw
        nxt = torch.where(use_bi[:, i], tables.successors[prev, pick[:, i]], uni[:, i])
        if i >= 2 and data.trigram_prob > 0:
            has, tri = tables.trigram_lookup(x[:, i - 2], prev, d_vocab)
            nxt = torch.where(has & (u_tri[:, i] < data.trigram_prob), tri, nxt)
        x[:, i] = nxt
    return x


def copy_spans(x: Tensor, data: LanguageDataConfig, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Copy spans within each sequence (in turn; later copies may overwrite earlier ones). Returns the
    sequences and Long[batch, n_copies, 3] = (source start i, destination start j, length s), s = 0 for
    a span not drawn. Span k: s in [span_min, span_max], i uniform in [0, T-2s], j uniform in [i+s, T-s]."""
    b, t = x.shape
    n, dev = data.n_copies, generator.device
    lengths = torch.randint(data.span_min, data.span_max + 1, (b, n), generator=generator, device=dev)
    keep = torch.rand(b, n, generator=generator, device=dev) < data.copy_prob
    u_src = torch.rand(b, n, generator=generator, device=dev)
    u_dst = torch.rand(b, n, generator=generator, device=dev)
    src = (u_src * (t - 2 * lengths + 1)).long()
    dst = src + lengths + (u_dst * (t - src - 2 * lengths + 1)).long()
    lengths = torch.where(keep, lengths, torch.zeros_like(lengths))
    pos = torch.arange(t, device=dev).expand(b, t)
    out = x.clone()
    for k in range(n):
        j, s = dst[:, k : k + 1], lengths[:, k : k + 1]
        inside = (pos >= j) & (pos < j + s)
        idx = torch.where(inside, pos - (j - src[:, k : k + 1]), pos)
        out = out.gather(1, idx)
    return out, torch.stack([src, dst, lengths], dim=-1)


def language_batch(batch_size: int, n_ctx: int, d_vocab: int, data: LanguageDataConfig,
                   generator: torch.Generator, return_spans: bool = False):
    """A batch of synthetic text: Long[batch_size, n_ctx] (and the copied spans with ``return_spans``).
    Deterministic given ``generator``."""
    x, spans = copy_spans(markov_text(batch_size, n_ctx, d_vocab, data, generator), data, generator)
    return (x, spans) if return_spans else x


def fixed_language_batches(n_sequences: int, batch_size: int, n_ctx: int, d_vocab: int, data: LanguageDataConfig,
                           seed: int) -> list[Tensor]:
    """A fixed evaluation set, split into batches (the last may be smaller). Same seed -> same data."""
    gen = torch.Generator().manual_seed(seed)
    return list(language_batch(n_sequences, n_ctx, d_vocab, data, gen).split(batch_size))


def sinusoidal_positions(n_ctx: int, d_model: int, row_norm: float) -> Tensor:
    """Float[n_ctx, d_model] sinusoidal position codes (Vaswani et al. 2017: sin and cos of p / 10000^(2i/d)
    in alternate columns), scaled so that every row has norm ``row_norm``. The code of position p - k
    is a fixed rotation of the code of p, so a query-key map can single out the previous position
    at every p at once: what a previous-token head needs."""
    pos = torch.arange(n_ctx, dtype=torch.float64)[:, None]
    freq = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    codes = torch.zeros(n_ctx, d_model, dtype=torch.float64)
    codes[:, 0::2] = torch.sin(pos * freq)
    codes[:, 1::2] = torch.cos(pos * freq)[:, : d_model // 2]
    return (codes / codes.norm(dim=-1, keepdim=True) * row_norm).float()


def train_language(config: RunConfig, run_dir: str | Path, progress: bool = True) -> DirectorySource:
    """Train ``config.recipe`` (a language recipe) into ``run_dir/checkpoints``; return the source.

    If every scheduled checkpoint is already on disk (same recipe hash), nothing is trained. Writes
    ``checkpoints/<step>.safetensors`` (attention-only family: the bridge's parameter names), with
    ``train.save_train_state`` also ``<step>.train_state.pt`` (for :func:`resume_language`),
    ``checkpoints/index.csv`` and ``training.json`` (wall time, steps, final train loss, tokens seen).
    """
    from devinterp.models.attn_only import AttnOnlyTransformer, build_bridge

    recipe = config.recipe
    model_cfg, train = recipe.model, recipe.train
    run_dir = Path(run_dir)
    plan = checkpoint_plan(config, run_dir)
    if plan.complete():
        return DirectorySource(plan.ckpt_dir, model=model_cfg)

    device = _setup_device(config)
    torch.manual_seed(train.seed)
    # the bridge's initialisation (TransformerLens), trained as the fused model with the same names
    init = build_bridge(model_cfg, seed=train.seed).state_dict()
    if train.pos_init == "sinusoidal":
        init["pos_embed.weight"] = sinusoidal_positions(model_cfg.n_ctx, model_cfg.d_model,
                                                        row_norm=float(init["pos_embed.weight"].norm(dim=-1).mean()))
    model = AttnOnlyTransformer.from_state_dict(model_cfg, init).to(device)
    opt = _optimizer(model, train)
    gen = torch.Generator(device=device).manual_seed(train.seed + 1)  # on a GPU, the data are made there
    t0 = time.perf_counter()
    rows = _train_loop(config, model, opt, gen, 0, train.steps, set(plan.steps), plan.ckpt_dir, plan.recipe_hash,
                       progress, per_call=GENERATE_BATCHES.get(device.type, 8))
    seconds = time.perf_counter() - t0
    _io.write_csv(plan.index_path, pd.DataFrame(rows).assign(refined=False))
    _io.write_json(run_dir / "training.json", {
        "recipe": recipe.name, "recipe_hash": plan.recipe_hash, "seconds": round(seconds, 2), "steps": train.steps,
        "n_checkpoints": len(rows), "device": config.device, "final_train_loss": rows[-1]["train_loss"],
        "tokens_seen": train.steps * train.batch_size * model_cfg.n_ctx,
    })
    return DirectorySource(plan.ckpt_dir, model=model_cfg)


def resume_language(config: RunConfig, run_dir: str | Path, start: int, save_steps: list[int],
                    progress: bool = True) -> list[dict]:
    """Continue the recipe's run from its checkpoint at ``start`` and save checkpoints at ``save_steps``
    (all > ``start``): weights, AdamW state and the data stream (the generator's state at the start of
    the data chunk holding step ``start``, that chunk regenerated and the batches before ``start``
    dropped, with the run's ``per_call``) are restored, so the continued run is the original one
    (bitwise on CPU at a fixed thread count). Appends the new rows to ``index.csv`` (``refined`` =
    True) and returns them; errors as :func:`devinterp.recipes.train_state.resume_point`, and
    ValueError naming the state file when its data stream was generated on another device type."""
    from devinterp.checkpoints import load_state_dict
    from devinterp.models.attn_only import AttnOnlyTransformer

    train = config.recipe.train
    plan = checkpoint_plan(config, run_dir)
    point = resume_point(plan, start, save_steps)
    if point is None:
        return []
    device = _setup_device(config)
    state = point.state
    if state["data_device"] != device.type:
        raise ValueError(f"{train_state_path(plan.ckpt_dir, start)}: the run's data were generated on "
                         f"{state['data_device']}; resume it with device {state['data_device']!r}, not "
                         f"{config.device!r}")
    model = AttnOnlyTransformer.from_state_dict(config.recipe.model, load_state_dict(point.weights_file)).to(device)
    opt = _optimizer(model, train)
    opt.load_state_dict(state["optimizer"])
    gen = data_generator(state, device)
    rows = _train_loop(config, model, opt, gen, start, point.save_steps[-1], set(point.save_steps), plan.ckpt_dir,
                       plan.recipe_hash, progress, per_call=int(state["per_call"]), skip=int(state["chunk_position"]))
    return append_refined(plan, point, rows)


def _setup_device(config: RunConfig) -> torch.device:
    device = torch.device(config.device)
    if device.type == "cpu":
        torch.set_num_threads(config.sweep.threads)
    return device


def _optimizer(model, train) -> torch.optim.AdamW:
    """AdamW at the recipe's constant learning rate (no schedule)."""
    return torch.optim.AdamW(model.parameters(), lr=train.lr, betas=(0.9, 0.999), weight_decay=train.weight_decay)


def _train_loop(config: RunConfig, model, opt, gen: torch.Generator, first: int, last: int, wanted: set[int],
                ckpt_dir: Path, recipe_hash: str, progress: bool, per_call: int, skip: int = 0) -> list[dict]:
    """Steps ``first``..``last``. The batches come in chunks of ``per_call``, each generated from ``gen``
    when the previous chunk is used up; the first chunk's first ``skip`` batches are dropped (they were
    the steps before ``first``). At each step: compute the loss, save a checkpoint if the step is
    ``wanted`` (weights before that step's update; with ``train.save_train_state`` also the AdamW
    state, ``gen``'s state before the step's chunk was generated, the step's position in that chunk,
    ``per_call`` and the generator's device type), then update (clipped gradients). Returns the index rows."""
    from devinterp.metrics.losses import next_token_loss

    model_cfg, data, train = config.recipe.model, config.recipe.data, config.recipe.train
    device = torch.device(config.device)
    autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if train.compute_dtype == "bfloat16"
                else contextlib.nullcontext())
    model.train()
    rows, pending, chunk_state = [], [], None
    bar = tqdm(range(first, last + 1), desc=f"train {config.name}", unit="step", disable=not progress)
    for step in bar:
        if not pending:
            chunk_state = gen.get_state()
            chunk = language_batch(train.batch_size * per_call, model_cfg.n_ctx, model_cfg.d_vocab, data, gen)
            pending, skip = list(chunk.split(train.batch_size))[skip:], 0
        position = per_call - len(pending)
        tokens = pending.pop(0).to(device, non_blocking=True)
        with autocast:
            loss = next_token_loss(model, tokens)
        if step in wanted:  # weights before this step's update
            state = None if not train.save_train_state else {
                "optimizer": opt.state_dict(), "data_generator": chunk_state, "chunk_position": position,
                "per_call": per_call, "data_device": gen.device.type}
            rows.append(save_step(ckpt_dir, step, model, model_cfg, loss.item(), recipe_hash, state))
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if step == last:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if train.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        opt.step()
    return rows


__all__ = ["LanguageTables", "copy_spans", "fixed_language_batches", "language_batch", "language_tables",
           "markov_text", "resume_language", "train_language", "zipf_probabilities"]
