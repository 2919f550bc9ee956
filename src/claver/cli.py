"""The ``claver`` command line (also ``python -m claver``)."""

from __future__ import annotations

import argparse
import sys


def _cmd_demo(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from claver.demo import DemoRecipe, quick_recipe, run_demo

    recipe = quick_recipe() if args.quick else DemoRecipe()
    changes = {k: v for k, v in (("steps", args.steps), ("seed", args.seed),
                                 ("train_per_class", args.train_per_class)) if v is not None}
    run_demo(replace(recipe, **changes), out_dir=args.out, data_dir=args.data, jobs=args.jobs)
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    from claver.data.check import run_check

    return run_check(args.list, args.labels, root=args.root, tar=args.tar,
                     workers=args.workers, backend=args.backend)


def build_parser() -> argparse.ArgumentParser:
    from claver import __version__

    parser = argparse.ArgumentParser(
        prog="claver", description="Language-action video learning on CLIP (CLAVER, ActionCLIP)")
    parser.add_argument("--version", action="version", version=f"claver {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="the embedded benchmark: train a tiny CLAVER and a meanP baseline on "
                     "generated motion videos (CPU, nothing to download, a few minutes)")
    demo.add_argument("--out", default="runs/demo",
                      help="where models and results.json go (default runs/demo)")
    demo.add_argument("--data", help="dataset folder (default $CLAVER_CACHE/demo/...; "
                                     "generated once)")
    demo.add_argument("--steps", type=int, help="training steps per model (default 1000)")
    demo.add_argument("--train-per-class", type=int, help="training videos per class "
                                                          "(default 100)")
    demo.add_argument("--seed", type=int)
    demo.add_argument("--jobs", type=int, help="models trained at once (default: 2 when the "
                                               "machine has 2+ cores)")
    demo.add_argument("--quick", action="store_true",
                      help="a few-second smoke run (20 steps, tiny dataset): not a benchmark")
    demo.set_defaults(func=_cmd_demo)
    data = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_command",
                                                                       required=True)
    check = data.add_parser("check", help="scan a dataset: bad files, class histogram, "
                                          "durations and resolutions (exit 1 on bad files)")
    check.add_argument("list", help="annotation list: 'relative/path.mp4 LABEL' per line")
    check.add_argument("--labels", required=True, help="label CSV (id,name)")
    check.add_argument("--root", help="video folder (default: the list's folder)")
    check.add_argument("--tar", help="read videos from this uncompressed .tar instead")
    check.add_argument("--workers", type=int, default=4)
    check.add_argument("--backend", default="pyav", help="pyav | decord | torchcodec")
    check.set_defaults(func=_cmd_data_check)
    for register in _command_registrars():
        register(sub)
    return parser


def _command_registrars() -> list:
    """``register`` of every module in :mod:`claver.commands` (feature subcommands)."""
    import importlib
    import pkgutil

    import claver.commands

    names = sorted(m.name for m in pkgutil.iter_modules(claver.commands.__path__))
    return [importlib.import_module(f"claver.commands.{n}").register for n in names]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, RuntimeError) as e:  # OSError: missing, exists, permission
        print(f"claver {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"claver {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
