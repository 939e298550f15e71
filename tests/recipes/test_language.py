"""Recipe 'language': the synthetic text generator (Zipf unigrams, bigram/trigram tables, copied
spans), the paper-size config, and a tiny training + sweep through the pipeline."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from devinterp.config import LanguageDataConfig, parse_config
from devinterp.recipes.language import (
    copy_spans,
    fixed_language_batches,
    language_batch,
    language_tables,
    markov_text,
    sinusoidal_positions,
    zipf_probabilities,
)

V = 300


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_shapes_range_and_seeding():
    data = LanguageDataConfig(span_min=4, span_max=8)
    x = language_batch(5, 40, V, data, _gen(1))
    assert x.shape == (5, 40) and x.dtype == torch.long
    assert int(x.min()) >= 0 and int(x.max()) < V
    assert torch.equal(x, language_batch(5, 40, V, data, _gen(1)))
    assert not torch.equal(x, language_batch(5, 40, V, data, _gen(2)))
    batches = fixed_language_batches(10, 4, 40, V, data, seed=3)
    assert [tuple(b.shape) for b in batches] == [(4, 40), (4, 40), (2, 40)]


def test_unigram_draws_follow_zipf_with_the_configured_exponent():
    for s in (0.8, 1.2):
        data = LanguageDataConfig(zipf_exponent=s, bigram_prob=0.0, trigram_prob=0.0, n_copies=0)
        x = markov_text(400, 250, V, data, _gen(5))  # 100k i.i.d. unigram draws
        counts = np.sort(np.bincount(x.flatten().numpy(), minlength=V))[::-1]
        ranks = np.arange(1, 41)
        slope = np.polyfit(np.log(ranks), np.log(counts[:40]), 1)[0]
        assert slope == pytest.approx(-s, abs=0.08)
        # the frequency of each token matches its table probability (chi-square-sized tolerance)
        p = language_tables(V, data).unigram.numpy()
        freq = np.bincount(x.flatten().numpy(), minlength=V) / x.numel()
        top = np.argsort(p)[::-1][:10]
        assert np.all(np.abs(freq[top] - p[top]) < 5 * np.sqrt(p[top] / x.numel()))
    probs = zipf_probabilities(4, 1.0)
    torch.testing.assert_close(probs, torch.tensor([1, 1 / 2, 1 / 3, 1 / 4], dtype=torch.float64) / (25 / 12))


def test_bigram_and_trigram_tables_are_followed():
    data = LanguageDataConfig(bigram_prob=1.0, trigram_prob=0.0, n_copies=0, bigram_successors=5)
    tables = language_tables(V, data)
    x = markov_text(50, 60, V, data, _gen(7))
    succ = tables.successors
    for b in range(50):
        for t in range(1, 60):
            assert int(x[b, t]) in set(succ[int(x[b, t - 1])].tolist())
    # trigram rules fire wherever the previous pair has one (trigram_prob 1)
    data = LanguageDataConfig(bigram_prob=1.0, trigram_prob=1.0, n_copies=0, bigram_successors=5,
                              trigram_contexts=400)
    tables = language_tables(V, data)
    x = markov_text(200, 60, V, data, _gen(8))
    rules = dict(zip(tables.trigram_keys.tolist(), tables.trigram_next.tolist()))
    fired = 0
    for b in range(200):
        for t in range(2, 60):
            key = int(x[b, t - 2]) * V + int(x[b, t - 1])
            if key in rules:
                assert int(x[b, t]) == rules[key]
                fired += 1
    assert fired > 500  # the rules sit on frequent pairs, so they matter


def test_n_gram_structure_lowers_the_conditional_entropy():
    """The bigram table makes the next token far more predictable from the previous one than from
    unigram statistics alone (plug-in entropies on 200k tokens)."""
    data = LanguageDataConfig(n_copies=0)
    x = markov_text(800, 250, V, data, _gen(9)).numpy()
    prev, nxt = x[:, :-1].ravel(), x[:, 1:].ravel()
    p1 = np.bincount(nxt, minlength=V) / nxt.size
    h1 = -np.sum(p1[p1 > 0] * np.log(p1[p1 > 0]))
    joint = np.bincount(prev * V + nxt, minlength=V * V).reshape(V, V) / nxt.size
    pa = joint.sum(1, keepdims=True)
    nz = joint > 0
    h2 = -np.sum(joint[nz] * np.log((joint / np.where(pa > 0, pa, 1))[nz]))
    assert h2 < h1 - 0.5


def test_repeated_spans_are_copies_from_earlier():
    data = LanguageDataConfig(n_copies=1, copy_prob=1.0, span_min=5, span_max=12)
    x = markov_text(100, 64, V, data, _gen(10))
    y, spans = copy_spans(x, data, _gen(11))
    for b in range(100):
        i, j, s = spans[b, 0].tolist()
        assert 5 <= s <= 12 and i + s <= j and j + s <= 64
        assert torch.equal(y[b, j:j + s], x[b, i:i + s])
        outside = torch.ones(64, dtype=torch.bool)
        outside[j:j + s] = False
        assert torch.equal(y[b, outside], x[b, outside])  # nothing else changed
    # several spans, written in turn: the last one is an exact copy in the final text; skipped spans
    data = LanguageDataConfig(n_copies=4, copy_prob=0.5, span_min=4, span_max=8)
    y, spans = language_batch(200, 64, V, data, _gen(12), return_spans=True)
    kept = (spans[:, :, 2] > 0).float().mean().item()
    assert abs(kept - 0.5) < 5 * math.sqrt(0.25 / 800)
    for b in range(200):
        i, j, s = spans[b, -1].tolist()
        if s:
            assert torch.equal(y[b, j:j + s], y[b, i:i + s])  # source and destination never overlap


def test_paper_config_loads_with_the_papers_architecture():
    from devinterp.config import load_config

    cfg = load_config("configs/induction-paper.yaml")
    m = cfg.recipe.model
    assert cfg.recipe.name == "language" and cfg.device == "cuda"
    assert (m.n_layers, m.n_heads, m.d_model, m.d_head, m.n_ctx, m.d_vocab) == (2, 8, 256, 32, 1024, 5000)
    # the paper's positions (REFERENCE.md §2.1: TransformerLens 'shortformer', its random init)
    assert m.positional_embedding_type == "shortformer" and cfg.recipe.train.pos_init == "random"
    t = cfg.recipe.train
    assert (t.lr, t.weight_decay, t.batch_size, t.steps) == (1e-3, 0.05, 100, 50000)
    assert {"heads", "icl_score", "llc", "loss"} <= set(cfg.sweep.metrics)


TINY_LANG = {
    "name": "langtiny",
    "recipe": {
        "name": "language",
        "model": {"n_layers": 2, "n_heads": 2, "d_model": 32, "d_head": 16, "n_ctx": 32, "d_vocab": 64},
        "data": {"span_min": 4, "span_max": 8, "trigram_contexts": 64},
        "train": {"steps": 80, "batch_size": 16, "lr": 0.003,
                  "schedule": {"n_log": 3, "switch_step": 40, "linear_every": 40}},
    },
    "sweep": {"metrics": ["loss", "icl_score", "heads", "llc"], "eval_sequences": 32, "eval_batch_size": 16,
              "head_sequences": 8, "llc_sequences": 64,
              "llc": {"chains": 2, "draws": 8, "burnin": 4, "batch_size": 16, "init_loss_batches": 2}},
    "detect": {"bootstrap": 3},
}


def test_tiny_language_run_end_to_end(tmp_path):
    import devinterp
    from devinterp.checkpoints import DirectorySource
    from devinterp.config import ModelConfig

    torch.set_num_threads(1)
    config = parse_config(TINY_LANG, "tests/recipes/test_language.py:TINY_LANG")
    results = devinterp.run(config, tmp_path, progress=False)
    m = results.metrics
    assert {"loss", "icl_score", "prev_token", "induction", "llc"} <= set(m["metric"])
    loss = m[m["metric"] == "loss"].set_index("step")["value"]
    assert loss[80] < loss[0] - 0.2  # n-gram statistics are learned within 80 steps
    src = DirectorySource(tmp_path / "langtiny" / "checkpoints")
    assert isinstance(src.model_config(), ModelConfig) and src.model_config() == config.recipe.model
    # the checkpoints load into the TransformerLens bridge (same parameter names) and agree with the fast model
    from devinterp.models.attn_only import AttnOnlyTransformer, build_bridge

    sd = src.load(src.checkpoints[-1])
    tokens = fixed_language_batches(2, 2, 32, 64, config.recipe.data, seed=0)[0]
    bridge = build_bridge(config.recipe.model, state_dict=sd)
    fast = AttnOnlyTransformer.from_state_dict(config.recipe.model, sd)
    with torch.no_grad():
        torch.testing.assert_close(fast(tokens), bridge(tokens), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_reproduction_script_runs_tiny(tmp_path, capsys):
    """scripts/reproduce_induction_paper.py --tiny: the paper config with a tiny model, end to end on the CPU."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "reproduce_induction_paper.py"
    spec = importlib.util.spec_from_file_location("reproduce_induction_paper", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.set_num_threads(1)
    assert mod.main(["--tiny", "--out", str(tmp_path), "-q", "--markdown", str(tmp_path / "r.md")]) == 0
    text = capsys.readouterr().out
    assert "| 1 | LM1 |" in text and "previous-token head L0H" in text and "induction head L1H" in text
    assert "LLC locality: " in text
    # the head scores are measured and printed before the LLC sweep (a time-boxed run still answers)
    assert text.index("quick look (loss, icl_score, heads") < text.index("previous-token head L0H") < text.index("| 1 | LM1 |")
    assert (tmp_path / "induction-paper-tiny" / "report.html").is_file()
    # the formation step is where a head made half its rise
    import pandas as pd

    wide = pd.DataFrame({"L0H0": [0.1, 0.2, 0.5, 0.9, 0.8], "L0H1": [0.0, 0.1, 0.1, 0.1, 0.1]},
                        index=[0, 10, 20, 30, 40])
    assert mod.formation_step(wide, 0) == ("L0H0", 20, 0.1, 0.9)
    # a layer-1 head that never clears twice uniform attention did not form: no order to report
    class Scores:
        def __init__(self, tables): self.tables = tables
        def wide(self, metric): return self.tables[metric]
    flat = pd.DataFrame({"L1H0": [0.001, 0.0015, 0.002, 0.0016, 0.0017]}, index=wide.index)
    lines = mod.head_order(Scores({"prev_token": wide, "induction": flat}), 1024)
    assert "no induction head formed" in lines[1] and "cannot tell" in lines[2]
    rose = pd.DataFrame({"L1H0": [0.001, 0.001, 0.001, 0.4, 0.6]}, index=wide.index)
    lines = mod.head_order(Scores({"prev_token": wide, "induction": rose}), 1024)
    assert "half its rise at step 30" in lines[1] and "YES: previous-token head first" in lines[2]


def test_sinusoidal_positions_make_the_previous_position_one_linear_map():
    """Every row has the asked norm, and one matrix R maps the code of every position p to that of p - 1
    (least squares over all p leaves no residual): a single query-key map finds the previous token
    everywhere. Random codes have no such map."""
    for n_ctx, d in ((128, 64), (1024, 256)):
        codes = sinusoidal_positions(n_ctx, d, row_norm=0.8).double()
        assert torch.allclose(codes.norm(dim=-1), torch.full((n_ctx,), 0.8, dtype=torch.float64), atol=1e-6)
        R = torch.linalg.lstsq(codes[1:], codes[:-1]).solution
        assert (codes[1:] @ R - codes[:-1]).norm() / codes[:-1].norm() < 1e-4
        rand = torch.randn(n_ctx, d, dtype=torch.float64, generator=_gen(0))
        R = torch.linalg.lstsq(rand[1:], rand[:-1]).solution
        assert (rand[1:] @ R - rand[:-1]).norm() / rand[:-1].norm() > 0.5


def test_pos_init_sinusoidal_changes_only_the_positional_embeddings_at_step_0(tmp_path):
    from devinterp.checkpoints import DirectorySource
    from devinterp.recipes.language import train_language

    torch.set_num_threads(1)
    spec = {**TINY_LANG, "recipe": {**TINY_LANG["recipe"], "train": {
        "steps": 2, "batch_size": 4, "schedule": {"n_log": 2, "switch_step": 2, "linear_every": 2}}}}
    states = {}
    for init in ("random", "sinusoidal"):
        spec["recipe"]["train"]["pos_init"] = init
        config = parse_config(spec, "tests/recipes/test_language.py")
        src = train_language(config, tmp_path / init, progress=False)
        states[init] = src.load(src.checkpoints[0])
    rand, sin = states["random"], states["sinusoidal"]
    row_norm = float(rand["pos_embed.weight"].norm(dim=-1).mean())
    torch.testing.assert_close(sin["pos_embed.weight"], sinusoidal_positions(32, 32, row_norm))
    assert all(torch.equal(rand[k], sin[k]) for k in rand if k != "pos_embed.weight")
    # at its default the option is not in the dump, so runs made before it keep their recipe hash
    from devinterp.config import config_hash

    spec["recipe"]["train"].pop("pos_init")
    plain = parse_config(spec, "x")
    assert "pos_init" not in plain.recipe.train.model_dump()
    spec["recipe"]["train"]["pos_init"] = "random"
    assert config_hash(parse_config(spec, "x").recipe) == config_hash(plain.recipe)
    spec["recipe"]["train"]["pos_init"] = "sinusoidal"
    assert config_hash(parse_config(spec, "x").recipe) != config_hash(plain.recipe)


def _resume_config(schedule: dict, steps: int = 30):
    spec = {**TINY_LANG, "recipe": {**TINY_LANG["recipe"], "train": {
        "steps": steps, "batch_size": 4, "lr": 0.003, "schedule": schedule}}}
    return parse_config(spec, "tests/recipes/test_language.py")


def test_resume_reproduces_the_run_bitwise_inside_data_chunks(tmp_path):
    """The batches come in chunks of 8 on the CPU (GENERATE_BATCHES): resuming at a step inside a chunk
    regenerates that chunk from the saved generator state and skips the batches already used, so the
    checkpoints of the resumed run equal those of an uninterrupted run, also inside and across chunks
    and when resuming from a checkpoint that a resume saved."""
    import pandas as pd

    from devinterp.checkpoints import load_state_dict
    from devinterp.recipes.language import GENERATE_BATCHES, resume_language, train_language

    assert GENERATE_BATCHES["cpu"] == 8
    every_step = _resume_config({"n_log": 0, "switch_step": 1, "linear_every": 1})
    train_language(every_step, tmp_path / "ref", progress=False)
    ref_dir = tmp_path / "ref" / "checkpoints"
    ref_loss = pd.read_csv(ref_dir / "index.csv").set_index("step")["train_loss"]

    config = _resume_config({"n_log": 0, "switch_step": 10, "linear_every": 10})  # checkpoints 0, 10, 20, 30
    run_dir = tmp_path / "run"
    train_language(config, run_dir, progress=False)
    ckpt_dir = run_dir / "checkpoints"
    assert sorted(pd.read_csv(ckpt_dir / "index.csv")["step"]) == [0, 10, 20, 30]
    training = (run_dir / "training.json").read_text()
    # 10 is batch 2 of the chunk 8..15; 13 is in that (partly skipped) chunk, 16 starts a chunk, 21 is inside one
    rows = resume_language(config, run_dir, 10, [13, 16, 20, 21], progress=False)
    assert [r["step"] for r in rows] == [13, 16, 21]  # 20 was there already
    # again from a checkpoint the resume saved: 13 is batch 5 of its chunk
    assert [r["step"] for r in resume_language(config, run_dir, 13, [15, 27], progress=False)] == [15, 27]
    index = pd.read_csv(ckpt_dir / "index.csv").set_index("step")
    assert list(index.index) == [0, 10, 13, 15, 16, 20, 21, 27, 30]
    for step in (13, 15, 16, 21, 27):
        assert bool(index.loc[step, "refined"]) and index.loc[step, "train_loss"] == ref_loss[step]
        original = load_state_dict(ref_dir / f"{step}.safetensors")
        again = load_state_dict(ckpt_dir / f"{step}.safetensors")
        assert original.keys() == again.keys()
        for name, value in original.items():
            assert torch.equal(value, again[name]), (step, name)
    assert (run_dir / "training.json").read_text() == training  # written by train_language only


def test_resume_names_the_missing_or_foreign_training_state(tmp_path):
    from devinterp.recipes.language import resume_language, train_language
    from devinterp.recipes.train_state import train_state_path

    config = _resume_config({"n_log": 0, "switch_step": 5, "linear_every": 5}, steps=10)  # checkpoints 0, 5, 10
    train_language(config, tmp_path, progress=False)
    ckpt_dir = tmp_path / "checkpoints"
    train_state_path(ckpt_dir, 5).unlink()
    with pytest.raises(FileNotFoundError, match=r"checkpoints/5\.train_state\.pt: the training state of step 5"):
        resume_language(config, tmp_path, 5, [7], progress=False)
    # a data stream generated on another device type cannot continue here
    path = train_state_path(ckpt_dir, 0)
    state = torch.load(path, weights_only=True)
    torch.save({**state, "data_device": "cuda"}, path)
    with pytest.raises(ValueError, match=r"0\.train_state\.pt: the run's data were generated on cuda"):
        resume_language(config, tmp_path, 0, [3], progress=False)


def test_context_length_study_variants_are_valid_configs_that_differ_only_where_stated():
    import importlib.util
    from pathlib import Path

    from devinterp.config import load_config

    scripts = Path(__file__).resolve().parents[2] / "scripts"
    spec = importlib.util.spec_from_file_location("context_length_study", scripts / "context_length_study.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    base = load_config(scripts.parent / "configs" / "induction-cpu.yaml")
    for name, (vocab, ctx, trigrams, (n, lo, hi), pos_init, steps) in mod.VARIANTS.items():
        cfg = parse_config(mod.variant_config(name), name)
        r = cfg.recipe
        assert (r.model.d_vocab, r.model.n_ctx, r.data.trigram_contexts) == (vocab, ctx, trigrams)
        assert (r.data.n_copies, r.data.span_min, r.data.span_max, r.train.pos_init, r.train.steps) == (
            n, lo, hi, pos_init, steps)
        # everything else as the CPU stand-in
        assert (r.model.d_model, r.model.n_heads, r.train.lr, r.train.batch_size) == (
            base.recipe.model.d_model, base.recipe.model.n_heads, base.recipe.train.lr, base.recipe.train.batch_size)
        assert cfg.sweep.llc == base.sweep.llc
    row = parse_config(mod.variant_config("v512c128sin"), "v").recipe
    longer = parse_config(mod.variant_config("v512c128sin-12k"), "longer")
    assert longer.recipe.train.steps == 12_000
    assert longer.recipe.model_copy(update={"train": longer.recipe.train.model_copy(update={"steps": 8_000})}) == row
    wide = parse_config(mod.variant_config("v512c512sin-sparse"), "wide").recipe
    assert (wide.model.n_ctx, wide.train.batch_size, wide.train.steps) == (512, 8, 12_000)
    # copies as configs/induction-paper.yaml at context 1024, scaled to 512: the same expected share
    paper = load_config(scripts.parent / "configs" / "induction-paper.yaml").recipe

    def copied_share(r):
        return r.data.n_copies * r.data.copy_prob * (r.data.span_min + r.data.span_max) / 2 / r.model.n_ctx

    assert copied_share(wide) == pytest.approx(copied_share(paper))
    # everything else as the row it derives from
    assert wide.model.model_copy(update={"n_ctx": row.model.n_ctx}) == row.model
    assert wide.data.model_copy(update={k: getattr(row.data, k) for k in ("copy_prob", "n_copies", "span_min",
                                                                           "span_max")}) == row.data
    assert wide.train.model_copy(update={"batch_size": row.train.batch_size, "steps": row.train.steps}) == row.train
    # the dense control: the row's copied share at context 512, the rest as the sparse variant
    dense = parse_config(mod.variant_config("v512c512sin-dense"), "dense").recipe
    assert copied_share(dense) == pytest.approx(copied_share(row))
    assert dense.model == wide.model and dense.train == wide.train
    assert dense.data.model_copy(update={"n_copies": row.data.n_copies}) == row.data
    # the rotary variants: the sparse variant with RoPE and no position init; at 1,024 the paper
    # config's own copies and a batch that keeps the rows' tokens per step
    rot = parse_config(mod.variant_config("v512c512rot-sparse"), "rot").recipe
    assert rot.model.positional_embedding_type == "rotary" and rot.train.pos_init == "random"
    assert rot.model.model_copy(update={"positional_embedding_type": "standard"}) == wide.model
    assert rot.data == wide.data
    assert rot.train.model_copy(update={"pos_init": "sinusoidal"}) == wide.train
    long = parse_config(mod.variant_config("v512c1024rot-sparse"), "rot1024").recipe
    assert long.model == rot.model.model_copy(update={"n_ctx": 1024})
    assert long.data.model_copy(update={"n_copies": rot.data.n_copies}) == rot.data
    assert long.data.n_copies == paper.data.n_copies
    assert copied_share(long) == pytest.approx(copied_share(paper))
    assert long.train.batch_size * long.model.n_ctx == row.train.batch_size * row.model.n_ctx
    # the batch control: the sparse variant with 4x the sequences a step (fewer steps); context 256
    # with the same copied share and tokens a step
    big = parse_config(mod.variant_config("v512c512sin-sparse-b32"), "b32").recipe
    assert big.model == wide.model and big.data == wide.data
    assert big.train.model_copy(update={"batch_size": 8, "steps": 12_000}) == wide.train
    assert big.train.batch_size == 4 * wide.train.batch_size
    mid = parse_config(mod.variant_config("v512c256sin-sparse"), "c256").recipe
    assert mid.model == wide.model.model_copy(update={"n_ctx": 256})
    assert copied_share(mid) == pytest.approx(copied_share(paper))
    assert mid.data.model_copy(update={"n_copies": wide.data.n_copies}) == wide.data
    assert mid.train.batch_size * mid.model.n_ctx == row.train.batch_size * row.model.n_ctx
    assert mid.train.model_copy(update={"batch_size": 8}) == wide.train
    mid_b32 = parse_config(mod.variant_config("v512c256sin-sparse-b32"), "c256b32").recipe
    assert mid_b32.model == mid.model and mid_b32.data == mid.data and mid_b32.train == row.train
    for name, batch in (("v512c256sin-sparse-s1", 16), ("v512c256sin-sparse-b32-s1", 32)):
        seeded = parse_config(mod.variant_config(name), name).recipe
        assert (seeded.train.seed, seeded.train.steps, seeded.train.batch_size) == (1, 6_000, batch)
        assert seeded.model == mid.model and seeded.data == mid.data
        assert seeded.train.model_copy(update={"seed": 0, "steps": 12_000, "batch_size": 16}) == mid.train
    mid_dense = parse_config(mod.variant_config("v512c256sin-dense"), "c256d").recipe
    assert copied_share(mid_dense) == pytest.approx(copied_share(row))
    assert mid_dense.model == mid.model and mid_dense.train == mid.train
    assert mid_dense.data.model_copy(update={"n_copies": row.data.n_copies}) == row.data
    # the paper-size screen: configs/induction-paper-short.yaml with one change each (and 12,000 steps)
    short = load_config(scripts.parent / "configs" / "induction-paper-short.yaml")
    sin = parse_config(mod.variant_config("paper-sin1024"), "sin")
    assert sin.recipe.train.pos_init == "sinusoidal" and sin.recipe.train.steps == 12_000
    assert sin.recipe.train.model_copy(update={"pos_init": "random", "steps": 15_000}) == short.recipe.train
    assert (sin.recipe.model, sin.recipe.data, sin.sweep, sin.device) == (
        short.recipe.model, short.recipe.data, short.sweep, short.device)
    q = parse_config(mod.variant_config("paper-sin256"), "sin256").recipe
    assert q.model == short.recipe.model.model_copy(update={"n_ctx": 256})
    assert copied_share(q) == pytest.approx(copied_share(short.recipe))
    assert q.train.batch_size * 256 == short.recipe.train.batch_size * 1024
    assert q.train.model_copy(update={"batch_size": 32}) == sin.recipe.train
    r = parse_config(mod.variant_config("paper-rot1024"), "rot").recipe
    assert r.model == short.recipe.model.model_copy(update={"positional_embedding_type": "rotary"})
    assert r.train == sin.recipe.train.model_copy(update={"pos_init": "random"}) and r.data == short.recipe.data
    sf = parse_config(mod.variant_config("paper-sf1024"), "sf").recipe
    assert sf.model == short.recipe.model.model_copy(update={"positional_embedding_type": "shortformer"})
    assert sf.train == r.train.model_copy(update={"steps": 20_000}) and sf.data == short.recipe.data
    assert sf.model == paper.model  # the paper's architecture
    # the shortformer CPU variants: the row (and the sparse context-256 variant) with the paper's positions
    # and TransformerLens's random init
    sf128 = parse_config(mod.variant_config("v512c128sf"), "sf128").recipe
    assert sf128.model == row.model.model_copy(update={"positional_embedding_type": "shortformer"})
    assert sf128.data == row.data and sf128.train == row.train.model_copy(update={"pos_init": "random"})
    sf256 = parse_config(mod.variant_config("v512c256sf-sparse"), "sf256").recipe
    assert sf256.model == mid.model.model_copy(update={"positional_embedding_type": "shortformer"})
    assert sf256.data == mid.data and sf256.train == mid.train.model_copy(update={"pos_init": "random"})


def test_rotary_positions_keep_old_hashes_train_and_refuse_a_position_init(tmp_path):
    """At its default the option is not in the dump (runs and checkpoints made before it keep their
    hashes and metadata); rotary trains a model whose checkpoints have no pos_embed and reload as
    rotary; pos_init with rotary is an error naming both fields."""
    from devinterp.checkpoints import DirectorySource
    from devinterp.config import ConfigError, config_hash
    from devinterp.models.families import family
    from devinterp.recipes.language import train_language

    spec = {**TINY_LANG, "recipe": {**TINY_LANG["recipe"], "train": {
        "steps": 2, "batch_size": 4, "schedule": {"n_log": 2, "switch_step": 2, "linear_every": 2}}}}
    plain = parse_config(spec, "x")
    assert "positional_embedding_type" not in plain.recipe.model.model_dump()
    spec["recipe"]["model"] = {**spec["recipe"]["model"], "positional_embedding_type": "standard"}
    assert config_hash(parse_config(spec, "x").recipe) == config_hash(plain.recipe)
    spec["recipe"]["model"]["positional_embedding_type"] = "rotary"
    rotary = parse_config(spec, "x")
    assert config_hash(rotary.recipe) != config_hash(plain.recipe)

    torch.set_num_threads(1)
    src = train_language(rotary, tmp_path, progress=False)
    reread = DirectorySource(src.folder)  # the model config from the checkpoints' own metadata
    model_cfg = reread.model_config()
    assert model_cfg.positional_embedding_type == "rotary"
    state = reread.load(reread.checkpoints[-1])
    assert not any("pos_embed" in k for k in state)
    assert family(model_cfg).build_fast(model_cfg, state).rotary
    assert set(family(model_cfg).build_reference(model_cfg, "cpu")(state).state_dict()) == set(state)

    spec["recipe"]["train"]["pos_init"] = "sinusoidal"
    with pytest.raises(ConfigError, match=r"pos_init: sinusoidal.*positional_embedding_type: rotary"):
        parse_config(spec, "my.yaml")


def test_shortformer_positions_train_reload_and_measure(tmp_path):
    """Shortformer (the paper's positions) trains with the language recipe, its checkpoints reload as
    shortformer with a pos_embed, the sweep's bridge (TransformerLens 4 with the shortformer hooks)
    gives the fast model's logits, and a sinusoidal position init is allowed with it."""
    from devinterp.checkpoints import DirectorySource
    from devinterp.config import config_hash
    from devinterp.models.families import family
    from devinterp.recipes.language import train_language

    spec = {**TINY_LANG, "recipe": {**TINY_LANG["recipe"], "train": {
        "steps": 2, "batch_size": 4, "schedule": {"n_log": 2, "switch_step": 2, "linear_every": 2}}}}
    plain = parse_config(spec, "x")
    spec["recipe"]["model"] = {**spec["recipe"]["model"], "positional_embedding_type": "shortformer"}
    sf = parse_config(spec, "x")
    assert config_hash(sf.recipe) != config_hash(plain.recipe)
    torch.set_num_threads(1)
    src = train_language(sf, tmp_path, progress=False)
    reread = DirectorySource(src.folder)
    model_cfg = reread.model_config()
    assert model_cfg.positional_embedding_type == "shortformer"
    state = reread.load(reread.checkpoints[-1])
    assert "pos_embed.weight" in state
    fast = family(model_cfg).build_fast(model_cfg, state)
    bridge = family(model_cfg).build_reference(model_cfg, "cpu")(state)
    tokens = torch.randint(0, model_cfg.d_vocab, (2, model_cfg.n_ctx), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(bridge(tokens), fast(tokens), rtol=1e-5, atol=1e-5)
    spec["recipe"]["train"]["pos_init"] = "sinusoidal"
    assert parse_config(spec, "x").recipe.train.pos_init == "sinusoidal"


@pytest.mark.slow
def test_context_length_study_look_measures_the_checkpoints_on_disk_as_the_run_did(tmp_path, capsys):
    """--look trains nothing and measures the run's checkpoints as a folder of one's own: on a finished
    run it gives the quick sweep's values exactly; with checkpoints missing (a run cut short) it measures
    those there are."""
    import importlib.util
    import shutil
    from pathlib import Path

    from devinterp.results import load_results

    scripts = Path(__file__).resolve().parents[2] / "scripts"
    spec = importlib.util.spec_from_file_location("context_length_study", scripts / "context_length_study.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.set_num_threads(1)
    argv = ["--only", "v512c128sf", "--tiny", "--out", str(tmp_path)]
    assert mod.main(argv) == 0
    run = tmp_path / "v512c128sf-tiny"
    trained = load_results(run).metrics
    assert mod.main(argv + ["--look"]) == 0
    looked = load_results(tmp_path / "look" / "v512c128sf-tiny").metrics
    key = ["step", "metric", "layer", "head"]
    pd.testing.assert_frame_equal(looked.sort_values(key)[key + ["value"]].reset_index(drop=True),
                                  trained.sort_values(key)[key + ["value"]].reset_index(drop=True))
    assert "--look: the" in capsys.readouterr().out
    # a run cut short: no index.csv yet, the last checkpoint not written
    (run / "checkpoints" / "index.csv").unlink()
    last = max(int(p.name.split(".")[0]) for p in (run / "checkpoints").glob("*.safetensors"))
    (run / "checkpoints" / f"{last}.safetensors").unlink()
    shutil.rmtree(tmp_path / "look")
    assert mod.main(argv + ["--look"]) == 0
    partial = load_results(tmp_path / "look" / "v512c128sf-tiny").metrics
    assert sorted(partial["step"].unique()) == sorted(s for s in trained["step"].unique() if s != last)
    expected = trained[trained["step"] != last]
    pd.testing.assert_frame_equal(partial.sort_values(key)[key + ["value"]].reset_index(drop=True),
                                  expected.sort_values(key)[key + ["value"]].reset_index(drop=True))
