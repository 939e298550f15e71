"""`sweep.calibrate: auto`: SGLD settings chosen once at first/middle/last checkpoints, then frozen;
and calibrate_llc's relaxation rule for burn-in and draws."""

import json
import logging
import math

import pytest
import torch

from devinterp.api import sweep
from devinterp.config import LLCSettings, SweepConfig
from devinterp.llc.calibrate import (
    BURNIN_TAUS, DRAWS_TAUS, MAX_LENGTH_FACTOR, calibrate_llc, relaxation_lengths, relaxation_time,
)


def test_relaxation_rule_formula_cap_and_floor():
    assert BURNIN_TAUS == pytest.approx(math.log(20)) and DRAWS_TAUS == 5
    assert SweepConfig().calibrate_max_length_factor == MAX_LENGTH_FACTOR  # the sweep's default is the function's
    assert relaxation_time(1e-3, 4.0) == pytest.approx(500.0)  # tau = 2/(eps*gamma)
    base = LLCSettings(burnin=50, draws=100, thin=2)  # 250 configured steps, cap 4x = 1000
    out = relaxation_lengths(base, 1e-2, 10.0)  # tau = 20: 3 tau + 5 tau = 160 steps, under the cap
    assert not out["capped"] and out["tau"] == pytest.approx(20.0)
    assert out["burnin"] == max(50, math.ceil(BURNIN_TAUS * 20)) == 60
    assert out["draws"] == max(100, math.ceil(DRAWS_TAUS * 20 / 2))  # draws*thin spans 5 tau; never below configured
    out = relaxation_lengths(base, 1e-3, 10.0)  # tau = 200: wants 1599 steps > cap 1000
    assert out["capped"] and out["cap_steps"] == 1000
    assert out["burnin"] + out["draws"] * 2 <= 1000
    assert out["burnin"] == math.floor(1000 * BURNIN_TAUS / (BURNIN_TAUS + DRAWS_TAUS))  # scaled down together
    assert relaxation_lengths(base, 1e-3, 10.0, max_length_factor=1)["burnin"] == 50  # factor 1: rule off
    assert relaxation_lengths(base, 1.0, 10.0)["burnin"] == 50  # tau = 0.2: configured lengths suffice
    off = relaxation_lengths(base, 1e-3, 10.0, burnin_taus=0, draws_taus=0)
    assert (off["burnin"], off["draws"], off["capped"]) == (50, 100, False)
    with pytest.raises(ValueError):
        relaxation_lengths(base, 1e-3, 10.0, max_length_factor=0.5)


def test_calibration_freezes_the_rules_burnin_and_draws_and_says_so():
    """A stiff quadratic (K = 50 |w|^2, nbeta 1): the chains relax in ~2/(eps*100) = 8 steps, but the
    rule only knows tau = 2/(eps*gamma) = 8,000 steps (gamma 0.1), so its lengths hit the cap. They
    are part of the returned settings, the table and the choice."""

    class Potential(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(10))

    def loss(model, batch):
        return 50 * (model.w ** 2).sum()

    # drift/noise ratio sqrt(eps * 100)/2 = 0.25 at eps 2.5e-3: the limit is raised so the chains relax fast
    kw = dict(n=1000, nbeta=1.0, chains=4, burnin=100, draws=400, batch_size=1, init_loss_batches=1,
              epsilons=[2.5e-3], gammas=[0.1], max_delta=1.0, max_drift_ratio=0.3, screen_steps=0)
    capped = calibrate_llc(Potential(), [None], loss, max_length_factor=2, **kw)
    want = relaxation_lengths(LLCSettings(burnin=100, draws=400), 2.5e-3, 0.1, max_length_factor=2)
    assert want["capped"] and want["tau"] == pytest.approx(8000)
    assert (capped.burnin, capped.draws) == (want["burnin"], want["draws"]) == (374, 625)  # 1000 steps, 3 : 5
    assert "capped at max_length_factor 2" in capped.choice and f"burnin={capped.burnin}" in capped.choice
    assert "tau = 2/(eps*gamma) = 8000 steps" in capped.choice
    assert all(r["burnin"] == 374 and r["draws"] == 625 and r["capped"] for r in capped.table)
    assert capped.frozen().draws == 625
    # uncapped with a large enough factor: 3 tau + 5 tau exactly
    full = relaxation_lengths(LLCSettings(burnin=100, draws=400), 2.5e-3, 0.1, max_length_factor=200)
    tau = relaxation_time(2.5e-3, 0.1)
    assert not full["capped"] and (full["burnin"], full["draws"]) == (math.ceil(BURNIN_TAUS * tau),
                                                                       math.ceil(DRAWS_TAUS * tau))


@pytest.mark.slow
def test_auto_calibration_is_chosen_once_and_frozen(tiny_run, tmp_path, capsys, caplog):
    config, out = tiny_run
    llc = config.sweep.llc.model_copy(update={"chains": 4, "draws": 40, "burnin": 20})
    config = config.model_copy(update={
        "checkpoints": out / "tiny" / "checkpoints",
        # 60 configured steps are far below what the relaxation rule asks for here (tau >= 50 steps at every
        # candidate); at 2x no candidate mixed, and without the rule (1x) epsilon went down to 1e-5, where
        # the chains barely moved (LLC 0.1-0.4 against ~30 at 1.8e-2) and "passed". 8x: ~30, at delta 0.25.
        "sweep": config.sweep.model_copy(update={"calibrate": "auto", "metrics": ["llc"], "llc": llc,
                                                 "calibrate_max_length_factor": 8.0}),
    })
    from devinterp.api import checkpoint_source
    from devinterp.cli import main
    from devinterp.config import dump_config

    # `devinterp calibrate` freezes the settings without measuring; the sweep then reads them back
    (tmp_path / "auto.yaml").write_text(dump_config(config))
    with caplog.at_level(logging.INFO, logger="devinterp.sweep"):
        assert main(["-q", "calibrate", str(tmp_path / "auto.yaml"), "--out", str(tmp_path)]) == 0
    path = tmp_path / "tiny" / "llc_settings.json"
    assert capsys.readouterr().out.startswith(f"frozen in {path} ")
    saved = json.loads(path.read_text())
    frozen = LLCSettings.model_validate(saved["settings"])
    assert not list((tmp_path / "tiny").glob("metrics/*.parquet"))
    logged = caplog.text
    assert saved["choice"] in logged and f"chosen, epsilon {frozen.epsilon:.3g}" in logged
    calibrated_at = path.stat().st_mtime_ns
    assert main(["-q", "calibrate", str(tmp_path / "auto.yaml"), "--out", str(tmp_path)]) == 0  # reads it back
    printed = capsys.readouterr().out
    assert f"chosen, epsilon {frozen.epsilon:.3g}" in printed and f"SGLD settings: {saved['choice']}" in printed
    assert f"already frozen in {path} " in printed and path.stat().st_mtime_ns == calibrated_at
    source = checkpoint_source(config, tmp_path)
    table = sweep(source, config, tmp_path, progress=False)
    assert path.stat().st_mtime_ns == calibrated_at
    probed = saved["probed_steps"]
    steps = source.steps  # tiny run: [0, 1, 3, 12, 40, 80, 120]; quartiles by index 1, 12, 80; by step 40 (nearest 60)
    n = len(steps)
    assert probed == sorted({steps[0], steps[n // 4], steps[n // 2], steps[3 * n // 4],
                             min(steps, key=lambda s: abs(s - (steps[0] + steps[-1]) / 2)), steps[-1]})
    # the chosen epsilon was tried at every probed model and passed there
    passing = [r for r in saved["calibration"] if r.get("epsilon") == frozen.epsilon and r.get("gamma") == frozen.gamma]
    full_runs = [r for r in passing if not str(r.get("reasons", "")).startswith("screened")]
    assert len(full_runs) == len(probed), saved["choice"]
    assert frozen.chains == 4 and frozen.nbeta == llc.nbeta  # the rest as configured
    # burnin and draws by the relaxation rule for the chosen epsilon and gamma, frozen with them
    rule = relaxation_lengths(llc, frozen.epsilon, frozen.gamma, max_length_factor=8.0)
    assert (frozen.burnin, frozen.draws) == (rule["burnin"], rule["draws"]), saved["choice"]
    assert 60 < frozen.burnin + frozen.draws <= 8 * 60 and f"burnin={frozen.burnin}" in saved["choice"]
    assert table[table["metric"] == "llc"]["step"].nunique() == len(source.steps)

    # a resumed sweep reads the frozen settings back instead of calibrating again
    before = path.stat().st_mtime_ns
    next((tmp_path / "tiny" / "metrics").glob("*__llc.parquet")).unlink()
    again = sweep(source, config, tmp_path, progress=False)
    assert path.stat().st_mtime_ns == before
    assert len(again) == len(table)
