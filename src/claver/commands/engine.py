"""``claver train`` and ``claver test``."""

from __future__ import annotations

import argparse
import re

# KEY=VALUE with an upper-case dotted KEY: a config override wherever it stands on the line
OVERRIDE = re.compile(r"[A-Z][A-Z0-9_]*(\.[A-Z][A-Z0-9_]*)*=")


class OverrideError(ValueError):
    """A malformed override on the command line."""


def split_overrides(tokens: list[str], parser: argparse.ArgumentParser
                    ) -> tuple[list[str], list[str]]:
    """Take the config overrides out of a subcommand's arguments, in command-line order:
    ``KEY=VALUE`` anywhere (before or after options) and ``--opts KEY VALUE [KEY VALUE ...]``
    groups (``KEY=VALUE`` items allowed there too). Returns (the other arguments, the
    overrides as ``KEY=VALUE``). A ``--opts`` key without a value (the line ends, or the next
    argument is an option or another override) is an :class:`OverrideError` naming the key."""
    options = {s for a in parser._actions for s in a.option_strings}  # noqa: SLF001
    takes_value = {s for a in parser._actions for s in a.option_strings  # noqa: SLF001
                   if a.nargs != 0}

    def is_option(tok: str) -> bool:
        return tok.startswith("--") or tok in options

    def option_with_value(tok: str) -> bool:  # ``--res X``: argparse accepts prefixes
        if tok in takes_value:
            return True
        if not tok.startswith("--") or "=" in tok or len(tok) < 3:
            return False
        matches = [o for o in options if o.startswith(tok)]
        return len(matches) == 1 and matches[0] in takes_value

    rest: list[str] = []
    overrides: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "--":
            rest += tokens[i:]
            break
        if tok == "--opts" or tok.startswith("--opts="):
            group = [tok.partition("=")[2]] if "=" in tok else []
            group_start = len(overrides)
            i += 1
            queue = group + tokens[i:]
            j = 0
            while j < len(queue) and not is_option(queue[j]):
                key = queue[j]
                if "=" in key:
                    overrides.append(key)
                    j += 1
                    continue
                nxt = queue[j + 1] if j + 1 < len(queue) else None
                if nxt is None or is_option(nxt) or OVERRIDE.match(nxt):
                    after = f" (next: {nxt!r})" if nxt is not None else " (end of line)"
                    raise OverrideError(f"--opts {key} has no value{after}; give "
                                        f"--opts {key} VALUE or {key}=VALUE")
                overrides.append(f"{key}={nxt}")
                j += 2
            if len(overrides) == group_start:
                raise OverrideError("--opts needs KEY VALUE pairs, e.g. --opts TRAIN.LR 2e-6")
            i += j - len(group)
            continue
        if option_with_value(tok) and i + 1 < len(tokens):
            rest += tokens[i:i + 2]
            i += 2
            continue
        if OVERRIDE.match(tok):
            overrides.append(tok)
        else:
            rest.append(tok)
        i += 1
    return rest, overrides


def _config(args: argparse.Namespace):
    from claver.engine.config import load_config

    if args.overrides:  # what split_overrides left: not an option, not KEY=VALUE
        raise OverrideError(f"unexpected argument {args.overrides[0]!r}: overrides are "
                            "KEY=VALUE with an upper-case KEY (TRAIN.LR=1e-5) or "
                            "--opts KEY VALUE")
    return load_config(args.config, [*args.opts, *getattr(args, "override_list", [])])


def _cmd_train(args: argparse.Namespace) -> int:
    from claver.engine.distributed import cleanup
    from claver.engine.train import train

    cfg = _config(args)
    try:
        train(cfg, resume=args.resume, auto_resume=args.auto_resume, overwrite=args.overwrite,
              allow_changed_settings=args.allow_changed_settings, device=args.device)
    finally:
        cleanup()
    return 0  # train() said where everything is


def _cmd_test(args: argparse.Namespace) -> int:
    from claver.engine import data as engine_data
    from claver.engine.distributed import cleanup, init_distributed
    from claver.engine.train import run_evaluation
    from claver.models.factory import load_model

    cfg = _config(args)
    world = init_distributed(args.device)
    try:
        model = load_model(args.resume, num_frames=cfg.DATA.NUM_FRAMES).to(world.device)
        log = print if world.is_main else (lambda *_: None)
        if cfg.TEST.SPLITS:
            evaluate_splits(cfg, model, world.device, log, args.tag, checkpoint=args.resume)
        else:
            names = engine_data.class_names(cfg)
            run_evaluation(cfg, model, names, world.device, log=log, tag=args.tag,
                           list_file=args.list, checkpoint=args.resume)
    finally:
        cleanup()
    return 0


def evaluate_splits(cfg, model, device, log, tag: str, checkpoint: str | None = None) -> dict:
    """Zero-shot / cross-dataset protocol: every ``LIST|LABELS`` split of TEST.SPLITS with
    its own label set; mean +- std of top-1 over splits, written to ``eval/<tag>_splits.json``."""
    import json
    import statistics
    from pathlib import Path

    from claver.data.sources import read_labels
    from claver.engine.train import run_evaluation

    results = []
    for i, split in enumerate(cfg.TEST.SPLITS):
        list_file, sep, labels = split.partition("|")
        if not sep:
            raise ValueError(f"TEST.SPLITS entry {split!r} must be 'LIST.txt|LABELS.csv'")
        r = run_evaluation(cfg, model, read_labels(labels), device, log=log,
                           tag=f"{tag}_split{i}", list_file=list_file, checkpoint=checkpoint)
        results.append({"split": split, "top1": r["top1"], "top5": r["top5"]})
    top1 = [r["top1"] for r in results]
    summary = {"splits": results, "top1_mean": statistics.mean(top1),
               "top1_std": statistics.pstdev(top1) if len(top1) > 1 else 0.0}
    log(f"[{tag}] {len(top1)} split(s): top-1 {summary['top1_mean']:.2%} "
        f"+- {summary['top1_std']:.2%}")
    out = Path(cfg.OUTPUT) / "eval" / f"{tag}_splits.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    return summary


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", required=True, help="experiment YAML (configs/...)")
    p.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE",
                   help="overrides, e.g. --opts TRAIN.LR 2e-6 DATA.NUM_FRAMES 16")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="overrides anywhere on the line, e.g. TRAIN.LR=2e-6 (applied in "
                        "command-line order, with --opts pairs; the last one wins)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.set_defaults(overrides_anywhere=True)  # cli.main takes them out with split_overrides


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a model from a config (torchrun for DDP)")
    _common(train)
    train.add_argument("--resume", help="training checkpoint to continue from (exact step)")
    train.add_argument("--auto-resume", action="store_true",
                       help="continue from OUTPUT/last.pth when it exists (else start fresh)")
    train.add_argument("--overwrite", action="store_true",
                       help="start over in an OUTPUT that holds an earlier run (replaces its "
                            "config.yaml, checkpoints, metrics and eval/)")
    train.add_argument("--allow-changed-settings", action="store_true",
                       help="resume even though batch size, schedule, seed, frames or the "
                            "train list differ from the checkpoint's (warns what changes)")
    train.set_defaults(func=_cmd_train)
    test = sub.add_parser("test", help="evaluate a checkpoint (multi-view, text rows averaged)")
    _common(test)
    test.add_argument("--resume", required=True, help="checkpoint (any supported format)")
    test.add_argument("--list", help="evaluate this list instead of DATA.VAL_FILE")
    test.add_argument("--tag", default="test", help="name of the result files")
    test.set_defaults(func=_cmd_test)
