"""Screenshot one section of a rendered report (default: the overview) as a PNG, e.g. for the README.

    .venv/bin/python scripts/report_screenshot.py out/<run>/report.html docs/img/report.png

Uses Playwright's Python package with the system Chromium (``apt-get install chromium``); it never
downloads a browser. Set DEVINTERP_CHROMIUM to use another Chromium binary.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--section", default="overview", help="section id to capture (overview, stages, …)")
    parser.add_argument("--width", type=int, default=1100)
    args = parser.parse_args(argv)
    chromium = os.environ.get("DEVINTERP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).is_file():
        sys.exit(f"no Chromium at {chromium}: apt-get install chromium, or set DEVINTERP_CHROMIUM")
    from playwright.sync_api import sync_playwright

    args.png.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": args.width, "height": 900})
        page.goto(args.report.resolve().as_uri())
        page.wait_for_selector(f"#{args.section} .js-plotly-plot, #{args.section} table", timeout=20_000)
        page.add_style_tag(content="nav{display:none}")  # the sticky bar would cover the section
        page.wait_for_timeout(500)
        page.locator(f"#{args.section}").screenshot(path=str(args.png))
        browser.close()
    print(f"{args.png}: {args.png.stat().st_size / 1e3:.0f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
