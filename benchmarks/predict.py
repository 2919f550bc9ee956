"""End-to-end zero-shot prediction throughput: videos/s from files to label probabilities.

Both sides classify the same h264 files (Kinetics-like: 340x256, 25 fps, x264 defaults)
against the same label words (10 by default; ``--labels N`` for a larger vocabulary, e.g. 400
as in zero-shot Kinetics-400) with one template, T = 8 frames at segment centres, short side
224 and centre crop 224, a ViT-B/32 backbone with random weights, fp32, the same batch size
and the same number of torch threads, in one process, measurements interleaved:

- **ours**: ``claver.zeroshot.Predictor`` (PyAV reader decoding only what the sampled frames
  need, short-side scaling inside the decoder, uint8 channels-last resize in torch, text
  features computed once per label set, the next batch decoded in a background thread).
  Rows: ActionCLIP meanP ViT-B/32 (the architecture of the ``openai-vit-b32`` named
  weights) and CLAVER ViT-B/32 (+ 4 Kronecker temporal blocks).
- **baseline**: Hugging Face ``XCLIPModel(XCLIPConfig())`` (X-CLIP base/32, 8 frames) with
  ``XCLIPProcessor`` (``VideoMAEImageProcessorPil`` + a ``CLIPTokenizer`` built from
  claver's bundled BPE vocabulary; nothing from the hub), frames decoded as the X-CLIP model
  card does (PyAV, sequential decode up to the last sampled frame, rgb24 conversion of the
  sampled ones), ``model(**processor(text=..., videos=..., padding=True))`` per batch.

Our rows are the levers of issue 14, one per ``--modes`` entry ``RUNTIME:PRECISION[:N]``:

- ``torch fp32``: eager PyTorch (the reference every other row is compared with);
- ``torch bf16``: bf16 autocast on the video tower's matrix products, with the patch
  embedding, the residual stream, the output projection and the text tower in float32
  (native on CPUs with AVX512-BF16 / AMX; the setup line says which the CPU has);
- ``onnx fp32``: the video tower exported to ONNX and run by ONNX Runtime; ``onnx int8``:
  the same with int8 MatMul weights.
- ``xN``: ``streams=N``, N batches through the model at once, each single-threaded.
- ``compile fp32`` / ``compile bf16`` (only when listed in ``--modes``): the torch rows with
  the video tower through ``torch.compile`` (inductor, CPU), compiled for the batch sizes used
  before timing; the compile time is printed, not counted (it is paid in every new process,
  which is why ``claver predict`` does not do it).
- ``(default)`` marks the row of what ``claver predict`` does on this machine (runtime and
  precision "auto": torch bf16 where the CPU has native bf16, else ONNX Runtime fp32); it is
  always measured.

The ONNX export happens once per weights (cached on disk, like loading a model; its time is
printed, not counted); everything else is timed: for N videos, building the predictor (ours
encodes the label texts there) and everything up to the probabilities. Before timing, both
sides' tokenizers are checked to give the same ids.

**Agreement** (beside the speed): each row's probabilities on the benchmark's videos against
``torch fp32`` of the same architecture: the same top-1 on every video whose fp32 top-2 margin
exceeds 1 %, every probability within 0.01 (:mod:`claver.runtime.agreement`). The random
weights get CLIP's trained logit scale (100) so that probabilities are as peaked as a trained
model's; random weights do not have a trained CLIP's activation outliers, which is where int8
and bf16 lose most, so a reduced-precision row that agrees here is not proof for real weights.

    .venv/bin/python benchmarks/predict.py            # 8 videos, 3 paired rounds, 10 labels
    .venv/bin/python benchmarks/predict.py --labels 400   # Kinetics-sized label set
    .venv/bin/python benchmarks/predict.py --quick    # a smoke run with tiny models
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from claver.runtime.agreement import agreement
from claver.runtime.cpu import describe as cpu_features
from sample_videos import make_videos  # benchmarks/ is on sys.path when run as a script

LABELS = ["playing guitar", "riding a bike", "swimming", "cooking", "dancing", "juggling",
          "skateboarding", "reading a book", "brushing teeth", "walking the dog"]
_VERBS = ("playing", "riding", "cleaning", "throwing", "catching", "carrying", "washing",
          "painting", "climbing", "pushing", "pulling", "cutting", "folding", "kicking",
          "lifting", "opening", "repairing", "shaking", "tying", "watering")
_OBJECTS = ("a guitar", "a bike", "the dishes", "a ball", "a ladder", "a rope", "a window",
            "a car", "a tree", "a box", "a door", "a bottle", "a fence", "a drum", "a kite",
            "a shoe", "a table", "a boat", "a horse", "a plant")


def label_set(n: int) -> list[str]:
    """``n`` distinct label phrases: LABELS, then verb + object pairs (up to 409)."""
    pool = list(dict.fromkeys(LABELS + [f"{v} {o}" for v in _VERBS for o in _OBJECTS]))
    if not 1 <= n <= len(pool):
        raise SystemExit(f"--labels must be in 1..{len(pool)}, got {n}")
    return pool[:n]


DEFAULT_MODES = "torch:fp32,torch:fp32:2,torch:bf16,onnx:fp32,onnx:fp32:2,onnx:int8"
QUICK_MODES = "torch:fp32,onnx:fp32,onnx:int8"


def default_mode() -> tuple[str, str, int]:
    """What ``claver predict`` runs on this CPU (runtime and precision "auto")."""
    from claver.runtime.select import choose_runtime

    runtime, precision = choose_runtime("auto", torch.nn.Module(), torch.device("cpu"), "auto")
    return runtime, precision, 1


_COMPILED: dict[tuple[int, str], Callable[[torch.Tensor], torch.Tensor]] = {}


def compiled_tower(model: torch.nn.Module, precision: str, shape: tuple[int, ...],
                   label: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The video tower through ``torch.compile`` (static shapes), compiled for batch
    ``shape[0]`` and 1 before it is timed."""
    from claver.runtime.towers import video_embedding

    key = (id(model), precision)
    if key not in _COMPILED:
        fn = torch.compile(lambda v: video_embedding(model, v, cls_only=True), dynamic=False)

        def tower(video: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                        enabled=precision == "bf16"):
                return fn(video)

        t0 = time.perf_counter()
        for b in (shape[0], 1):
            tower(torch.zeros(b, *shape[1:]))
        print(f"compile {label} {precision}: {time.perf_counter() - t0:.1f}s (every new "
              "process; not timed)")
        _COMPILED[key] = tower
    return _COMPILED[key]


def parse_modes(text: str) -> list[tuple[str, str, int]]:
    """``"onnx:fp32:2,torch:bf16"`` -> [("onnx", "fp32", 2), ("torch", "bf16", 1)]; the
    reference ``torch:fp32`` (one stream) is always included, first, and the default mode
    (:func:`default_mode`) second unless listed."""
    modes = list(dict.fromkeys([("torch", "fp32", 1), default_mode()]))
    for item in text.split(","):
        runtime, precision, *rest = item.strip().split(":")
        mode = (runtime, precision, int(rest[0]) if rest else 1)
        if (runtime not in ("torch", "onnx", "compile")
                or precision not in ("fp32", "bf16", "int8")
                or (runtime == "compile" and (precision == "int8" or mode[2] > 1))):
            raise SystemExit(f"--modes: {item!r} is not RUNTIME:PRECISION[:STREAMS] with "
                             "torch/onnx and fp32/bf16/int8, or compile:fp32 / compile:bf16")
        if mode not in modes:
            modes.append(mode)
    return modes


TEMPLATE = "a video of {}."
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def hf_tokenizer(folder: Path) -> object:
    """A transformers CLIPTokenizer on claver's bundled BPE vocabulary (no hub)."""
    from transformers import CLIPTokenizer

    from claver.text.tokenizer import _read_merges, get_tokenizer

    (folder / "vocab.json").write_text(json.dumps(get_tokenizer().encoder))
    merges = "\n".join(f"{a} {b}" for a, b in _read_merges(None))
    (folder / "merges.txt").write_text("#version: 0.2\n" + merges + "\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))


def check_tokenizers(tok: object, labels: list[str]) -> bool:
    from claver.text.tokenizer import tokenize

    texts = [TEMPLATE.format(c) for c in labels]
    enc = tok(texts, padding=True)  # type: ignore[operator]
    ours = tokenize(texts)
    return all(ours[i, :sum(m)].tolist() == ids[:sum(m)]
               for i, (ids, m) in enumerate(zip(enc["input_ids"], enc["attention_mask"],
                                                strict=True)))


def hf_read_video(path: Path, indices: list[int]) -> list[np.ndarray]:
    """The X-CLIP model card's ``read_video_pyav``: decode in order, keep the sampled frames."""
    import av

    wanted, frames = set(indices), {}
    with av.open(str(path)) as container:
        container.seek(0)
        for i, frame in enumerate(container.decode(video=0)):
            if i > indices[-1]:
                break
            if i in wanted:
                frames[i] = frame
    return [frames[i].to_ndarray(format="rgb24") for i in indices]


def frame_count(path: Path) -> int:
    """Frames in a file, from the container header (what the model card reads)."""
    import av

    with av.open(str(path)) as container:
        return container.streams.video[0].frames


def compiled_predictor(tower: Callable[[torch.Tensor], torch.Tensor]) -> type:
    """A Predictor class whose video tower is ``tower`` (benchmark only: it overrides the
    one private method that runs the model)."""
    from claver.zeroshot import Predictor

    class CompiledPredictor(Predictor):
        def _features(self, video: torch.Tensor) -> torch.Tensor:
            return tower(video.to(self.device))

    return CompiledPredictor


def build_sides(args: argparse.Namespace, folder: Path) -> dict[str, tuple[Callable, ...]]:
    """name -> (run all videos, decode+preprocess one video, model on one batch)."""
    import claver
    from claver.data.sampling import segment_indices
    from claver.inputs import Preprocess
    from claver.models.config import CLIP_MEAN, CLIP_STD
    from claver.runtime.onnx import video_encoder
    from claver.zeroshot import Predictor

    tiny = args.quick
    frames, size = args.frames, 32 if tiny else 224
    suffix = "tiny" if tiny else "vit-b32"
    tok = hf_tokenizer(folder)
    if not check_tokenizers(tok, args.label_set):
        raise SystemExit("tokenizer check failed: HF CLIPTokenizer ids differ from claver's")
    print("check  HF CLIPTokenizer on claver's vocabulary gives claver's ids: yes")
    sides: dict[str, tuple[Callable, ...]] = {}
    default = default_mode()
    for arch in args.ours:
        torch.manual_seed(0)
        opts = {"fusion": "meanP"} if arch == "actionclip" else {}
        model = claver.create_model(f"{arch}-{suffix}", num_frames=frames, **opts).eval()
        with torch.no_grad():
            model.logit_scale.fill_(math.log(100.0))  # a trained CLIP's scale (see docstring)
        pre = Preprocess(frames, size, size, CLIP_MEAN, CLIP_STD)
        label = f"ours {arch}" + (" meanP" if arch == "actionclip" else "") + f" {suffix}"
        for runtime, precision, streams in args.modes:
            if runtime == "onnx":  # export once per weights (cached on disk), not timed
                t0 = time.perf_counter()
                video_encoder(model, precision=precision, threads=1 if streams > 1 else None)
                print(f"export {label} onnx {precision}: {time.perf_counter() - t0:.1f}s "
                      "(once per weights; cached)")

            make, base = Predictor, runtime
            if runtime == "compile":  # torch with a compiled video tower
                make, base = compiled_predictor(compiled_tower(
                    model, precision, (args.batch_size, frames, 3, size, size), label)), "torch"

            def run(paths: list[Path], model=model, pre=pre, precision=precision,
                    streams=streams, base=base, make=make) -> torch.Tensor:
                pred = make(model, args.label_set, templates=[TEMPLATE], preprocess=pre,
                            batch_size=args.batch_size, workers=args.workers,
                            precision=precision, streams=streams, runtime=base)
                return torch.stack([r.probs for r in pred.predict(paths)])

            def prep(path: Path, pre=pre) -> torch.Tensor:
                return pre.load(path)

            steady = make(model, args.label_set, templates=[TEMPLATE], preprocess=pre,
                          precision=precision, runtime=base)

            def infer(batch: torch.Tensor, pred=steady) -> None:
                pred.probs_from_features(pred.video_features(batch))

            tag = f" x{streams}" if streams > 1 else ""
            tag += " (default)" if (runtime, precision, streams) == default else ""
            sides[f"{label} {runtime} {precision}{tag}"] = (run, prep, infer)

    from transformers import XCLIPConfig, XCLIPModel, XCLIPProcessor
    from transformers.models.videomae.image_processing_pil_videomae import (
        VideoMAEImageProcessorPil,
    )

    torch.manual_seed(0)
    if tiny:
        config = XCLIPConfig(
            text_config={"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
                         "num_attention_heads": 1},
            vision_config={"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 3,
                           "num_attention_heads": 1, "image_size": size, "patch_size": 8,
                           "num_frames": frames, "mit_hidden_size": 64,
                           "mit_intermediate_size": 256},
            projection_dim=64, prompt_layers=1, prompt_num_attention_heads=1,
            prompt_projection_dim=64)
    else:
        config = XCLIPConfig()
        config.vision_config.num_frames = frames
    xclip = XCLIPModel(config).eval()
    processor = XCLIPProcessor(
        image_processor=VideoMAEImageProcessorPil(
            size={"shortest_edge": size}, crop_size={"height": size, "width": size},
            image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD),
        tokenizer=tok)
    texts = [TEMPLATE.format(c) for c in args.label_set]

    def hf_frames(path: Path) -> list[np.ndarray]:
        indices = segment_indices(frame_count(path), frames, train=False).tolist()
        return hf_read_video(path, indices)

    def hf_run(paths: list[Path]) -> None:
        for i in range(0, len(paths), args.batch_size):
            videos = [hf_frames(p) for p in paths[i:i + args.batch_size]]
            inputs = processor(text=texts, videos=videos, return_tensors="pt", padding=True)
            with torch.inference_mode():
                xclip(**inputs).logits_per_video.float().softmax(-1)

    def hf_prep(path: Path) -> torch.Tensor:
        return processor(videos=[hf_frames(path)], return_tensors="pt")["pixel_values"]

    def hf_infer(batch: torch.Tensor) -> None:
        inputs = processor(text=texts, return_tensors="pt", padding=True)
        with torch.inference_mode():
            xclip(pixel_values=batch, **inputs).logits_per_video.softmax(-1)

    sides[f"HF X-CLIP {suffix} fp32"] = (hf_run, hf_prep, hf_infer)
    params = {k: sum(p.numel() for p in m.parameters()) / 1e6
              for k, m in (("X-CLIP", xclip),)}
    print(f"models random init; X-CLIP {params['X-CLIP']:.1f}M parameters")
    return sides


def reference_of(name: str, names: list[str]) -> str:
    """The ``torch fp32`` row (one stream) of the same architecture as ``name``."""
    arch = name.split(" torch ")[0].split(" onnx ")[0].split(" compile ")[0]
    return next(n for n in names if n.removesuffix(" (default)") == f"{arch} torch fp32")


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def run(args: argparse.Namespace) -> int:
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        paths = make_videos(folder, args.videos, args.seconds, (340, 256))
        print(f"videos {len(paths)} h264 mp4, 340x256, {args.seconds:g} s at 25 fps (x264 "
              f"defaults), encoded in {time.perf_counter() - t0:.1f}s")
        print(f"setup  torch {torch.__version__}, {threads} thread(s), "
              f"{len(args.label_set)} labels, "
              f"T={args.frames}, batch {args.batch_size}, our decode workers {args.workers}, "
              f"{args.rounds} paired round(s); CPU reduced-precision features: "
              f"{cpu_features()}")
        sides = build_sides(args, folder)
        names = list(sides)
        batch = torch.stack([sides[names[0]][1](p) for p in paths[:args.batch_size]])
        hf_batch = torch.cat([sides[names[-1]][1](p) for p in paths[:args.batch_size]])
        for run_all, _, _ in sides.values():  # warm-up
            run_all(paths[:1])
        totals: dict[str, list[float]] = {name: [] for name in names}
        preps: dict[str, list[float]] = {name: [] for name in names}
        infers: dict[str, list[float]] = {name: [] for name in names}
        probs: dict[str, torch.Tensor] = {}
        for r in range(args.rounds):  # every side on the same videos, order rotating
            for name in names[r % len(names):] + names[:r % len(names)]:
                run_all, prep, infer = sides[name]
                start = time.perf_counter()
                out = run_all(paths)
                totals[name].append(time.perf_counter() - start)
                if out is not None:
                    probs[name] = out
                one = paths[r % len(paths)]
                preps[name].append(timed(lambda f=prep, x=one: f(x)))
                b = hf_batch if name.startswith("HF") else batch
                infers[name].append(timed(lambda f=infer, b=b: f(b)) / len(b))
        base = next(n for n in names if n.startswith("HF"))
        width = max(len(n) for n in names) + 1
        print(f"\n{'side':<{width}} {'videos/s':>9} {'ratio':>7} {'(q1-q3)':>11}   "
              f"{'decode+prep ms':>14} {'model ms':>9}  {'top-1':>5} {'max|dp|':>8}  agrees")
        for name in names:
            rate = len(paths) / statistics.median(totals[name])
            q1, q2, q3 = _quartiles([b / t for b, t in zip(totals[base], totals[name],
                                                           strict=True)])
            agree = "    -        -  -"
            if name in probs:
                ref = probs[reference_of(name, names)]
                a = agreement(ref, probs[name])
                agree = (f"{f'{a.same_top1}/{a.checked}':>5} {a.max_abs:>8.4f}  "
                         f"{'yes' if a.ok else 'NO'}")
            print(f"{name:<{width}} {rate:>9.2f} {q2:>6.2f}x {f'{q1:.2f}-{q3:.2f}':>11}   "
                  f"{statistics.median(preps[name]) * 1e3:>14.1f} "
                  f"{statistics.median(infers[name]) * 1e3:>9.1f}  {agree}")
        print("\nratio: HF X-CLIP's time / the row's time for the same videos in the same round "
              "(> 1: faster), median and quartiles over rounds; end to end, per round: our "
              "predictor set-up (text encoding) + all videos. decode+prep: one video, file to "
              "model input. model: one video's share of a batch, input to probabilities "
              "(ours: text features already computed; X-CLIP: its text tower runs in every "
              "call). top-1: videos keeping the fp32 eager top-1 / videos whose fp32 top-2 "
              "margin exceeds 1 %; max|dp|: largest probability difference from fp32 eager "
              "(last round); agrees: top-1 all kept and max|dp| <= 0.01.")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--videos", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--workers", type=int, default=1, help="our background decoding threads")
    p.add_argument("--threads", type=int, help="torch threads (default: the usable cores)")
    p.add_argument("--rounds", type=int, default=3,
                   help="paired rounds: every side on all videos, order rotating")
    p.add_argument("--ours", default="actionclip,claver",
                   help="comma-separated: actionclip (meanP) and/or claver")
    p.add_argument("--modes", default=DEFAULT_MODES,
                   help="comma-separated RUNTIME:PRECISION[:STREAMS] rows for our side "
                        f"(default {DEFAULT_MODES}; torch:fp32 is the agreement reference)")
    p.add_argument("--labels", type=int, default=len(LABELS),
                   help="size of the label set (default 10; e.g. 400 for a Kinetics-sized "
                        "zero-shot vocabulary: X-CLIP encodes it in every call, we once)")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny models, 2 videos")
    args = p.parse_args(argv)
    args.label_set = label_set(args.labels)
    args.ours = args.ours.split(",")
    if args.quick:
        args.videos, args.seconds, args.rounds, args.batch_size = 2, 1.0, 1, 2
        args.modes = QUICK_MODES if args.modes == DEFAULT_MODES else args.modes
    args.modes = parse_modes(args.modes)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
