"""``claver export``: a model's video and text towers as ONNX files (for ONNX Runtime)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _cmd_export(args: argparse.Namespace) -> int:
    import torch

    from claver.pretrained import PRETRAINED, load_pretrained, resolve_model
    from claver.runtime.onnx import check_export, export_onnx, import_onnx, import_onnxruntime
    from claver.weights.formats import describe

    import_onnx()  # before loading anything: a missing extra is one line
    if not args.no_check:
        import_onnxruntime()
    if args.num_frames is not None and args.model in PRETRAINED:
        model = load_pretrained(args.model, allow_unverified=args.allow_unverified,
                                num_frames=args.num_frames)
    else:
        model = resolve_model(args.model, allow_unverified=args.allow_unverified)
    if args.num_frames is not None and args.num_frames != model.config.num_frames:
        raise ValueError(f"--num-frames {args.num_frames}: {args.model} is built for "
                         f"{model.config.num_frames} frames (a checkpoint keeps its own)")
    out = Path(args.out)
    paths = export_onnx(model, out, precision=args.precision, text=not args.no_text)
    print(f"model  {args.model}: {describe(model.config)}")
    for kind, path in paths.items():
        print(f"{kind:<6} {path}  ({path.stat().st_size / 1e6:.1f} MB)")
    if not args.no_check:
        torch.manual_seed(0)
        diffs = check_export(model, out)
        print("check  max |ONNX Runtime - torch| on a random input: " + ", ".join(
            f"{k} {v:.2e}" for k, v in diffs.items()))
    print(f"use    claver predict VIDEO --labels 'a,b' --model {out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="export a model to ONNX (video tower + text tower) for ONNX Runtime",
        description="Write OUT (the video tower: normalised video (B, T, 3, S, S) -> "
                    "embedding (B, E), dynamic batch) and OUT with .text.onnx (the text "
                    "tower: token ids -> normalised features). Both record the model config, "
                    "preprocessing and logit scale, so `claver predict --model OUT` uses them. "
                    "Needs pip install 'claver[onnx]'.")
    p.add_argument("model", metavar="MODEL",
                   help="named weights (claver models list) or a checkpoint path")
    p.add_argument("out", metavar="OUT.onnx", help="output file for the video tower")
    p.add_argument("--precision", default="fp32", choices=("fp32", "int8"),
                   help="int8: MatMul weights quantised to int8 (smaller, faster on CPUs; "
                        "probabilities change slightly)")
    p.add_argument("--no-text", action="store_true", help="export the video tower only")
    p.add_argument("--no-check", action="store_true",
                   help="skip comparing ONNX Runtime with torch on a random input")
    p.add_argument("--num-frames", type=int,
                   help="frames per video baked into the video tower (named CLIP/ActionCLIP "
                        "weights; default: the model's)")
    p.add_argument("--allow-unverified", action="store_true",
                   help="allow downloading named weights that have no published sha256")
    p.set_defaults(func=_cmd_export)
