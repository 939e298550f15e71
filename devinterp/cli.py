"""The ``devinterp`` command: a thin layer that parses arguments, calls the API, prints.

``main(argv)`` runs in process, so tests drive the real CLI.
"""

from __future__ import annotations

import argparse
import logging
import sys
import typing
from pathlib import Path

from pydantic import BaseModel, ValidationError

from devinterp.config import ConfigError, DetectConfig, ExecutorConfig, SweepConfig, load_config, with_metrics
from devinterp.refine import RefineError
from devinterp.sweep.errors import SweepFailed, SweepLocked


def _add_model_options(parser: argparse.ArgumentParser, model: type[BaseModel], skip: tuple[str, ...] = ()) -> None:
    """One ``--option`` per simple field of a settings model, default and help taken from the model."""
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        kind = _scalar_type(field.annotation)
        help_text = f"{field.description or ''} (default: {field.default!r})"
        if kind is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif kind is not None:
            choices = typing.get_args(field.annotation) if typing.get_origin(field.annotation) is typing.Literal else None
            parser.add_argument(flag, dest=name, type=kind, choices=choices, default=None, help=help_text)


def _scalar_type(annotation):
    if annotation in (int, float, str, bool):
        return annotation
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return type(args[0])
    if args and all(a in (int, float, str, type(None)) or typing.get_origin(a) is typing.Literal for a in args):
        return _parse_number_or_word
    return None


def _parse_number_or_word(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="devinterp", description="Find the developmental stages of a training run.",
                                     formatter_class=fmt)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars (for batch jobs)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_cmd(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=fmt,
                           epilog="Every config key, its default and meaning: docs/config.md "
                                  "(generated from devinterp/config.py).")
        p.add_argument("config", type=Path, help="run config YAML (see configs/quickstart.yaml)")
        p.add_argument("--out", type=Path, default=Path("out"), help="parent folder of run directories")
        return p

    def sweep_options(p: argparse.ArgumentParser) -> None:
        ex = ExecutorConfig.model_fields
        p.add_argument("--strict", action=argparse.BooleanOptionalAction, default=None,
                       help="exit with status 1 when any checkpoint failed (the rest are still measured) "
                            f"(default: sweep.strict, {SweepConfig.model_fields['strict'].default})%(default).0s")
        p.add_argument("--executor", choices=["local", "ray"], default=None,
                       help=f"where checkpoints are measured (default: sweep.executor.kind, {ex['kind'].default!r})"
                            "%(default).0s")
        p.add_argument("--workers", type=int, default=None,
                       help=f"{ex['workers'].description} (default: sweep.executor.workers, {ex['workers'].default})"
                            "%(default).0s")
        p.add_argument("--address", default=None,
                       help=f"{ex['address'].description} (default: sweep.executor.address){'%(default).0s'}")

    def force_new_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--force-new", action="store_true",
                       help="when <out>/<name> holds a run measured with other settings, write to <name>-2 (or the "
                            "first <name>-k holding this config) instead of refusing")

    p = config_cmd("run", "train (or read) checkpoints, sweep them, detect stages, write the report")
    sweep_options(p)
    force_new_option(p)
    force_new_option(config_cmd("train", "train the config's recipe into <out>/<name>/checkpoints"))
    p = config_cmd("sweep", "measure every checkpoint (resumable) into <out>/<name>/metrics")
    sweep_options(p)
    p.add_argument("--metrics", default=None, metavar="GROUPS",
                   help="comma-separated metric groups to measure this time instead of sweep.metrics, e.g. "
                        "loss,icl_score,heads: a quick look (does induction form? when?) before the LLC; a later "
                        "sweep measures the rest (default: sweep.metrics)%(default).0s")
    force_new_option(p)

    p = config_cmd("calibrate", "freeze the run's SGLD settings (sweep.calibrate: auto searches them) into "
                                "llc_settings.json without measuring, and say what was tried")
    force_new_option(p)

    p = sub.add_parser("detect", help="detect stages from a run's metrics -> stages.csv",
                       description="Detect stages from a run's metrics and write stages.csv. Options override "
                                   "the run's config.yaml `detect:` section; defaults shown are the tool's.")
    p.add_argument("run_dir", type=Path, help="a run directory, e.g. out/quickstart")
    _add_model_options(p, DetectConfig, skip=("signals",))

    p = sub.add_parser("refine", help="densify checkpoints around stage boundaries, measure them, re-detect",
                       formatter_class=fmt,
                       description="Resume the recipe's training from the checkpoint before each boundary's "
                                   "interval, save new checkpoints inside it, sweep only those (same frozen SGLD "
                                   "settings and random streams) and detect stages again. Needs a recipe run "
                                   "trained with train.save_train_state (the default) and its stages.csv.")
    p.add_argument("run_dir", type=Path, help="a run directory, e.g. out/quickstart")
    p.add_argument("--boundary", type=int, action="append", default=None, metavar="STEP",
                   help="refine the boundary nearest STEP (repeatable; default: every boundary)%(default).0s")
    p.add_argument("--points", type=int, default=8, help="new checkpoints per boundary window")

    p = sub.add_parser("report", help="write the standalone HTML report of a run", formatter_class=fmt)
    p.add_argument("run_dir", type=Path, help="a run directory, e.g. out/quickstart")
    p.add_argument("--output", type=Path, default=None,
                   help="HTML file to write (default: <run_dir>/report.html)%(default).0s")
    p.add_argument("--png", action="store_true",
                   help="also write every figure as PNG, for papers (needs the `export` extra and a Chromium browser)")
    p.add_argument("--svg", action="store_true", help="also write every figure as SVG (same needs as --png)")
    p.add_argument("--figures-dir", type=Path, default=None,
                   help="folder for --png/--svg files (default: <run_dir>/figures)%(default).0s")

    p = sub.add_parser("serve", help="interactive Dash explorer of the runs under a folder", formatter_class=fmt,
                       description="Serve a Dash app over every run under ROOT: compare runs, re-run detection "
                                   "live, inspect a stage's heads. Needs the `app` extra (pip install dash).")
    p.add_argument("root", type=Path, nargs="?", default=Path("out"), help="folder holding run directories")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; another host only when you mean it")
    p.add_argument("--port", type=int, default=8050, help="port to listen on")
    return parser


def configure_logging(quiet: bool) -> None:
    """The command line's log format; INFO (calibration runs, checkpoints done) unless ``quiet``.
    Scripts that run the pipeline call it too, so a long calibration is not silent."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(levelname)s %(message)s")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.quiet)
    from devinterp import api
    from devinterp.results import load_results

    progress = not args.quiet
    try:
        if args.command in ("run", "train", "sweep"):
            config = _with_sweep_options(load_config(args.config), args)
            if args.command in ("run", "sweep"):
                logging.getLogger("devinterp.sweep").setLevel(logging.INFO)  # a line per checkpoint, even with -q
            if args.command == "run":
                results = api.run(config, args.out, progress=progress, force_new=args.force_new)
                print(f"{len(results.stages)} stages; report: {results.path / 'report.html'}")
            elif args.command == "train":
                source = api.train(config, args.out, progress=progress, force_new=args.force_new)
                print(f"{len(source)} checkpoints in {source.folder}")
            else:
                metrics = api.sweep(api.checkpoint_source(config, args.out), config, args.out, progress=progress,
                                    force_new=args.force_new)
                print(f"{len(metrics)} metric rows in {api.run_dir_for(config, args.out) / 'metrics'}")
        elif args.command == "calibrate":
            from devinterp.sweep.calibration import calibration_summary

            logging.getLogger("devinterp.sweep").setLevel(logging.INFO)  # a line per calibration run, even with -q
            config = load_config(args.config)
            saved = api.calibrate(api.checkpoint_source(config, args.out), config, args.out, force_new=args.force_new)
            if not saved["new"]:  # (a new calibration has just logged these lines)
                print("\n".join(calibration_summary(saved) + [f"SGLD settings: {saved['choice']}"]))
            print(f"{'frozen' if saved['new'] else 'already frozen'} in {saved['path']} (the sweep reads them; "
                  "delete the file to choose again before measuring)")
        elif args.command == "detect":
            overrides = {k: v for k, v in vars(args).items() if k in DetectConfig.model_fields and v is not None}
            stages = api.detect(args.run_dir, **overrides)
            print(stages.to_string(index=False) if len(stages) else "no stages")
        elif args.command == "refine":
            from devinterp.refine import refine

            stages = refine(args.run_dir, boundaries=args.boundary, points=args.points, progress=progress)
            print(stages.to_string(index=False) if len(stages) else "no stages")
        elif args.command == "report":
            out = args.output or args.run_dir / "report.html"
            results = load_results(args.run_dir)
            print(f"report: {api.render_report(results, out)}")
            formats = [f for f in ("png", "svg") if getattr(args, f)]
            if formats:
                from devinterp.report.export import ExportError

                folder = args.figures_dir or args.run_dir / "figures"
                try:
                    written = api.export_figures(results, folder, formats)
                except ExportError as err:
                    print(f"devinterp: error: figures not exported (the HTML report was written): {err}",
                          file=sys.stderr)
                    return 2
                print(f"figures: {len(written)} files in {folder}")
        elif args.command == "serve":
            try:
                from devinterp.report.app import serve
            except ImportError as err:
                print(f"devinterp: error: the Dash app needs the `app` extra: pip install 'devinterp-phases[app]' ({err})",
                      file=sys.stderr)
                return 2
            serve(args.root, host=args.host, port=args.port)
    except (ConfigError, FileNotFoundError, api.RunDirError, SweepLocked, ImportError, RefineError) as err:
        print(f"devinterp: error: {err}", file=sys.stderr)
        return 2
    except SweepFailed as err:
        print(f"devinterp: {err} (see manifest.json; the other checkpoints were measured)", file=sys.stderr)
        return 1
    except RuntimeError as err:
        from devinterp.llc import CalibrationError  # here, not at the top: it imports torch

        if not isinstance(err, CalibrationError):
            raise
        print(f"devinterp: error: SGLD calibration found no stable setting: {err} (the table of what was tried: "
              "llc_calibration_failed.json in the run folder)", file=sys.stderr)
        return 1
    return 0


def _with_sweep_options(config, args):
    """The config with the sweep options given on the command line (run, sweep) applied."""
    if getattr(args, "metrics", None):
        groups = [g.strip() for g in args.metrics.split(",") if g.strip()]
        config = with_metrics(config, groups, "--metrics")
    if getattr(args, "strict", None) is None and not hasattr(args, "executor"):
        return config
    executor = {k: v for k, v in (("kind", args.executor), ("workers", args.workers), ("address", args.address))
                if v is not None}
    sweep = config.sweep
    if executor:
        try:
            settings = type(sweep.executor).model_validate({**sweep.executor.model_dump(), **executor})
        except ValidationError as err:
            raise ConfigError("; ".join(f"--{'-'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())) from None
        sweep = sweep.model_copy(update={"executor": settings})
    if args.strict is not None:
        sweep = sweep.model_copy(update={"strict": args.strict})
    return config.model_copy(update={"sweep": sweep})


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
