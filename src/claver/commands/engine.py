"""``claver train`` and ``claver test``."""

from __future__ import annotations

import argparse


def _config(args: argparse.Namespace):
    from claver.engine.config import load_config

    return load_config(args.config, [*args.opts, *args.overrides])


def _cmd_train(args: argparse.Namespace) -> int:
    from claver.engine.distributed import cleanup
    from claver.engine.train import train

    cfg = _config(args)
    try:
        result = train(cfg, resume=args.resume, auto_resume=args.auto_resume,
                       device=args.device)
    finally:
        cleanup()
    print(f"done: step {result['step']}, best top-1 {result['best_top1']}")
    return 0


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
            evaluate_splits(cfg, model, world.device, log, args.tag)
        else:
            names = engine_data.class_names(cfg)
            run_evaluation(cfg, model, names, world.device, log=log, tag=args.tag,
                           list_file=args.list)
    finally:
        cleanup()
    return 0


def evaluate_splits(cfg, model, device, log, tag: str) -> dict:
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
                           tag=f"{tag}_split{i}", list_file=list_file)
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
                   help="overrides, e.g. TRAIN.LR=2e-6")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a model from a config (torchrun for DDP)")
    _common(train)
    train.add_argument("--resume", help="training checkpoint to continue from (exact step)")
    train.add_argument("--auto-resume", action="store_true",
                       help="continue from OUTPUT/last.pth when it exists")
    train.set_defaults(func=_cmd_train)
    test = sub.add_parser("test", help="evaluate a checkpoint (multi-view, text rows averaged)")
    _common(test)
    test.add_argument("--resume", required=True, help="checkpoint (any supported format)")
    test.add_argument("--list", help="evaluate this list instead of DATA.VAL_FILE")
    test.add_argument("--tag", default="test", help="name of the result files")
    test.set_defaults(func=_cmd_test)
