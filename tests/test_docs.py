"""Docs that are generated or that hold runnable examples stay true."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_config_reference_is_current():
    spec = importlib.util.spec_from_file_location("gen", REPO / "scripts" / "gen_config_docs.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert (REPO / "docs" / "config.md").read_text() == gen.render(), "run: python scripts/gen_config_docs.py"


def test_cli_help_shows_defaults(capsys):
    import pytest

    from devinterp.cli import main

    with pytest.raises(SystemExit):
        main(["detect", "--help"])
    from devinterp.config import DetectConfig

    out = " ".join(capsys.readouterr().out.split())
    assert f"(default: {DetectConfig().method!r})" in out
    assert f"(default: {DetectConfig().bootstrap!r})" in out


def test_api_page_examples_run():
    import re

    text = (REPO / "docs" / "api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks
    for code in blocks:
        exec(compile(code, "docs/api.md", "exec"), {})


def test_api_functions_named_like_submodules_stay_callable():
    # devinterp/sweep/ and devinterp/refine.py share their names with API functions; importing the
    # submodules (as the package itself does) must not hide the functions
    import subprocess
    import sys

    code = ("import devinterp.sweep.runner, devinterp.refine, devinterp\n"
            "from devinterp.api import sweep\n"
            "assert callable(devinterp.sweep) and callable(devinterp.refine)\n"
            "try:\n    devinterp.refine('/nonexistent-run')\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("RefineError") and "/nonexistent-run" in out
