"""Pictures of the report's figures for papers: PNG and SVG files, one per figure.

``export_figures(results, folder, formats=("png", "svg"))`` writes ``<folder>/<figure name>.<format>``
for every figure of the HTML report (the list is :func:`devinterp.report.figures.report_figures`, so
the pictures are the report's figures, built by the same functions). Buttons and dropdowns are
removed (:func:`~devinterp.report.figures.static_figure`); the head explorer becomes one picture per
per-head metric.

Rendering uses kaleido (``pip install 'devinterp-phases[export]'``), which drives a Chromium-based
browser: ``$DEVINTERP_CHROMIUM``, else ``/usr/bin/chromium`` or ``chromium``, ``chromium-browser``,
``google-chrome`` on ``PATH``, else one fetched by ``kaleido_get_chrome``. One browser is started for
all figures. Without kaleido or a browser, :class:`ExportError` says what to install.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any, Callable, Iterable

from devinterp import _io
from devinterp.report import figures as F
from devinterp.results import Results

FORMATS = ("png", "svg")
BROWSER_ENV = "DEVINTERP_CHROMIUM"
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")
DEFAULT_WIDTH = 1000
"""Width in CSS pixels of a figure that sets none (a PNG is ``scale`` times as many pixels)."""
RENDER_TIMEOUT = 90.0
"""Seconds allowed to render one figure."""
RENDERER_LOGGERS = ("kaleido", "choreographer", "logistro")

INSTALL_HINT = ("install a Chromium-based browser (Debian/Ubuntu: `apt-get install chromium`; or run "
                "`kaleido_get_chrome`, which comes with `pip install kaleido`), or point "
                f"{BROWSER_ENV} at its executable")


class ExportError(RuntimeError):
    """Figures cannot be exported; the message says why and what to install."""


def find_browser() -> str | None:
    """Path of a Chromium-based browser for kaleido, or None when there is none.

    Order: ``$DEVINTERP_CHROMIUM`` (an error if it names no executable), ``/usr/bin/chromium``,
    ``chromium``, ``chromium-browser``, ``google-chrome`` on ``PATH``, a browser downloaded by
    ``kaleido_get_chrome``.
    """
    env = os.environ.get(BROWSER_ENV)
    if env:
        if not _is_exe(env):
            raise ExportError(f"{BROWSER_ENV}={env!r} is not an executable browser; {INSTALL_HINT}")
        return env
    if _is_exe("/usr/bin/chromium"):
        return "/usr/bin/chromium"
    for name in BROWSER_NAMES:
        if found := shutil.which(name):
            return found
    try:  # a browser fetched with `kaleido_get_chrome` (choreographer comes with kaleido)
        from choreographer.cli._cli_utils import get_chrome_download_path

        path = get_chrome_download_path(mkdir=False)
    except Exception:  # noqa: BLE001 - an optional convenience; any failure means "none"
        return None
    return str(path) if path is not None and _is_exe(path) else None


def _is_exe(path: str | Path) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _kaleido():
    try:
        import kaleido
    except ImportError as err:
        raise ExportError("figure export needs kaleido (>= 1.0): pip install 'devinterp-phases[export]' "
                          f"(or pip install kaleido), plus a Chromium browser ({err})") from None
    if not hasattr(kaleido, "Kaleido"):
        found = getattr(kaleido, "__version__", "an older one")
        raise ExportError(f"figure export needs kaleido >= 1.0 (found {found}): "
                          "pip install -U kaleido")
    return kaleido


def export_figures(results: Results, folder: str | Path, formats: Iterable[str] = ("png",), *, scale: float = 2,
                   step_axis: str = "auto", width: int = DEFAULT_WIDTH) -> list[Path]:
    """Write every figure of the report as ``<folder>/<name>.<format>`` and return the paths written.

    ``formats``: any of ``"png"``, ``"svg"``. ``scale`` multiplies the PNG's pixels (2: print quality
    at the figure's size); ``width`` is the width in CSS pixels of figures that set none; ``step_axis``
    as in the report. Names: ``overview``, ``heatmap-<metric>``, ``explorer-<metric>``, ``diagnostics``;
    a figure whose data is missing is skipped, as the report shows "not available" for it. Each file is
    written atomically. Raises :class:`ExportError` when kaleido or a browser is missing or the
    browser fails (files written before then stay).
    """
    formats = tuple(dict.fromkeys(str(f).lower().lstrip(".") for f in formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"formats must be some of {FORMATS}; got {unknown or 'none'}")
    specs = F.report_figures(results.metrics, results.stages, step_axis=step_axis, static=True)
    kaleido = _kaleido()
    browser = find_browser()
    if browser is None:
        raise ExportError(f"figure export found no Chromium browser: {INSTALL_HINT}")
    figures = []
    for spec in specs:
        try:
            figures.append((spec.name, F.static_figure(spec.make(), width=width)))
        except F.MissingData:
            continue
    folder = Path(folder)
    jobs = [(folder / f"{name}.{fmt}", fig, {"format": fmt, "scale": scale if fmt == "png" else 1})
            for name, fig in figures for fmt in formats]
    _quiet_renderer_logs()
    return _run_in_thread(lambda: _render(kaleido, browser, jobs))


def _quiet_renderer_logs() -> None:
    """kaleido and choreographer log every tab move at INFO; keep their warnings only, unless the
    user set their levels."""
    for name in RENDERER_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


async def _render(kaleido, browser: str, jobs: list[tuple[Path, Any, dict]]) -> list[Path]:
    """Render every job in one browser; write each file as soon as its image is back."""
    written: list[Path] = []
    try:
        k = kaleido.Kaleido(path=browser, n=1, timeout=RENDER_TIMEOUT, mathjax=False)  # mathjax: no network
        async with k:
            for path, fig, opts in jobs:
                try:
                    data = await k.calc_fig(fig, opts=opts)
                except Exception as err:  # noqa: BLE001 - any browser failure is an export failure
                    raise ExportError(f"rendering {path.name} with {browser} failed: "
                                      f"{type(err).__name__}: {err}") from err
                written.append(_io.atomic_write(path, lambda p, data=data: p.write_bytes(_bytes(data))))
    except ExportError:
        raise
    except Exception as err:  # noqa: BLE001 - browser start or shutdown failed
        raise ExportError(f"the browser {browser} could not render figures ({type(err).__name__}: {err}); "
                          f"{INSTALL_HINT}") from err
    return written


def _bytes(data: bytes | str) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else data


def _run_in_thread(make: Callable[[], Any]) -> Any:
    """Run the coroutine ``make()`` on a fresh event loop in its own thread, so export also works where a
    loop is already running (Jupyter, the Dash app)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(make())
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = err

    thread = threading.Thread(target=target, name="devinterp-figure-export")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


__all__ = ["export_figures", "find_browser", "ExportError", "FORMATS"]
