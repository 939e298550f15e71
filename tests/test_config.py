import pytest

from devinterp.cli import main
from devinterp.config import ConfigError, RunConfig, load_config, parse_config


def test_quickstart_config_loads():
    cfg = load_config("configs/quickstart.yaml")
    assert cfg.name == "quickstart"
    assert cfg.recipe.model.n_layers == 2


def test_defaults_come_from_the_models():
    assert parse_config({}).model_dump() == RunConfig().model_dump()


def test_unknown_key_names_file_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nrecipe:\n  train:\n    stepz: 10\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: recipe.train.stepz: unknown key"


def test_bad_value_names_file_field_and_value(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("recipe:\n  train:\n    lr: -1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: recipe.train.lr: Input should be greater than 0 \(got -1\)"):
        load_config(path)


def test_cross_field_check(tmp_path):
    with pytest.raises(ConfigError, match="span_max"):
        parse_config({"recipe": {"model": {"n_ctx": 16}, "data": {"span_max": 12}}}, "x.yaml")


def test_unquoted_yaml_off_means_off(tmp_path):
    """YAML 1.1 reads `calibrate: off` as false; it must mean 'off', and `on` must name the field."""
    path = tmp_path / "c.yaml"
    path.write_text("sweep:\n  calibrate: off\n")
    assert load_config(path).sweep.calibrate == "off"
    path.write_text("sweep:\n  calibrate: on\n")
    with pytest.raises(ConfigError, match=r"c.yaml: sweep.calibrate: .*write auto or off"):
        load_config(path)


def test_not_yaml_and_missing_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("recipe: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")


def test_cli_reports_config_error(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("sweep:\n  metrics: [loss, bogus]\n")
    assert main(["-q", "run", str(path), "--out", str(tmp_path)]) == 2
    assert "sweep.metrics.1" in capsys.readouterr().err


def test_hash_changes_with_settings():
    a, b = RunConfig(), RunConfig()
    assert a.hash() == b.hash()
    b.recipe.train.lr = 1e-3
    assert a.hash() != b.hash()


def test_cli_calibrate_names_a_missing_run_and_a_failed_calibration(tmp_path, capsys, monkeypatch):
    from devinterp import api
    from devinterp.llc import CalibrationError

    path = tmp_path / "c.yaml"
    path.write_text("name: none-yet\n")
    assert main(["-q", "calibrate", str(path), "--out", str(tmp_path)]) == 2  # nothing trained yet
    assert "none-yet/checkpoints: no checkpoints yet" in capsys.readouterr().err

    def fail(*args, **kwargs):
        raise CalibrationError("no (epsilon, gamma) on the grid passed", table=[])

    monkeypatch.setattr(api, "checkpoint_source", lambda config, out: None)
    monkeypatch.setattr(api, "calibrate", fail)
    assert main(["-q", "calibrate", str(path), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no stable setting: no (epsilon, gamma)" in err and "llc_calibration_failed.json" in err
