"""The SGLD settings of a sweep, frozen once in ``llc_settings.json`` (DESIGN.md, run directory).

With ``sweep.calibrate: auto`` they are chosen by :func:`devinterp.llc.calibrate_llc` at checkpoints
spread over the run (:func:`probe_checkpoints`) before anything is measured; otherwise they are ``sweep.llc`` as given.
Either way the file is written once and every later (or resumed) sweep reads it back, so all
checkpoints of a run are measured with the same settings.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from pathlib import Path

from devinterp import _io
from devinterp.config import LLC_EXECUTION_FIELDS, LLCSettings, RunConfig

log = logging.getLogger("devinterp.sweep")

FILE = "llc_settings.json"


def probe_checkpoints(source) -> list:
    """The checkpoints calibration probes: first, last, the quartiles by index (first quarter,
    middle, third quarter) and the middle by step (fewer when the run is shorter). With log-spaced
    checkpoints the index spreads the probes evenly in log step, the axis development is paced on,
    and the middle by step covers the linear part. A setting chosen at too few of them can fail
    where no probe looked (measured: icl-regression, probes at steps 0, 186 and 20,000, gave NaN at
    9 of 36 checkpoints, all mid-run; the quickstart, probes at 0, 1,225, 1,525 and 3,000, all after
    the induction bump but the first, chose delta 0.03 whose chains failed `falling`/`rhat` at every
    checkpoint of the plateau before it, steps 1-925, 2026-11-27)."""
    ckpts = list(source)
    steps = [c.step for c in ckpts]
    n = len(ckpts)
    mid_step = (steps[0] + steps[-1]) / 2
    by_step = min(range(n), key=lambda i: abs(steps[i] - mid_step))
    picks = {0, n // 4, n // 2, (3 * n) // 4, by_step, n - 1}
    return [ckpts[i] for i in sorted(picks)]


def frozen_llc_settings(source, config: RunConfig, run_dir: str | Path) -> LLCSettings:
    """The run's SGLD settings: read from ``run_dir/llc_settings.json``, or decided now and written there.

    Raises :class:`devinterp.llc.CalibrationError` (after writing the table of what was tried to
    ``llc_settings.json`` under ``failed_calibration``) when calibration finds nothing stable.
    """
    path = Path(run_dir) / FILE
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("settings"):
            # how the chains run (not what they compute) follows the current config
            now = {f: getattr(config.sweep.llc, f) for f in LLC_EXECUTION_FIELDS}
            return LLCSettings.model_validate({**saved["settings"], **now})
    if config.sweep.calibrate == "off":
        _io.write_json(path, {"settings": config.sweep.llc.model_dump(), "calibration": None,
                              "choice": "as configured (sweep.llc); calibrate: off"})
        return config.sweep.llc
    return _calibrate(source, config, path)


def _calibrate(source, config: RunConfig, path: Path) -> LLCSettings:
    import torch

    from devinterp.llc import CalibrationError, calibrate_llc
    from devinterp.models.families import family
    from devinterp.sweep.runner import sweep_data

    data = sweep_data(config, source)
    probes = probe_checkpoints(source)
    build = family(data.model).build_fast
    models = [build(data.model, source.load(c)).to(config.device) for c in probes]
    steps = [c.step for c in probes]
    log.info("calibrating SGLD at steps %s", steps)
    threads = torch.get_num_threads()
    torch.set_num_threads(config.sweep.threads)  # as the sweep's hot loops (REFERENCE.md §4: 2 threads can be 100x slower)
    try:
        chosen = calibrate_llc(models, data.llc_batches, data.loss_fn, settings=config.sweep.llc,
                               max_length_factor=config.sweep.calibrate_max_length_factor,
                               log=lambda line: log.info("calibration: %s", line))  # one line per run: it can take minutes
    except CalibrationError as err:
        _io.write_json(path.with_name("llc_calibration_failed.json"),
                       {"probed_steps": steps, "error": str(err), "table": getattr(err, "table", None)})
        raise
    finally:
        torch.set_num_threads(threads)
    settings = LLCSettings.model_validate(chosen.model_dump())
    saved = {"settings": settings.model_dump(), "calibration": chosen.table, "choice": chosen.choice,
             "probed_steps": steps}
    _io.write_json(path, saved)
    for line in calibration_summary(saved):
        log.info("calibration: %s", line)
    log.info("SGLD settings frozen in %s: %s", path, chosen.choice)
    return settings


def calibration_summary(saved: dict) -> list[str]:
    """One line per localization tried, from the content of ``llc_settings.json`` (``calibration``:
    the table of :func:`devinterp.llc.calibrate_llc`; ``settings``: the frozen ones), in the order
    tried: delta = gamma/sqrt(nbeta), gamma, how many screening and full-length runs, and the
    outcome (chosen, rejected on locality with its slope, or the commonest reason nothing passed);
    the search's notes (fallback deltas the bisection skipped) as they are.
    Empty when the settings were not calibrated."""
    from devinterp.llc.calibrate import SAMPLER_CHECKS

    checks = (*SAMPLER_CHECKS, "drift_ratio")
    table, settings = saved.get("calibration") or [], saved.get("settings") or {}
    groups: dict[object, list[dict]] = {}
    for i, row in enumerate(table):  # a row without a gamma is a note of the search (deltas it skipped)
        groups.setdefault(row["gamma"] if row.get("gamma") is not None else ("note", i), []).append(row)
    lines = []
    for gamma, rows in groups.items():
        if isinstance(gamma, tuple):
            lines.append(str(rows[0].get("reasons") or ""))
            continue
        reasons = [str(r.get("reasons") or "") for r in rows]
        screened = sum(r.startswith("screened") for r in reasons)
        full = [r for r, why in zip(rows, reasons) if r.get("model") is not None and not why.startswith("screened")]
        head = (f"delta {rows[0]['delta']:.3g} (gamma {gamma:.4g}): {screened} screening run(s), "
                f"{len(full)} full-length run(s)")
        rejected = [why for why in reasons if why.startswith("rejected")]
        chosen = settings.get("gamma") is not None and math.isclose(gamma, settings["gamma"], rel_tol=1e-9)
        if chosen:
            outcome = f"chosen, epsilon {settings['epsilon']:.3g}"
        elif rejected:
            slope = re.search(r"locality slope [-+0-9.]+ ± [0-9.]+", rejected[-1])
            outcome = "rejected: chains not local" + (f" ({slope.group(0)})" if slope else "")
        else:
            fails = Counter(k for r in full if r.get("passed") is False
                            for k in {x.split(":")[0].strip() for x in str(r.get("reasons") or "").split(";")}
                            if k in checks)
            outcome = ("nothing passed: " + ", ".join(f"{k} x{n}" for k, n in fails.most_common(3)) if fails else
                       "nothing passed the screen" if screened and not full else "nothing passed")
        lines.append(f"{head}; {outcome}")
    return lines
