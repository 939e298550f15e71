"""The sweep on a real tiny run: table contract, resume, failure isolation."""

import shutil

import pandas as pd
import pytest

from devinterp.api import checkpoint_source, sweep
from devinterp.checkpoints import DirectorySource
from devinterp.tables import METRIC_COLUMNS


@pytest.fixture
def cheap(tiny_run):
    config, out = tiny_run
    return config.model_copy(update={"sweep": config.sweep.model_copy(update={"metrics": ["loss", "icl_score", "heads"]})})


def test_sweep_writes_the_long_table_and_resumes(tiny_run, cheap, tmp_path):
    _, out = tiny_run
    shutil.copytree(out / "tiny" / "checkpoints", tmp_path / "ck")
    config = cheap.model_copy(update={"checkpoints": tmp_path / "ck"})
    table = sweep(checkpoint_source(config, tmp_path), config, tmp_path, progress=False)
    assert list(table.columns[: len(METRIC_COLUMNS)]) == METRIC_COLUMNS
    n_ckpt = len(DirectorySource(tmp_path / "ck"))
    heads = config.recipe.model.n_layers * config.recipe.model.n_heads
    assert len(table) == n_ckpt * (2 + 3 * heads)
    assert table["checkpoint"].max() == n_ckpt - 1
    files = sorted((tmp_path / "tiny" / "metrics").glob("*.parquet"))
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    files[0].unlink()  # as if killed before this one was written
    again = sweep(checkpoint_source(config, tmp_path), config, tmp_path, progress=False)
    pd.testing.assert_frame_equal(again, table)
    assert all(f.stat().st_mtime_ns == m for f, m in mtimes.items() if f != files[0])  # nothing else redone


def test_bad_checkpoint_is_recorded_and_the_rest_go_on(tiny_run, cheap, tmp_path):
    _, out = tiny_run
    shutil.copytree(out / "tiny" / "checkpoints", tmp_path / "ck")
    victim = sorted((tmp_path / "ck").glob("*.safetensors"))[2]
    victim.write_bytes(b"not a checkpoint")
    config = cheap.model_copy(update={"checkpoints": tmp_path / "ck"})
    table = sweep(checkpoint_source(config, tmp_path), config, tmp_path, progress=False)
    from devinterp.manifest import read_manifest

    statuses = read_manifest(tmp_path / "tiny")["checkpoints"]
    bad_step = victim.stem
    assert statuses[bad_step]["status"] == "failed" and victim.name in statuses[bad_step]["reason"]
    assert int(bad_step) not in set(table["step"])
    assert table["step"].nunique() == len(statuses) - 1


def test_other_settings_in_same_folder_are_refused(tiny_run, cheap, tmp_path):
    from devinterp.api import RunDirError, prepare_run_dir

    prepare_run_dir(cheap, tmp_path)
    changed = cheap.model_copy(update={"sweep": cheap.sweep.model_copy(update={"eval_sequences": 7})})
    with pytest.raises(RunDirError, match="--force-new") as err:
        prepare_run_dir(changed, tmp_path)
    # the message names what differs, read from the run's resolved config.yaml, and nothing else
    named = [line.strip() for line in str(err.value).splitlines() if line.startswith("  ")]
    assert named == [f"sweep.eval_sequences: {cheap.sweep.eval_sequences!r} -> 7"]
    assert prepare_run_dir(changed, tmp_path, force_new=True).name == "tiny-2"


def test_how_the_chains_run_is_not_a_measurement_setting(tiny_run, cheap, tmp_path):
    # sweep.llc.cuda_graph changes how the steps are launched, not the chains (same noise and batches):
    # the run folder takes it, and settings frozen by an earlier sweep follow the config for it
    from devinterp.api import measurement_hash, prepare_run_dir
    from devinterp.sweep.calibration import frozen_llc_settings

    graphed = cheap.model_copy(update={"sweep": cheap.sweep.model_copy(
        update={"llc": cheap.sweep.llc.model_copy(update={"cuda_graph": True})})})
    assert measurement_hash(graphed) == measurement_hash(cheap)
    other = cheap.model_copy(update={"sweep": cheap.sweep.model_copy(
        update={"llc": cheap.sweep.llc.model_copy(update={"epsilon": cheap.sweep.llc.epsilon / 2})})})
    assert measurement_hash(other) != measurement_hash(cheap)
    run_dir = prepare_run_dir(cheap, tmp_path)
    assert prepare_run_dir(graphed, tmp_path) == run_dir
    assert not frozen_llc_settings(None, cheap, run_dir).cuda_graph  # writes llc_settings.json (calibrate: off)
    assert frozen_llc_settings(None, graphed, run_dir).cuda_graph


# ---------------------------------------------------------------------------------------------
# Failure isolation: every kind of bad checkpoint, strict mode, malicious pickles
# ---------------------------------------------------------------------------------------------


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED_BY_PICKLE",))


def _folder_with_bad_checkpoints(out, dest):
    """The tiny run's checkpoints plus one of each bad kind; index.csv lists them all."""
    import pickle

    import torch

    from devinterp.checkpoints import load_state_dict, save_checkpoint

    shutil.copytree(out / "tiny" / "checkpoints", dest)
    src = DirectorySource(dest)
    good = src.checkpoints[-1]
    sd = load_state_dict(good.path)
    model = src.model_config()
    bad = {}
    (dest / "corrupt.safetensors").write_bytes(b"\x00garbage, not a checkpoint" * 10)
    bad[1001] = "corrupt.safetensors"
    whole = (dest / good.path.name).read_bytes()
    (dest / "truncated.safetensors").write_bytes(whole[: len(whole) // 2])
    bad[1002] = "truncated.safetensors"
    bad[1003] = "missing.safetensors"  # listed in the index, never written
    wrong = dict(sd)
    key = next(k for k in wrong if k.endswith("q.weight"))
    wrong[key] = torch.zeros(3, 5)
    save_checkpoint(dest / "wrong_shape.safetensors", wrong, step=1004, model=model)
    bad[1004] = "wrong_shape.safetensors"
    with open(dest / "evil.pt", "wb") as fh:
        pickle.dump({"w": _Payload()}, fh)
    bad[1005] = "evil.pt"
    index = pd.read_csv(dest / "index.csv")
    extra = pd.DataFrame({"step": list(bad), "file": list(bad.values())})
    pd.concat([index[["step", "file"]], extra]).to_csv(dest / "index.csv", index=False)
    return bad


def test_every_kind_of_bad_checkpoint_is_recorded_and_strict_fails_after_the_rest(tiny_run, cheap, tmp_path,
                                                                                 monkeypatch):
    from devinterp.manifest import read_manifest
    from devinterp.sweep import SweepFailed

    _, out = tiny_run
    monkeypatch.chdir(tmp_path)
    bad = _folder_with_bad_checkpoints(out, tmp_path / "ck")
    config = cheap.model_copy(update={"checkpoints": tmp_path / "ck"})
    with pytest.raises(SweepFailed, match="5 checkpoint") as info:
        sweep(checkpoint_source(config, tmp_path), config, tmp_path, progress=False, strict=True)
    assert set(info.value.failures) == set(bad)
    statuses = read_manifest(tmp_path / "tiny")["checkpoints"]
    reasons = {step: statuses[str(step)]["reason"] for step in bad}
    assert all(statuses[str(step)]["status"] == "failed" for step in bad)
    assert all(name in reasons[step] for step, name in bad.items()), reasons
    assert "file is missing" in reasons[1003]
    assert "shape (3, 5)" in reasons[1004]
    assert "cannot be loaded safely" in reasons[1005]
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()  # the pickle's payload never ran
    table = info.value.table  # the good ones were all measured and written before the error
    good_steps = set(DirectorySource(out / "tiny" / "checkpoints").steps)
    assert set(table["step"]) == good_steps
    assert sum(s["status"] == "done" for s in statuses.values()) == len(good_steps)
    # not strict (the default): same outcome, no error; failed ones are retried, done ones are not
    files = {f: f.stat().st_mtime_ns for f in (tmp_path / "tiny" / "metrics").glob("*.parquet")}
    again = sweep(checkpoint_source(config, tmp_path), config, tmp_path, progress=False)
    pd.testing.assert_frame_equal(again, table)
    assert {f: f.stat().st_mtime_ns for f in files} == files
    assert read_manifest(tmp_path / "tiny")["sweep"] == {"executor": "local", "measured": 5, "failed": 5}


def test_cli_strict_exit_status_and_quiet_log_lines(tiny_run, cheap, tmp_path, capsys, caplog):
    import logging

    import yaml

    from devinterp.cli import main

    _, out = tiny_run
    bad = _folder_with_bad_checkpoints(out, tmp_path / "ck")
    cfg = cheap.model_copy(update={"checkpoints": tmp_path / "ck"}).model_dump(mode="json")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    args = ["-q", "sweep", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "out")]
    with caplog.at_level(logging.INFO, logger="devinterp.sweep"):
        assert main(args + ["--strict"]) == 1
    assert f"{len(bad)} checkpoint(s) failed" in capsys.readouterr().err
    lines = [r.getMessage() for r in caplog.records if r.name == "devinterp.sweep"]
    n_good = len(DirectorySource(out / "tiny" / "checkpoints"))
    assert sum(" done in " in m for m in lines) == n_good  # one line per finished checkpoint, even with -q
    assert sum(" failed: " in m for m in lines) == len(bad)
    assert main(args) == 0  # without --strict a partial sweep is not an error


def test_cli_refuses_other_settings_and_force_new_resumes_in_the_new_folder(tiny_run, cheap, tmp_path, capsys):
    import yaml

    from devinterp.cli import main

    _, out = tiny_run
    shutil.copytree(out / "tiny" / "checkpoints", tmp_path / "ck")
    cfg = cheap.model_copy(update={"checkpoints": tmp_path / "ck"}).model_dump(mode="json")
    cfg["sweep"]["metrics"] = ["loss"]
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(cfg))
    cfg["sweep"]["eval_sequences"] = 16
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(cfg))
    base = ["-q", "sweep", "--out", str(tmp_path / "out")]
    assert main(base + [str(tmp_path / "a.yaml")]) == 0
    assert main(base + [str(tmp_path / "b.yaml")]) == 2
    err = capsys.readouterr().err
    assert "holds a run measured with other settings" in err and "--force-new" in err
    assert main(base + [str(tmp_path / "b.yaml"), "--force-new"]) == 0
    new = tmp_path / "out" / "tiny-2" / "metrics"
    mtimes = {f: f.stat().st_mtime_ns for f in new.glob("*.parquet")}
    assert len(mtimes) == len(DirectorySource(tmp_path / "ck"))
    assert main(base + [str(tmp_path / "b.yaml"), "--force-new"]) == 0  # resumes in tiny-2, no tiny-3
    assert not (tmp_path / "out" / "tiny-3").exists()
    assert {f: f.stat().st_mtime_ns for f in new.glob("*.parquet")} == mtimes
    # the executor and strictness are not measurement settings: no refusal
    assert main(base + [str(tmp_path / "a.yaml"), "--strict", "--workers", "2"]) == 0


def test_leftover_temp_files_are_ignored_and_cleaned(tiny_run, cheap, tmp_path):
    from devinterp.sweep import MetricStore

    _, out = tiny_run
    shutil.copytree(out / "tiny" / "checkpoints", tmp_path / "ck")
    config = cheap.model_copy(update={"checkpoints": tmp_path / "ck"})
    table = sweep(checkpoint_source(config, tmp_path), config, tmp_path, progress=False)
    store = MetricStore(tmp_path / "tiny")
    victim = sorted(store.folder.glob("*.parquet"))[3]
    half = victim.read_bytes()[:100]
    victim.unlink()  # as if killed between writing the temp file and the rename
    (store.folder / f".{victim.name}.k1ll3d.tmp").write_bytes(half)
    assert len(store.temp_files()) == 1
    assert len(store.read()) < len(table)  # the half-written temp file is not read
    again = sweep(checkpoint_source(config, tmp_path), config, tmp_path, progress=False)
    pd.testing.assert_frame_equal(again, table)
    assert store.temp_files() == []


def test_a_second_sweep_into_the_same_folder_is_refused_while_one_runs(tiny_run, cheap, tmp_path):
    from devinterp.sweep import SweepLocked
    from devinterp.sweep.runner import exclusive_lock

    _, out = tiny_run
    config = cheap.model_copy(update={"checkpoints": out / "tiny" / "checkpoints"})
    with exclusive_lock(tmp_path / "tiny"):
        with pytest.raises(SweepLocked, match="another sweep"):
            sweep(checkpoint_source(config, tmp_path), config, tmp_path, progress=False)
    sweep(checkpoint_source(config, tmp_path), config, tmp_path, progress=False)  # lock released


def test_sweep_of_hugging_face_revisions_equals_the_directory_sweep(tiny_run, cheap, tmp_path, monkeypatch):
    from devinterp.checkpoints import load_state_dict, save_hf_revision
    from devinterp.config import SourceConfig

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config, out = tiny_run
    folder = DirectorySource(out / "tiny" / "checkpoints")
    for ckpt in folder:
        save_hf_revision(tmp_path / "hub", "me/tiny", f"step{ckpt.step}", load_state_dict(ckpt.path),
                         step=ckpt.step, model=folder.model_config())
    by_dir = cheap.model_copy(update={"checkpoints": out / "tiny" / "checkpoints"})
    by_hub = cheap.model_copy(update={"source": SourceConfig(kind="huggingface", repo_id="me/tiny",
                                                             cache_dir=tmp_path / "hub")})
    expected = sweep(checkpoint_source(by_dir), by_dir, tmp_path / "a", progress=False)
    table = sweep(checkpoint_source(by_hub), by_hub, tmp_path / "b", progress=False)
    pd.testing.assert_frame_equal(table, expected, check_exact=True)
    from devinterp.manifest import read_manifest

    assert read_manifest(tmp_path / "b" / "tiny")["source"]["repo_id"] == "me/tiny"


def test_head_llc_and_token_loss_groups(tiny_run, tmp_path):
    """head_llc: one aggregate row per chosen head (+ per-chain rows) whose value is the mean of its
    chains; token_loss: the same fixed probes at every checkpoint, each a real held-out token loss."""
    import numpy as np

    from devinterp.metrics.groups import token_probe_positions

    config, out = tiny_run
    shutil.copytree(out / "tiny" / "checkpoints", tmp_path / "ck")
    sweep_cfg = config.sweep.model_copy(update={"metrics": ["loss", "head_llc", "token_loss"],
                                                "head_llc_heads": ["L0H1", "L1H0"], "token_loss_probes": 40})
    config = config.model_copy(update={"checkpoints": tmp_path / "ck", "sweep": sweep_cfg})
    table = sweep(checkpoint_source(config, tmp_path), config, tmp_path, progress=False)
    n_ckpt = table["step"].nunique()
    head = table[table["metric"] == "head_llc"]
    agg = head[head["chain"].isna()]
    assert sorted(set(zip(agg["layer"], agg["head"]))) == [(0, 1), (1, 0)]
    assert len(agg) == 2 * n_ckpt and len(head) == 2 * n_ckpt * (1 + config.sweep.llc.chains)
    chains = head[head["chain"].notna()].groupby(["step", "layer", "head"])["value"].mean()
    merged = agg.set_index(["step", "layer", "head"])["value"]
    np.testing.assert_allclose(merged.sort_index().to_numpy(), chains.sort_index().to_numpy(), rtol=1e-9)
    assert agg["stderr"].notna().all()

    tok = table[table["metric"] == "token_loss"]
    assert len(tok) == 40 * n_ckpt
    assert sorted(tok["token"].astype(int).unique()) == list(range(40))
    # the mean over all held-out tokens is the loss row; the probes are a sample of those tokens
    assert (tok["value"] > 0).all()
    seq, pos = token_probe_positions(32, config.recipe.model.n_ctx - 1, 40)
    assert len(set(zip(seq.tolist(), pos.tolist()))) == 40
    # second implementation: the TransformerLens bridge's own log-probabilities at the probed cells
    import torch

    from devinterp.models.attn_only import build_bridge
    from devinterp.sweep.runner import sweep_data

    source = DirectorySource(tmp_path / "ck")
    ckpt = list(source)[-1]
    data = sweep_data(config, source)
    bridge = build_bridge(data.model)
    bridge.load_state_dict(source.load(ckpt))
    tokens = torch.cat(data.eval_batches)
    with torch.no_grad():
        logp = torch.log_softmax(bridge(tokens).float(), dim=-1)
    expected = -logp[seq, pos, tokens[seq, pos + 1]]
    got = tok[tok["step"] == ckpt.step].sort_values("token")["value"].to_numpy()
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-5)


def test_adding_a_metric_group_to_a_finished_run_measures_only_that_group(tiny_run, cheap, tmp_path):
    _, out = tiny_run
    shutil.copytree(out / "tiny" / "checkpoints", tmp_path / "ck")
    loss_only = cheap.model_copy(update={"checkpoints": tmp_path / "ck",
                                         "sweep": cheap.sweep.model_copy(update={"metrics": ["loss"]})})
    sweep(checkpoint_source(loss_only, tmp_path), loss_only, tmp_path, progress=False)
    files = sorted((tmp_path / "tiny" / "metrics").glob("*.parquet"))
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    more = loss_only.model_copy(update={"sweep": loss_only.sweep.model_copy(update={"metrics": ["loss", "token_loss"]})})
    table = sweep(checkpoint_source(more, tmp_path), more, tmp_path, progress=False)  # same folder: not refused
    assert set(table["metric"]) == {"loss", "token_loss"}
    assert all(f.stat().st_mtime_ns == m for f, m in mtimes.items())


def test_cli_metrics_option_measures_a_subset_first_and_the_rest_later(tiny_run, cheap, tmp_path, capsys):
    """`devinterp sweep --metrics loss` measures only the loss (a quick look); the config's full sweep
    afterwards adds the other groups without measuring the loss again; a group the recipe lacks is
    refused with the option's name."""
    import yaml

    from devinterp.cli import main
    from devinterp.results import load_results

    _, out = tiny_run
    shutil.copytree(out / "tiny" / "checkpoints", tmp_path / "ck")
    cfg = cheap.model_copy(update={"checkpoints": tmp_path / "ck"}).model_dump(mode="json")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    base = ["-q", "sweep", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "out")]
    assert main(base + ["--metrics", "loss"]) == 0
    run = tmp_path / "out" / "tiny"
    assert set(load_results(run).metrics["metric"]) == {"loss"}
    loss_files = {f: f.stat().st_mtime_ns for f in (run / "metrics").glob("*__loss.parquet")}
    assert len(loss_files) == len(DirectorySource(tmp_path / "ck"))
    assert main(base) == 0
    assert set(load_results(run).metrics["metric"]) == {"loss", "icl_score", "prev_token", "induction", "duplicate_token"}
    assert {f: f.stat().st_mtime_ns for f in loss_files} == loss_files
    assert main(base + ["--metrics", "loss,position_loss"]) == 2
    assert "--metrics: sweep.metrics.1: group 'position_loss' does not apply" in capsys.readouterr().err


@pytest.mark.parametrize("recipe", ["tiny", "icl"])
def test_sweep_data_and_the_bridge_are_built_on_the_configured_device(tiny_run, cheap, recipe):
    """A GPU sweep (2026-11-28, H200) failed at every checkpoint: the evaluation batches stayed in host
    memory and ``boot_native`` ignored the config's device. ``meta`` stands in for a GPU here: any tensor
    left on the CPU shows."""
    import torch

    from devinterp.config import load_config
    from devinterp.models.attn_only import build_bridge
    from devinterp.sweep.runner import sweep_data

    config = cheap if recipe == "tiny" else load_config("configs/icl-regression.yaml")
    config = config.model_copy(update={"device": "meta"})
    data = sweep_data(config, config.recipe.model)
    tensors = [x for part in (data.eval_batches, data.llc_batches, [data.head_tokens])
               for x in torch.utils._pytree.tree_leaves(part) if isinstance(x, torch.Tensor)]
    assert tensors and {x.device.type for x in tensors} == {"meta"}
    if recipe == "tiny":
        assert {p.device.type for p in build_bridge(config.recipe.model, device="meta").parameters()} == {"meta"}
