"""``claver models`` (named weights and architectures), ``claver info``, ``claver convert``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _fmt_floats(values: Any) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _mean_std_name(mean: Any, std: Any) -> str:
    from claver.models.config import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD

    for name, (m, s) in (("CLIP", (CLIP_MEAN, CLIP_STD)),
                         ("ImageNet", (IMAGENET_MEAN, IMAGENET_STD))):
        if all(abs(a - b) < 1e-6 for a, b in zip((*mean, *std), (*m, *s), strict=True)):
            return f"{name} mean {_fmt_floats(mean)} std {_fmt_floats(std)}"
    return f"mean {_fmt_floats(mean)} std {_fmt_floats(std)}"


def _entry_lines(entry: Any, cache_dir: str | None) -> list[str]:
    from claver.pretrained import cache_status
    from claver.weights.formats import describe

    cfg = entry.config
    checksum = entry.sha256 or ("none published: downloads need --allow-unverified"
                                + (f" (file-name prefix {entry.sha256_prefix} is checked)"
                                   if entry.sha256_prefix else ""))
    lines = [f"{entry.name}  [{cache_status(entry, cache_dir)}: {entry.path(cache_dir)}]",
             f"  architecture   {describe(cfg)}",
             f"  preprocessing  {cfg.num_frames} frames (segment centres), short side "
             f"{entry.short_side}, centre crop {cfg.vision.image_size}, "
             + _mean_std_name(cfg.mean, cfg.std),
             f"  sha256         {checksum}"]
    lines += [f"  {'urls' if i == 0 else '':<13}  {url}" for i, url in enumerate(entry.urls)]
    lines += [f"  license        {entry.license}", f"  source         {entry.source}"]
    return lines


def _cmd_models_list(args: argparse.Namespace) -> int:
    from claver.models.factory import list_models
    from claver.pretrained import list_pretrained

    entries = list_pretrained()
    if getattr(args, "json", False):
        print(json.dumps({"weights": [e.to_dict() for e in entries],
                          "architectures": list_models()}, indent=2))
        return 0
    print("Named weights (claver predict --model NAME; downloaded on first use, sha256-checked;"
          " CLAVER_OFFLINE=1: never download)\n")
    for entry in entries:
        print("\n".join(_entry_lines(entry, getattr(args, "cache_dir", None))) + "\n")
    print("Architectures (random weights; claver.create_model(NAME, pretrained=...)):")
    names = list_models()
    for i in range(0, len(names), 6):
        print("  " + "  ".join(names[i:i + 6]))
    return 0


def _cmd_models_download(args: argparse.Namespace) -> int:
    from claver.pretrained import fetch

    for name in args.names:
        path = fetch(name, cache_dir=args.cache_dir, allow_unverified=args.allow_unverified)
        print(f"{name}: {path}")
    return 0


def _state_summary(ckpt: Any) -> tuple[int, int]:
    return len(ckpt.state_dict), sum(v.numel() for v in ckpt.state_dict.values())


def _cmd_info(args: argparse.Namespace) -> int:
    from claver.models.config import check_size
    from claver.pretrained import PRETRAINED
    from claver.weights.formats import describe, read_checkpoint

    if args.checkpoint in PRETRAINED and not Path(args.checkpoint).exists():
        print("\n".join(_entry_lines(PRETRAINED[args.checkpoint], None)))
        return 0
    ckpt = read_checkpoint(args.checkpoint)  # every model config field is validated here
    cfg = ckpt.config
    size = check_size(cfg, args.max_params, f"{ckpt.source}: the model config")
    tensors, values = _state_summary(ckpt)
    v, t = cfg.vision, cfg.text
    rows = [("file", ckpt.source), ("format", ckpt.format), ("architecture", describe(cfg)),
            ("arch", cfg.arch), ("frames", str(cfg.num_frames))]
    if cfg.arch == "claver":
        rows += [("mask", cfg.mask), ("temporal", f"{cfg.num_temporal_layers} block(s)")]
    if cfg.arch == "actionclip":
        rows.append(("fusion", cfg.fusion))
    rows += [("vision", f"image {v.image_size}, patch {v.patch_size}, width {v.width}, "
                        f"{v.layers} layers, {v.heads} heads"),
             ("text", f"context {t.context_length}, vocab {t.vocab_size}, width {t.width}, "
                      f"{t.layers} layers, {t.heads} heads"),
             ("embed dim", str(cfg.embed_dim)),
             ("input", _mean_std_name(cfg.mean, cfg.std)),
             ("parameters", f"{values / 1e6:.2f}M ({values:,} values)"),
             ("model size", f"{size / 1e6:.2f}M parameters (counted from the config)"),
             ("tensors", f"{tensors} keys")]
    rows += [("note", note) for note in ckpt.notes.values()]
    epoch = ckpt.extra.get("epoch") if isinstance(ckpt.extra, dict) else None
    if epoch is not None:
        rows.append(("epoch", str(epoch)))
    for key, value in rows:
        print(f"{key:<13} {value}")
    if args.keys:
        for name, tensor in ckpt.state_dict.items():
            print(f"  {name:<60} {str(tuple(tensor.shape)):<20} {str(tensor.dtype)[6:]}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    import torch

    from claver.models.factory import load_model, save_model
    from claver.pretrained import PRETRAINED, fetch
    from claver.weights.formats import describe, read_checkpoint

    out = Path(args.output)
    if out.suffix != ".safetensors":
        raise ValueError(f"output {out} must end with .safetensors (our format: weights + "
                         "JSON config)")
    source = args.input
    if source in PRETRAINED and not Path(source).exists():
        source = fetch(source, allow_unverified=args.allow_unverified)
    overrides = {k: v for k, v in (("num_frames", args.num_frames), ("mask", args.mask),
                                   ("arch", args.arch), ("fusion", args.fusion)) if v is not None}
    model = load_model(source, max_params=args.max_params, **overrides)
    save_model(model, out)
    again = read_checkpoint(out)
    expected = model.state_dict()
    same = again.state_dict.keys() == expected.keys() and all(
        torch.equal(again.state_dict[k], expected[k].cpu()) for k in expected)
    if not same or again.config != model.config:
        raise RuntimeError(f"{out}: written file does not read back identically")
    tensors, values = _state_summary(again)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): {describe(model.config)}, "
          f"{tensors} tensors, {values / 1e6:.2f}M values; read back identical")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    models = subparsers.add_parser(
        "models", help="named weights (URLs, sha256, preprocessing, license) and architectures")
    models.add_argument("--json", action="store_true", help="machine-readable table")
    models.add_argument("--cache-dir", help="weights cache (default $CLAVER_CACHE or "
                                            "~/.cache/claver)")
    models.set_defaults(func=_cmd_models_list)
    msub = models.add_subparsers(dest="models_command")
    listing = msub.add_parser("list", help="the named weights table and architecture names")
    listing.add_argument("--json", action="store_true", help="machine-readable table")
    listing.add_argument("--cache-dir", help="weights cache")
    listing.set_defaults(func=_cmd_models_list)
    down = msub.add_parser("download", help="download named weights into the cache now")
    down.add_argument("names", nargs="+", help="weight names (claver models list)")
    down.add_argument("--cache-dir", help="weights cache")
    down.add_argument("--allow-unverified", action="store_true",
                      help="allow downloading files without a published sha256")
    down.set_defaults(func=_cmd_models_download)

    info = subparsers.add_parser("info", help="describe a checkpoint (any supported format) or "
                                              "named weights")
    info.add_argument("checkpoint", help="checkpoint file/directory, or a weight name")
    info.add_argument("--keys", action="store_true", help="list every tensor with its shape")
    _add_max_params(info)
    info.set_defaults(func=_cmd_info)

    conv = subparsers.add_parser("convert", help="write any supported checkpoint as our "
                                                 ".safetensors (weights + JSON config)")
    conv.add_argument("input", help="checkpoint file/directory or a weight name")
    conv.add_argument("output", help="output .safetensors path")
    conv.add_argument("--num-frames", type=int, help="change the number of frames "
                                                     "(interpolates temporal tables)")
    conv.add_argument("--mask", choices=("kmt", "kmct"), help="CLAVER mask to record")
    conv.add_argument("--arch", choices=("clip", "claver", "actionclip"),
                      help="put CLIP weights under a video architecture (new parts fresh)")
    conv.add_argument("--fusion", help="ActionCLIP fusion head for --arch actionclip")
    conv.add_argument("--allow-unverified", action="store_true",
                      help="allow downloading named weights without a published sha256")
    _add_max_params(conv)
    conv.set_defaults(func=_cmd_convert)


def _add_max_params(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-params", type=float, metavar="N",
        help="refuse model configs of more than N parameters (default $CLAVER_MAX_PARAMS or "
             "2e9: a guard against files whose config describes a model that would exhaust "
             "memory)")
