"""The ``claver`` command line (also ``python -m claver``)."""

from __future__ import annotations

import argparse
import sys


def _cmd_demo(args: argparse.Namespace) -> int:
    from claver.demo import run_demo

    run_demo(args.model, args.frames, args.seed)
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
    demo = sub.add_parser("demo", help="build a model and classify a generated clip (CPU, "
                                       "nothing to download)")
    demo.add_argument("--model", default="claver-tiny", help="model name (claver models)")
    demo.add_argument("--frames", type=int, default=8)
    demo.add_argument("--seed", type=int, default=0)
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
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"claver {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
