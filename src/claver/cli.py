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


class _IntermixedParser(argparse.ArgumentParser):
    """Positionals may follow options: ``data check LIST --labels L KEY=VALUE``."""

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if self._intermixing:  # parse_known_intermixed_args calls back here
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


_OVERRIDE = r"[A-Z][A-Z0-9_]*(\.[A-Z][A-Z0-9_]*)*="  # KEY=VALUE, keys upper case


def _cmd_data_check(args: argparse.Namespace) -> int:
    import re

    from claver.engine.config import load_config
    from claver.engine.data import check_data

    overrides = [*args.opts, *args.overrides]
    if args.list is not None and re.match(_OVERRIDE, args.list):
        overrides.insert(len(args.opts), args.list)  # `check -c X.yaml KEY=VALUE`: no list
        args.list = None
    cfg = load_config(args.config, overrides)
    for key, value in (("ROOT", args.root), ("TAR", args.tar), ("BACKEND", args.backend),
                       ("LABEL_LIST", args.labels)):
        if value is not None:
            setattr(cfg.DATA, key, str(value))
    if not cfg.DATA.LABEL_LIST:
        raise ValueError("no label list: give --labels LABELS.csv (id,name per line) or a "
                         "--config that sets DATA.LABEL_LIST")
    return check_data(cfg, [args.list] if args.list else None, draws=args.draws,
                      full=args.full, workers=args.workers, progress=not args.no_progress)


def _add_data_check(data: argparse._SubParsersAction) -> None:
    from claver.data.video_source import BACKENDS

    check = data.add_parser(
        "check", help="read a dataset the way training and evaluation will: bad files with "
                      "reasons, class histogram, durations and resolutions (exit 1 on bad files)",
        description="Reads, per video, the frames of the evaluation views and of a few training "
                    "draws through the same reader and samplers as training (--full: every "
                    "frame). Settings come from --config (+ overrides) or the defaults "
                    "(8 frames, TSN segments, one view).")
    check.add_argument("list", nargs="?",
                       help="annotation list, 'relative/path.mp4 LABEL' per line (default with "
                            "--config: DATA.TRAIN_FILE and DATA.VAL_FILE)")
    check.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="config overrides, e.g. DATA.NUM_FRAMES=16 TEST.NUM_CLIPS=4")
    check.add_argument("-c", "--config", help="experiment YAML: frames, sampling, test views, "
                                              "lists, root, tar, backend and decode limits")
    check.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE",
                       help="overrides, e.g. --opts DATA.NUM_FRAMES 16 TEST.NUM_CLIPS 4")
    check.add_argument("--labels", help="label CSV (id,name); default DATA.LABEL_LIST")
    check.add_argument("--root", help="video folder (default DATA.ROOT, else the list's folder)")
    check.add_argument("--tar", help="read videos from this uncompressed .tar (DATA.TAR)")
    check.add_argument("--backend", choices=BACKENDS, help="decoder (default DATA.BACKEND: pyav)")
    check.add_argument("--full", action="store_true",
                       help="also decode every frame of every video (slower, exhaustive)")
    check.add_argument("--draws", type=int, default=3,
                       help="training draws per video (the samples of epochs 0..N-1; default 3, "
                            "0: evaluation views only)")
    check.add_argument("--workers", type=int, default=4, help="reader threads (default 4)")
    check.add_argument("--no-progress", action="store_true", help="no progress bar")
    check.set_defaults(func=_cmd_data_check)


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
    data = sub.add_parser("data", help="dataset tools").add_subparsers(
        dest="data_command", required=True, parser_class=_IntermixedParser)
    _add_data_check(data)
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


def _subcommand_parser(parser: argparse.ArgumentParser, argv: list[str]
                       ) -> argparse.ArgumentParser | None:
    """The parser of the subcommand named in ``argv`` (the first non-option word)."""
    name = next((a for a in argv if not a.startswith("-")), None)
    for action in parser._actions:  # noqa: SLF001
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:  # noqa: SLF001
            return action.choices[name]
    return None


def main(argv: list[str] | None = None) -> int:
    from claver.commands.engine import OverrideError, split_overrides

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    sub = _subcommand_parser(parser, argv)
    overrides = None
    if sub is not None and sub.get_default("overrides_anywhere"):
        at = argv.index(next(a for a in argv if not a.startswith("-")))
        try:  # `train -c C A=1 --auto-resume B=2`: KEY=VALUE anywhere, --opts KEY VALUE
            rest, overrides = split_overrides(argv[at + 1:], sub)
        except OverrideError as e:
            print(f"claver {argv[at]}: error: {e}", file=sys.stderr)
            return 2
        argv = [*argv[:at + 1], *rest]
    args = parser.parse_args(argv)
    if overrides is not None:
        args.override_list = overrides
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
