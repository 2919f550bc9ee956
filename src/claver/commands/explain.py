"""``claver explain``: attention heat-maps (PNG figure + GIF) and the Kronecker mask figure."""

from __future__ import annotations

import argparse
from pathlib import Path


def _cmd_explain(args: argparse.Namespace) -> int:
    from claver.commands.predict import _predictor, labels_from_args
    from claver.explain import explain_with
    from claver.figures import mask_figure
    from claver.weights.formats import describe

    if args.topk < 1:
        raise ValueError(f"--topk must be >= 1, got {args.topk}")
    pred = _predictor(args, labels_from_args(args))
    exp = explain_with(pred, args.video, label=args.label, method=args.method)
    out = Path(args.out)
    stem = Path(args.video).stem
    paths = exp.save(out, stem, args.tile, args.topk)
    probs, labels = exp.probs, list(exp.labels)
    best = int(probs.argmax())
    cfg = pred.model.config
    print(f"model      {describe(cfg)}")
    print(f"predicted  {labels[best]} ({100 * float(probs[best]):.1f}%); explained: "
          f"{exp.label} ({100 * float(probs[exp.target]):.1f}%), method {args.method}")
    print(f"figure     {paths['png']}  (frames with their times, heat-maps, top-{args.topk} "
          "labels)")
    print(f"animation  {paths['gif']}")
    if cfg.arch == "claver":
        tokens = args.mask_tokens or cfg.vision.num_tokens
        mask = mask_figure(cfg.num_frames, tokens, cfg.mask, out / f"{stem}.mask.png")
        print(f"mask       {mask}  ({cfg.mask}, {cfg.num_frames} frames x {tokens} tokens)")
    else:
        print(f"mask       none: a {cfg.arch} model has no Kronecker mask")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from claver.commands.predict import add_model_args

    p = subparsers.add_parser(
        "explain", help="attention heat-maps of a video (PNG figure + GIF) and the mask figure")
    p.add_argument("video", metavar="VIDEO", help="video file")
    add_model_args(p)
    p.add_argument("--label", help="label to explain (default: the predicted one)")
    p.add_argument("--method", default="grad-attention", choices=("grad-attention", "attention"),
                   help="grad-attention: class-specific (default); attention: where each "
                        "frame's CLS token looks")
    p.add_argument("--out", default=".", help="output folder (default: current folder)")
    p.add_argument("--tile", type=int, help="pixels per frame of the GIF (default max(S, 128))")
    p.add_argument("--topk", type=int, default=5, help="labels in the figure's bar chart")
    p.add_argument("--mask-tokens", type=int,
                   help="tokens per frame in the mask picture (default: the model's)")
    p.add_argument("--num-frames", type=int, help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_explain)
