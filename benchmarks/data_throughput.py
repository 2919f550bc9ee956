"""Data-pipeline throughput: clips/s of ONE loader worker, ours vs a decord2 baseline.

Both sides decode 340x256 h264 videos (the usual Kinetics short-side-256 preprocessing,
x264 defaults: keyframe every 250 frames, B-frames), TSN-sample T frames (train: one random
frame per segment) and apply the same training transform (multi-scale crop, resize to S,
flip, colour jitter, grayscale, normalise):

- ours:     ``VideoDataset`` with the PyAV backend (one decoder thread, keyframe-aware seeks);
- baseline: ``decord.VideoReader(path, num_threads=1).get_batch(indices)`` then the same
  transform.

Run in one process with ``torch.set_num_threads(1)``, as one DataLoader worker runs. Reports
clips/s, the ratio ours / baseline, and where our time goes (decode vs transform).

    .venv/bin/python benchmarks/data_throughput.py            # T = 8, 16, 32 at S = 224
    .venv/bin/python benchmarks/data_throughput.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sample_videos import make_videos  # benchmarks/ is on sys.path when run as a script


class _Paths:
    """The smallest source: a list of paths with label 0."""

    def __init__(self, paths: list[Path]) -> None:
        from claver.data.sources import VideoEntry

        self.entries = [VideoEntry(str(p), (0,), i + 1) for i, p in enumerate(paths)]

    def __len__(self) -> int:
        return len(self.entries)

    def open(self, i: int) -> str:
        return self.entries[i].path

    def describe(self, i: int) -> str:
        return self.entries[i].path


def run(args: argparse.Namespace) -> int:
    import decord

    from claver.data.dataset import VideoDataset
    from claver.data.decode import VideoReader
    from claver.data.sampling import FrameSampler
    from claver.data.transforms import build_train_transform
    from claver.models.config import IMAGENET_MEAN, IMAGENET_STD

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        paths = make_videos(Path(tmp), args.videos, args.seconds, (340, 256))
        print(f"encoded {len(paths)} h264 videos 340x256, {args.seconds:g}s at 25 fps "
              f"in {time.perf_counter() - t0:.1f}s")
        print(f"torch {torch.__version__} | threads 1 | decord {decord.__version__} | "
              f"S={args.size} | {args.clips} clips per measurement, median of "
              f"{args.repeats}")
        transform = build_train_transform(args.size, mean=IMAGENET_MEAN, std=IMAGENET_STD)
        print(f"\n{'T':>3} {'ours clip/s':>12} {'decord clip/s':>14} {'ratio':>6}   "
              f"{'ours decode ms':>14} {'transform ms':>12}")
        for t in args.frames:
            sampler = FrameSampler(num_frames=t, train=True)
            dataset = VideoDataset(_Paths(paths), sampler, transform, on_error="raise")

            def ours(i: int, dataset: VideoDataset = dataset) -> None:
                dataset[i % len(paths)]

            def baseline(i: int, t: int = t, sampler: FrameSampler = sampler) -> None:
                rng = np.random.default_rng([0, i])
                gen = torch.Generator().manual_seed(i)
                vr = decord.VideoReader(str(paths[i % len(paths)]), num_threads=1)
                idx = sampler(len(vr), rng)
                frames = torch.from_numpy(vr.get_batch(list(idx)).asnumpy())
                transform(frames, gen)

            def decode_only(i: int, sampler: FrameSampler = sampler) -> torch.Tensor:
                rng = np.random.default_rng([0, i])
                with VideoReader(str(paths[i % len(paths)])) as reader:
                    return reader.get_frames(sampler(reader.info.num_frames, rng).tolist())

            decoded = [decode_only(i) for i in range(args.clips)]

            def transform_only(i: int, decoded: list = decoded) -> None:
                transform(decoded[i], torch.Generator().manual_seed(i))

            fns = {"ours": ours, "decord": baseline, "decode": decode_only,
                   "transform": transform_only}
            times: dict[str, list[float]] = {name: [] for name in fns}
            for fn in fns.values():
                fn(0)  # warm-up
            for _ in range(args.repeats):  # interleaved, so drifts of a shared CPU hit all
                for name, fn in fns.items():
                    start = time.perf_counter()
                    for i in range(args.clips):
                        fn(i)
                    times[name].append((time.perf_counter() - start) / args.clips)
            rates = {name: statistics.median(v) for name, v in times.items()}
            print(f"{t:>3} {1 / rates['ours']:>12.2f} {1 / rates['decord']:>14.2f} "
                  f"{rates['decord'] / rates['ours']:>5.2f}x   {rates['decode'] * 1e3:>14.1f} "
                  f"{rates['transform'] * 1e3:>12.1f}")
        print("\nratio = ours clips/s / decord clips/s (> 1: ours is faster). decode ms: PyAV "
              "open + decode of the sampled frames; transform ms: the training transform "
              "alone on those frames (medians of interleaved repeats).")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=lambda s: [int(x) for x in s.split(",")],
                   default=[8, 16, 32], help="comma-separated T values")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--videos", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--clips", type=int, default=8, help="clips per timed measurement")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="smoke run: tiny sizes")
    args = p.parse_args(argv)
    if args.quick:
        args.frames, args.size, args.videos, args.seconds = [4], 64, 2, 1.0
        args.clips, args.repeats = 2, 1
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
