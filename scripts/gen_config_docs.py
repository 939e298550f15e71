"""Regenerate docs/config.md from the pydantic models (the one place defaults live).

Usage: python scripts/gen_config_docs.py   (tests/test_docs.py checks the file is current)
"""

from pathlib import Path

from devinterp.config import config_reference

HEADER = """# Configuration reference

Every key of a run config, its default and its meaning, generated from `devinterp/config.py` by
`python scripts/gen_config_docs.py`. Keys are dotted paths into the YAML file: `recipe.train.lr`
is `lr:` under `train:` under `recipe:`. The `recipe` section depends on `recipe.name`: the keys of the
default recipe (`induction`) are listed as `recipe.…`, those of the other recipes as `recipe[<name>].…`
(in the YAML file they are still plain `recipe.…` keys under `recipe: {name: <name>, …}`).

"""


def render() -> str:
    return HEADER + config_reference()


if __name__ == "__main__":
    path = Path(__file__).resolve().parents[1] / "docs" / "config.md"
    path.write_text(render())
    print(f"wrote {path}")
