"""Screenshot the Dash explorer (`devinterp serve`) over a folder of runs, e.g. for the README.

    .venv/bin/python scripts/app_screenshot.py out docs/img/app.png

Starts the app on a free loopback port in a subprocess, waits for it, screenshots the page with
Playwright and the system Chromium (never downloads a browser), then stops the app.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from report_screenshot import CHROMIUM_ARGS  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("png", type=Path)
    args = parser.parse_args()
    port = free_port()
    app = subprocess.Popen([sys.executable, "-m", "devinterp.cli", "serve", str(args.root), "--port", str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.goto(url)
            page.wait_for_selector(".js-plotly-plot", timeout=60_000)
            page.wait_for_timeout(3000)
            page.screenshot(path=str(args.png), full_page=False)
            browser.close()
    finally:
        app.terminate()
        app.wait(timeout=10)
    print(f"{args.png}: {args.png.stat().st_size / 1e3:.0f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
