"""Training-step throughput and peak memory: videos/s of one optimizer step.

One step = CLAVER forward on a (B, T, 3, S, S) batch against K text rows x C classes, the
soft-target loss, backward and AdamW (the engine's ``compute_loss`` and optimizer groups),
on random weights and random inputs (the data pipeline is measured separately in
``data_throughput.py``). Each run measures the step twice — gradient checkpointing off and
on — and prints the time and memory ratio between the two, measured in the same run.

    .venv/bin/python benchmarks/train_step.py                      # tiny config on CPU
    .venv/bin/python benchmarks/train_step.py --model claver-vit-b16 --frames 8 --batch 8 \\
        --device cuda --amp bf16                                   # on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import claver
from claver.data.mixup import smooth_one_hot
from claver.engine.evaluate import amp_context
from claver.engine.losses import soft_target_cross_entropy
from claver.engine.optim import build_optimizer


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(args: argparse.Namespace, checkpointing: bool) -> tuple[float, float]:
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = claver.create_model(args.model, num_frames=args.frames).to(device).train()
    model.set_grad_checkpointing(checkpointing)
    s = model.config.vision.image_size
    opt = build_optimizer(model, 1e-5, 0.001, 10.0)
    video = torch.randn(args.batch, args.frames, 3, s, s, device=device)
    labels = torch.randint(args.classes, (args.batch,), device=device)
    targets = smooth_one_hot(labels, args.classes, 0.1)
    text = torch.randint(1, 49406, (args.rows, args.classes, 77))
    text[..., 0], text[..., 12] = 49406, 49407
    text[..., 13:] = 0
    text = text.to(device)

    def step() -> None:
        with amp_context(device, args.amp):
            loss = soft_target_cross_entropy(model(video, text), targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return args.batch / statistics.median(times), peak_mb(device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="claver-tiny")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--classes", type=int, default=16, help="C classes per text row")
    p.add_argument("--rows", type=int, default=5, help="K text rows per step")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.frames, args.batch, args.classes, args.rows, args.warmup, args.repeats = (
            4, 2, 4, 2, 1, 2)
    print(f"torch {torch.__version__} | {args.device} | threads {torch.get_num_threads()} | "
          f"{args.model}, {args.frames} frames, batch {args.batch}, {args.rows} text rows x "
          f"{args.classes} classes, amp {args.amp}")
    print(f"{'grad checkpointing':<20} {'videos/s':>9} {'peak MiB':>9}")
    rows = {}
    for ckpt in (False, True):
        vps, mb = measure(args, ckpt)
        rows[ckpt] = (vps, mb)
        print(f"{'on' if ckpt else 'off':<20} {vps:>9.2f} {mb:>9.0f}")
    (a, ma), (b, mb_) = rows[False], rows[True]
    print(f"checkpointing costs {a / b:.2f}x time; peak memory ratio off/on {ma / mb_:.2f}x "
          "(CPU peak = process max RSS, which only grows: read the GPU numbers for memory)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
