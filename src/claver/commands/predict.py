"""``claver predict``: zero-shot label probabilities for video files (table or JSON)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def read_label_file(path: str) -> list[str]:
    """Labels from a file: ``id,name`` CSV (``.csv``) or one label per line (``#`` comments)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"labels file not found: {p}")
    if p.suffix.lower() == ".csv":
        from claver.data.annotations import read_labels

        return read_labels(p)
    lines = [line.strip() for line in p.read_text(encoding="utf-8-sig").splitlines()]
    labels = [line for line in lines if line and not line.startswith("#")]
    if not labels:
        raise ValueError(f"{p}: no labels (write one label per line)")
    return labels


def labels_from_args(args: argparse.Namespace) -> list[str]:
    if (args.labels is None) == (args.labels_file is None):
        raise ValueError("give the labels with --labels 'a,b,c' or --labels-file FILE (one)")
    if args.labels_file is not None:
        return read_label_file(args.labels_file)
    labels = [x.strip() for x in args.labels.split(",")]
    if any(not x for x in labels):
        raise ValueError(f"--labels {args.labels!r} has an empty label; separate labels with "
                         "single commas (labels containing commas: use --labels-file)")
    return labels


def descriptions_from_args(args: argparse.Namespace, labels: list[str]) -> Any:
    """``--descriptions``: a JSON object label -> [texts], or what ``claver prompts`` writes
    (JSONL, or a CLAVER ``id,description`` CSV whose ids index the labels)."""
    if not getattr(args, "descriptions", None):
        return None
    p = Path(args.descriptions)
    if not p.is_file():
        raise FileNotFoundError(f"descriptions file not found: {p}")
    if p.suffix.lower() != ".json":
        from claver.prompts.formats import descriptions_by_class, load_descriptions

        return descriptions_by_class(load_descriptions(p, labels), len(labels))
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{p}: not valid JSON ({e}); expected {{\"label\": [\"description\", "
                         "...], ...}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a JSON object label -> list of descriptions")
    return data


# What a ``claver train`` checkpoint records about its text (``extra`` of the checkpoint):
# ``classes`` (names in label order), ``templates`` (the template strings or a named set)
# and ``descriptions`` (per class, in label order; optional).
TRAINING_TEXT_KEYS = ("classes", "templates", "descriptions")


def training_text(model: str | None) -> dict[str, Any] | None:
    """The class names and text rows a ``claver train`` checkpoint was trained with:
    ``{"classes", "templates", "descriptions", "origin"}``, or None when ``model`` is not
    such a checkpoint or records no class names.

    Read from what the checkpoint records (``extra``); a checkpoint that records only its
    run config falls back to the config's DATA.LABEL_LIST (when that file is still there)
    and DATA.TEMPLATES (descriptions are then not used)."""
    if not model or not Path(model).expanduser().is_file() or str(model).endswith(".onnx"):
        return None  # an ONNX export records no text rows
    from claver.engine.checkpoint import FORMAT
    from claver.weights.errors import CheckpointError
    from claver.weights.safe_load import load_pickle_checkpoint

    try:
        state = load_pickle_checkpoint(Path(model).expanduser())
    except (OSError, CheckpointError):
        return None  # not a pickle checkpoint: loading the model reports what it is
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        return None
    extra = state.get("extra") or {}
    if isinstance(extra, dict) and extra.get("classes"):
        return {"classes": [str(c) for c in extra["classes"]],
                "templates": extra.get("templates") or None,
                "descriptions": extra.get("descriptions") or None,
                "origin": "recorded in the checkpoint"}
    data = (state.get("config") or {}).get("DATA") or {}
    label_list = data.get("LABEL_LIST")
    if not label_list or not Path(label_list).is_file():
        return None
    from claver.data.annotations import read_labels

    named = data.get("TEMPLATES") or "claver"
    return {"classes": read_labels(label_list),
            "templates": "{}" if named == "none" else named, "descriptions": None,
            "origin": f"from the run config: DATA.LABEL_LIST {label_list}, "
                      f"DATA.TEMPLATES {named}"}


def labels_or_training(args: argparse.Namespace, record: dict[str, Any] | None) -> list[str]:
    """``--labels`` / ``--labels-file``, else the class names the checkpoint was trained
    with; neither is a one-line error naming the fix."""
    if args.labels is None and args.labels_file is None:
        if record is not None:
            return list(record["classes"])
        model = getattr(args, "model", None)
        if model and Path(model).expanduser().is_file():
            raise ValueError(f"--model {model} does not record its class names: give the "
                             "labels with --labels 'a,b,c' or --labels-file FILE (checkpoints "
                             "written by `claver train` record them)")
    return labels_from_args(args)


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Arguments shared by ``predict`` and ``explain``: labels, text rows, model."""
    p.add_argument("--labels", help="comma-separated label words, e.g. 'singing,dancing'")
    p.add_argument("--labels-file", help="one label per line, or an id,name .csv")
    p.add_argument("--template", action="append", dest="templates", metavar="TEMPLATE",
                   help="text template with {} for the label (repeat to average several; "
                        "'claver' or 'actionclip': the papers' 16; default 'a video of {}.')")
    p.add_argument("--descriptions",
                   help="extra text rows: JSON {label: [description, ...]}, or the JSONL / "
                        "CSV of `claver prompts` (class ids index the labels)")
    p.add_argument("--model", help="named weights (claver models list), a checkpoint path, or "
                                   "$CLAVER_MODEL; default openai-vit-b32")
    p.add_argument("--allow-unverified", action="store_true",
                   help="allow downloading named weights that have no published sha256")
    p.add_argument("--device", help="cpu (default), cuda, cuda:1 ...")


def _model_name(args: argparse.Namespace) -> str:
    from claver.pretrained import default_model

    return args.model or default_model()


def _predictor(args: argparse.Namespace, labels: list[str],
               record: dict[str, Any] | None = None) -> Any:
    from claver.inputs import Preprocess
    from claver.pretrained import resolve_model
    from claver.runtime.select import is_onnx_file, load_exported
    from claver.zeroshot import Predictor

    name = _model_name(args)
    if is_onnx_file(name):  # written by `claver export`
        model = load_exported(name)
    else:
        model = resolve_model(name, allow_unverified=args.allow_unverified)
    pre = Preprocess.for_model(model, num_frames=getattr(args, "num_frames", None),
                               backend=getattr(args, "backend", None))
    templates = args.templates
    if templates is not None and len(templates) == 1:
        templates = templates[0]  # one template, or a named set ("claver", "actionclip")
    descriptions = descriptions_from_args(args, labels)
    if record is not None and templates is None:  # default: the text rows of training
        templates = record["templates"]
        if descriptions is None and list(labels) == list(record["classes"]):
            descriptions = record["descriptions"]
    return Predictor(model, labels, templates=templates,
                     descriptions=descriptions, preprocess=pre,
                     device=args.device, precision=getattr(args, "precision", "fp32"),
                     batch_size=getattr(args, "batch_size", 4),
                     workers=getattr(args, "workers", 1), streams=getattr(args, "streams", 1),
                     runtime=getattr(args, "runtime", "torch"))


def _pct(p: float) -> str:
    return f"{100 * p:5.1f}%"


def _print_table(results: list[Any], width: int) -> None:
    print(f"{'video':<{width}}  {'prob':>6}  label")
    for r in results:
        if not r.ok:
            print(f"{r.source:<{width}}  FAILED  {r.error}")
            continue
        for i, (label, p) in enumerate(r.top()):
            print(f"{r.source if i == 0 else '':<{width}}  {_pct(p)}  {label}")


def _print_windows(source: str, windows: list[Any], args: argparse.Namespace) -> None:
    from claver.zeroshot import merge_windows

    print(f"\n{source}: {len(windows)} window(s) of {args.window:g} s every "
          f"{(args.stride or args.window):g} s, smoothing {args.smooth}, threshold "
          f"{'none' if args.threshold is None else f'{args.threshold:g}'}")
    print(f"  {'start':>8} {'end':>8}  {'prob':>6}  label            next")
    for w in windows:
        top = w.top(2)
        second = f"{top[1][0]} {_pct(top[1][1]).strip()}" if len(top) > 1 else ""
        print(f"  {w.start:8.2f} {w.end:8.2f}  {_pct(w.score)}  {w.label:<16} {second}")
    segs = merge_windows(windows)
    print("  segments: " + "; ".join(f"{s['start']:.2f}-{s['end']:.2f} s {s['label']}"
                                    for s in segs))


def _run_windows(pred: Any, args: argparse.Namespace) -> tuple[list[dict], int]:
    from claver.zeroshot import windows_result

    out, failed = [], 0
    for video in args.videos:
        try:
            windows = pred.predict_windows(video, window=args.window, stride=args.stride,
                                           smooth=args.smooth, threshold=args.threshold,
                                           topk=args.topk)
        except (ValueError, FileNotFoundError, OSError) as e:  # VideoDecodeError included
            failed += 1
            out.append({"video": video, "ok": False, "error": str(e)})
            if not args.json:
                print(f"\n{video}: FAILED  {e}")
            continue
        out.append(windows_result(video, windows))
        if not args.json:
            _print_windows(video, windows, args)
        if args.plot:
            from claver.figures import window_timeline

            png = window_timeline(windows, Path(args.plot) / f"{Path(video).stem}.timeline.png",
                                  args.threshold, topk=min(args.topk, 5),
                                  title=f"{video}: top labels per window")
            print(f"timeline: {png}", file=sys.stderr if args.json else sys.stdout)
    return out, failed


def _cmd_predict(args: argparse.Namespace) -> int:
    from claver.zeroshot import result_header

    record = training_text(args.model)
    labels = labels_or_training(args, record)
    if args.topk is not None and args.topk < 1:
        raise ValueError(f"--topk must be >= 1, got {args.topk}")
    if args.window is None and (args.stride is not None or args.threshold is not None
                                or args.smooth != 1):
        raise ValueError("--stride, --smooth and --threshold need --window SECONDS")
    if args.plot and args.window is None:
        raise ValueError("--plot draws the per-window probabilities: it needs --window SECONDS")
    pred = _predictor(args, labels, record)
    note = ""
    if record is not None:
        used = [what for what, given in (
            ("class names", args.labels is None and args.labels_file is None),
            ("templates", args.templates is None),
            ("descriptions", args.templates is None and not args.descriptions
             and record["descriptions"] and list(labels) == record["classes"])) if given]
        if used:
            note = f"using the training {', '.join(used)} of {args.model} ({record['origin']})"
            if args.json:
                print(note, file=sys.stderr)
    header = result_header(pred, _model_name(args))
    if not args.json:
        print(f"model   {header['model']}: {header['architecture']} ({pred.runtime} "
              f"{pred.precision})")
        if note:
            print(note)
        print(f"labels  {len(labels)}; {len(pred.rows)} text row(s) per label "
              f"({', '.join(repr(r[0]) for r in pred.rows[:3])}"
              f"{', ...' if len(pred.rows) > 3 else ''})\n")
    if args.window is not None:
        results, failed = _run_windows(pred, args)
    else:
        preds = pred.predict(args.videos, topk=args.topk, on_error="skip",
                             progress=not args.no_progress)
        failed = sum(not r.ok for r in preds)
        results = [r.to_dict() for r in preds]
        if not args.json:
            _print_table(preds, max(5, *(len(r.source) for r in preds)))
    if args.json:
        print(json.dumps({**header, "results": results, "failed": failed}, indent=2))
    if failed:
        print(f"claver predict: {failed} of {len(args.videos)} video(s) could not be read "
              "(see above)", file=sys.stderr)
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict", help="zero-shot label probabilities for video files",
        description="Classify videos against label words (zero-shot). Unreadable videos are "
                    "reported and the rest still predicted; the exit status is 1 if any "
                    "failed.")
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files")
    add_model_args(p)
    p.add_argument("--topk", type=int, default=5, help="labels shown per video (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--window", type=float, metavar="SECONDS",
                   help="long videos: predict windows of this many seconds")
    p.add_argument("--stride", type=float, metavar="SECONDS",
                   help="window start every this many seconds (default: --window)")
    p.add_argument("--smooth", type=int, default=1, metavar="N",
                   help="moving average of probabilities over N windows (odd)")
    p.add_argument("--threshold", type=float, metavar="P",
                   help="windows whose best probability is below P are 'no action'")
    p.add_argument("--plot", metavar="DIR",
                   help="with --window: draw each video's per-window probabilities of its top "
                        "labels over time (and the threshold) as DIR/<video>.timeline.png")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--workers", type=int, default=1,
                   help="background decoding threads (0: decode in the main thread)")
    p.add_argument("--streams", type=int, default=1,
                   help="batches through the model at once, each single-threaded (CPU: try "
                        "the number of cores for many videos)")
    p.add_argument("--runtime", default="auto", choices=("auto", "torch", "onnx"),
                   help="auto (default): torch for bf16, else ONNX Runtime on a CPU when "
                        "installed (pip install 'claver[onnx]'; fp32 probabilities, faster), "
                        "else torch")
    p.add_argument("--precision", default="auto",
                   choices=("auto", "fp32", "bf16", "fp16", "int8"),
                   help="auto (default): bf16 on a CPU with native bf16 (AVX512-BF16/AMX; ~2x "
                        "faster than fp32; measured: same top-1, probabilities within 0.01), "
                        "else fp32. bf16/fp16: torch autocast on the video tower's matrix "
                        "products; int8: ONNX Runtime with int8 weights (faster, less "
                        "exact: opt-in)")
    p.add_argument("--num-frames", type=int, help="frames per video (CLIP/ActionCLIP models; "
                                                  "CLAVER is fixed by its weights)")
    p.add_argument("--backend", help="video decoder: pyav (default), decord, torchcodec")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_predict)
