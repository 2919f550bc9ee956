"""Data-pipeline throughput: clips/s of ONE loader worker, ours vs a decord2 baseline.

Both sides decode 340x256 h264 videos (the usual Kinetics short-side-256 preprocessing,
x264 defaults: keyframe every 250 frames, B-frames), TSN-sample T frames (train: one random
frame per segment) and apply the same training transform (multi-scale crop, resize to S,
flip, colour jitter, grayscale, normalise):

- ours:     ``VideoDataset`` with the PyAV backend (one decoder thread, keyframe-aware seeks);
- baseline: ``decord.VideoReader(path, num_threads=1).get_batch(indices)`` then the same
  transform.

Same work on both sides: a first pass through the dataset records, for every clip, the frame
indices it samples and the state of the generator its transform receives; the baseline
decodes those indices and transforms with a generator in that state. So both sides decode the
same frames and draw the same crop, flip, jitter and grayscale, and the script checks that
they produce the same clips before it times anything. Every clip has its own draws.

Run in one process with ``torch.set_num_threads(1)``, as one DataLoader worker runs. Reports
clips/s, the ratio ours / baseline (median of the per-repeat ratios, and their range: the
sides are timed interleaved clip by clip, so a busy CPU slows both), and where our time goes
(decode vs transform).

    .venv/bin/python benchmarks/data_throughput.py            # T = 8, 16, 32 at S = 224
    .venv/bin/python benchmarks/data_throughput.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sample_videos import make_videos  # benchmarks/ is on sys.path when run as a script


class _Paths:
    """The smallest source: ``count`` entries cycling over the paths, label 0."""

    def __init__(self, paths: list[Path], count: int) -> None:
        from claver.data.sources import VideoEntry

        self.entries = [VideoEntry(str(paths[i % len(paths)]), (0,), i + 1)
                        for i in range(count)]

    def __len__(self) -> int:
        return len(self.entries)

    def open(self, i: int) -> str:
        return self.entries[i].path

    def describe(self, i: int) -> str:
        return self.entries[i].path


@dataclass
class Plan:
    """What the dataset did for one clip: the video, its frame indices, the generator state
    its transform started from, and the clip it returned."""

    path: str
    indices: list[int]
    state: torch.Tensor
    clip: torch.Tensor

    def generator(self) -> torch.Generator:
        return torch.Generator().set_state(self.state)


def record_plans(source: _Paths, sampler: Callable[[int, np.random.Generator], np.ndarray],
                 transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor]
                 ) -> list[Plan]:
    """Run a twin of the benchmarked dataset whose sampler and transform record their work."""
    from claver.data.dataset import VideoDataset

    seen: dict = {}

    def sample(n: int, rng: np.random.Generator) -> np.ndarray:
        seen["indices"] = np.asarray(sampler(n, rng))
        return seen["indices"]

    def augment(frames: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        seen["state"] = gen.get_state()
        return transform(frames, gen)

    twin = VideoDataset(source, sample, augment, on_error="raise")
    plans = []
    for i in range(len(source)):
        clip = twin[i]["video"]
        plans.append(Plan(source.open(i), seen["indices"].reshape(-1).tolist(), seen["state"],
                          clip))
    return plans


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
              f"S={args.size} | {args.clips} clips per measurement (each with its own draws), "
              f"{args.repeats} interleaved repeats")
        transform = build_train_transform(args.size, mean=IMAGENET_MEAN, std=IMAGENET_STD)
        source = _Paths(paths, args.clips)
        rows = []
        for t in args.frames:
            sampler = FrameSampler(num_frames=t, train=True)
            dataset = VideoDataset(source, sampler, transform, on_error="raise")
            plans = record_plans(source, sampler, transform)

            def ours(i: int, dataset: VideoDataset = dataset) -> torch.Tensor:
                return dataset[i]["video"]

            def baseline(i: int, plans: list[Plan] = plans) -> torch.Tensor:
                vr = decord.VideoReader(plans[i].path, num_threads=1)
                frames = torch.from_numpy(vr.get_batch(plans[i].indices).asnumpy())
                return transform(frames, plans[i].generator())

            def decode_only(i: int, plans: list[Plan] = plans) -> torch.Tensor:
                with VideoReader(plans[i].path) as reader:
                    reader.info  # noqa: B018 - the dataset reads it (frame count) too
                    return reader.get_frames(plans[i].indices)

            decoded = [decode_only(i) for i in range(args.clips)]

            def transform_only(i: int, plans: list[Plan] = plans,
                               decoded: list = decoded) -> torch.Tensor:
                return transform(decoded[i], plans[i].generator())

            # same work: decord decodes the frames PyAV does, and every output is identical
            frame_diff = max(
                (decoded[i].int() - torch.from_numpy(decord.VideoReader(
                    plans[i].path, num_threads=1).get_batch(plans[i].indices).asnumpy()).int()
                 ).abs().max().item() for i in range(args.clips))
            clip_diff = max(max((ours(i) - plans[i].clip).abs().max().item(),
                                (baseline(i) - plans[i].clip).abs().max().item(),
                                (transform_only(i) - plans[i].clip).abs().max().item())
                            for i in range(args.clips))
            print(f"check T={t}: decoded frames max|diff| {frame_diff} (uint8 levels), clips "
                  f"max|diff| {clip_diff:.3g} (ours vs decord, {args.clips} clips)")
            if frame_diff > 2 or (frame_diff == 0 and clip_diff > 0):
                print("the two sides do not do the same work: no timing")
                return 1

            fns = {"ours": ours, "decord": baseline, "decode": decode_only,
                   "transform": transform_only}
            # interleaved clip by clip (order reversed every other repeat), so the slow spells
            # of a shared CPU hit every side alike
            times: dict[str, list[float]] = {name: [0.0] * args.repeats for name in fns}
            for r in range(args.repeats):
                order = list(fns.items())
                for i in range(args.clips):
                    for name, fn in order if r % 2 == 0 else order[::-1]:
                        start = time.perf_counter()
                        fn(i)
                        times[name][r] += (time.perf_counter() - start) / args.clips
            rates = {name: statistics.median(v) for name, v in times.items()}
            ratios = [d / o for d, o in zip(times["decord"], times["ours"], strict=True)]
            rows.append(f"{t:>3} {1 / rates['ours']:>12.2f} {1 / rates['decord']:>14.2f} "
                        f"{statistics.median(ratios):>5.2f}x {min(ratios):>5.2f}-"
                        f"{max(ratios):<5.2f} {rates['decode'] * 1e3:>14.1f} "
                        f"{rates['transform'] * 1e3:>12.1f}")
        print(f"\n{'T':>3} {'ours clip/s':>12} {'decord clip/s':>14} {'ratio':>6} "
              f"{'range':>11} {'ours decode ms':>14} {'transform ms':>12}")
        print("\n".join(rows))
        print("\nratio = ours clips/s / decord clips/s (> 1: ours is faster): median of the "
              "per-repeat ratios, range = their min-max. clip/s and ms: medians over repeats. "
              "decode ms: PyAV open + decode of the sampled frames; transform ms: the training "
              "transform alone on those frames.")
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
