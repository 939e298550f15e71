"""``manifest.json`` of a run directory: config hash, library versions, machine, timings, statuses.

Several boxes add to it (train, sweep, detect); each update is a read-merge-write done atomically.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from devinterp import _io

PACKAGES = ("devinterp-phases", "torch", "transformer-lens", "numpy", "pandas", "ruptures", "plotly", "pydantic")


def environment() -> dict[str, Any]:
    """Library versions and a description of this machine."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "versions": versions,
        "python": sys.version.split()[0],
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count()},
    }


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def update_manifest(run_dir: str | Path, **sections: Any) -> dict[str, Any]:
    """Merge ``sections`` into ``run_dir/manifest.json`` (dicts merged one level deep) and return it."""
    manifest = read_manifest(run_dir)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(manifest.get(key), dict):
            manifest[key] = {**manifest[key], **value}
        else:
            manifest[key] = value
    manifest["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    _io.write_json(Path(run_dir) / "manifest.json", manifest)
    return manifest
