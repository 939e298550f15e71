"""Benchmark the sweep: resume overhead, and the speed-up of 2 workers over one process.

Builds ``--checkpoints`` checkpoints of the quickstart model (random weights, one seed per step:
the cost of measuring does not depend on training), then, on the same machine in the same run:

1. sweeps them with the local in-process executor (one process, ``sweep.threads`` = 1);
2. reruns the finished sweep as a user would (``devinterp -q sweep CONFIG``, a fresh process):
   the resume overhead (target < 5 s);
3. sweeps them with Ray, 2 workers, on a local cluster started before the clock (a cluster is
   started once, not per sweep; the workers start cold inside the timing) and, unless
   ``--no-pool``, with the local process pool (2 spawned workers);
4. checks every executor's table equals the in-process one exactly, and prints the speed-ups as
   ratios of wall time (target for Ray on 2 cores: >= 1.6x).

    .venv/bin/python scripts/bench_sweep.py                 # ~4 min on a 2-core machine
    .venv/bin/python scripts/bench_sweep.py --checkpoints 6 --llc-draws 20 --no-pool   # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


def make_checkpoints(folder: Path, n: int, model) -> None:
    from devinterp.checkpoints import save_checkpoint
    from devinterp.models.attn_only import AttnOnlyTransformer

    for i in range(n):
        torch.manual_seed(i)
        step = 25 * (i + 1)
        save_checkpoint(folder / f"{step}.safetensors", AttnOnlyTransformer(model).state_dict(), step=step, model=model)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", type=int, default=16, help="checkpoints to measure")
    ap.add_argument("--metrics", default="loss,icl_score,heads,llc", help="metric groups, comma-separated")
    ap.add_argument("--llc-chains", type=int, default=2, help="SGLD chains per LLC estimate")
    ap.add_argument("--llc-draws", type=int, default=100, help="SGLD draws per chain")
    ap.add_argument("--llc-burnin", type=int, default=10, help="SGLD burn-in steps per chain")
    ap.add_argument("--workers", type=int, default=2, help="workers of the parallel executors")
    ap.add_argument("--no-pool", action="store_true", help="skip the local process pool")
    ap.add_argument("--no-ray", action="store_true", help="skip Ray")
    ap.add_argument("--workdir", type=Path, default=None, help="keep files here (default: a temp folder)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)

    from devinterp.api import checkpoint_source, sweep
    from devinterp.config import ExecutorConfig, load_config

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    work.mkdir(parents=True, exist_ok=True)
    base = load_config(REPO / "configs" / "quickstart.yaml")
    llc = base.sweep.llc.model_copy(update={"chains": args.llc_chains, "draws": args.llc_draws,
                                            "burnin": args.llc_burnin})
    config = base.model_copy(update={
        "name": "bench", "checkpoints": work / "ck",
        "sweep": base.sweep.model_copy(update={"metrics": args.metrics.split(","), "llc": llc, "threads": 1})})
    if not (work / "ck").is_dir():
        (work / "ck").mkdir()
        make_checkpoints(work / "ck", args.checkpoints, config.recipe.model)
    cfg_path = work / "bench.yaml"
    cfg_path.write_text(yaml.safe_dump(config.model_dump(mode="json")))

    def with_executor(**kw):
        return config.model_copy(update={"sweep": config.sweep.model_copy(update={"executor": ExecutorConfig(**kw)})})

    def steady(name):
        """Checkpoints per second once every worker is warm (each worker's first checkpoint left out)."""
        from devinterp.manifest import read_manifest

        rows = sorted(read_manifest(work / name / "bench")["checkpoints"].values(), key=lambda r: r["worker"])
        by_worker: dict = {}
        for r in rows:
            by_worker.setdefault(r["worker"], []).append((r["seconds"], r["cpu_seconds"]))
        warm = [x for v in by_worker.values() for x in v[1:]]
        fig[f"{name}_warm_wall_per_ckpt"] = sum(w for w, _ in warm) / len(warm)
        fig[f"{name}_warm_cpu_per_ckpt"] = sum(c for _, c in warm) / len(warm)
        return sum(len(v[1:]) / sum(w for w, _ in v[1:]) for v in by_worker.values() if len(v) > 1)

    def run(cfg, name):
        out = work / name
        if out.exists():
            import shutil

            shutil.rmtree(out)
        table, seconds = timed(lambda: sweep(checkpoint_source(cfg), cfg, out, progress=False))
        print(f"  {name:<10} {seconds:7.1f} s", flush=True)
        return table, seconds

    fig: dict = {"checkpoints": args.checkpoints, "metrics": args.metrics, "workers": args.workers,
                 "cpus": os.cpu_count()}
    print(f"sweep of {args.checkpoints} quickstart checkpoints, metrics {args.metrics} "
          f"(LLC {args.llc_chains} chains x {args.llc_draws} draws + {args.llc_burnin} burn-in), files in {work}")
    fig["load_before"] = os.getloadavg()[0]
    local, fig["local_s"] = run(config, "local")
    fig["local_steady_rate"] = steady("local")

    resume_cmd = [sys.executable, "-m", "devinterp.cli", "-q", "sweep", str(cfg_path), "--out", str(work / "local")]
    proc, fig["resume_s"] = timed(lambda: subprocess.run(resume_cmd, capture_output=True, text=True))
    assert proc.returncode == 0, proc.stderr
    _, fig["resume_in_process_s"] = timed(lambda: sweep(checkpoint_source(config), config, work / "local",
                                                        progress=False))
    print(f"  resume of the finished sweep: {fig['resume_s']:.2f} s as a fresh `devinterp -q sweep` process "
          f"({fig['resume_in_process_s']:.2f} s in process)")

    if not args.no_pool:
        pool, fig["pool_s"] = run(with_executor(kind="local", workers=args.workers), "pool")
        pd.testing.assert_frame_equal(pool, local, check_exact=True)
        fig["pool_speedup"] = fig["local_s"] / fig["pool_s"]
        fig["pool_steady_speedup"] = steady("pool") / fig["local_steady_rate"]
    if not args.no_ray:
        try:
            import ray
        except ImportError:
            print("  ray: not installed (pip install 'devinterp-phases[ray]'); skipped")
        else:
            _, fig["ray_start_s"] = timed(lambda: ray.init(num_cpus=args.workers, include_dashboard=False,
                                                           log_to_driver=False))
            try:
                ray_table, fig["ray_s"] = run(with_executor(kind="ray", workers=args.workers), "ray")
            finally:
                ray.shutdown()
            pd.testing.assert_frame_equal(ray_table, local, check_exact=True)
            fig["ray_speedup"] = fig["local_s"] / fig["ray_s"]
            fig["ray_steady_speedup"] = steady("ray") / fig["local_steady_rate"]
            fig["ray_version"] = ray.__version__

    fig["load_after"] = os.getloadavg()[0]
    print("\nresults (wall time; every executor's table identical to the in-process one):")
    print(f"  machine: {fig['cpus']} CPUs, load average {fig['load_before']:.1f} before / {fig['load_after']:.1f} after "
          "(other processes share the cores when it exceeds 0)")
    print(f"  resume overhead (finished sweep, fresh process): {fig['resume_s']:.2f} s  (target < 5 s)")
    print("  per warm checkpoint, wall / CPU seconds (CPU < wall: the process waited for a core):")
    for name in ("local", "pool", "ray"):
        if f"{name}_warm_cpu_per_ckpt" in fig:
            print(f"    {name:<6} {fig[f'{name}_warm_wall_per_ckpt']:.2f} / {fig[f'{name}_warm_cpu_per_ckpt']:.2f}")
    if "pool_speedup" in fig:
        print(f"  local process pool, {args.workers} workers: {fig['pool_speedup']:.2f}x  "
              f"({fig['local_s']:.1f} s -> {fig['pool_s']:.1f} s; warm workers: {fig['pool_steady_speedup']:.2f}x)")
    if "ray_speedup" in fig:
        print(f"  ray, {args.workers} workers: {fig['ray_speedup']:.2f}x  ({fig['local_s']:.1f} s -> {fig['ray_s']:.1f} s; "
              f"cluster start {fig['ray_start_s']:.1f} s not counted; warm workers: {fig['ray_steady_speedup']:.2f}x)  "
              "(target >= 1.6x)")
    print(f"  command: {' '.join([Path(sys.executable).name, 'scripts/bench_sweep.py', *(argv or sys.argv[1:])])}")
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2) + "\n")
    return fig


if __name__ == "__main__":
    main()
