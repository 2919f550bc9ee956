"""Benchmark CLAVER's Kronecker-mask temporal block against a naive reference block.

What it measures
----------------
For each video size ``(T, L)`` (T frames, L tokens per frame, so ``N = T·L`` tokens in one
frame-major sequence) it times **forward + backward** (``loss = output.sum()``) and measures
the **peak memory** of one step of two temporal blocks that hold identical weights:

- **ours**: :class:`claver.models.kronecker.KroneckerTemporalBlock` -- pre-LN block whose
  attention is ``F.scaled_dot_product_attention`` with a *boolean* ``(N, N)`` Kronecker mask
  built once and cached per ``(T, L, mode, device)``;
- **naive**: the same pre-LN block (``temporal_ln_1`` / ``temporal_attn`` / ``temporal_ln_2`` /
  ``temporal_mlp``, same parameter names, weights copied from *ours*) whose attention is
  ``nn.MultiheadAttention(batch_first=True)`` with a *float* additive mask (0 / -inf) rebuilt
  from the definition with ``torch.kron`` on **every** forward, the way the reference code
  does it. By default it is called like CLIP-style reference code calls it,
  ``need_weights=False``, in which case PyTorch itself routes it to SDPA (with the float mask);
  ``--naive-need-weights`` calls it with ``nn.MultiheadAttention``'s default
  ``need_weights=True``, which takes the explicit ``baddbmm -> softmax -> bmm`` path and
  materialises the ``(B·heads, N, N)`` attention weights.

Mask (DESIGN.md §4): with ``mode=kmt`` token ``(t, l)`` may attend to ``(t', l')`` iff
``t' != t or l' == l``; ``mode=kmct``: itself plus every token of frames ``t' < t``. Blocked
entries are ``kron(I_T, 1 - I_L)`` (+ ``kron(triu(1_T, 1), 1_L)`` for KMCT).

Before timing, the script checks that both blocks compute the same thing: it prints the max
abs difference of the outputs (and of the input and parameter gradients) and exits with
status 1 if the output difference exceeds 1e-4 in float32 (0.25 in bfloat16, whose ulp at
|x| ~ 4 is 0.03) or a gradient differs by more than 1e-3 (relative, float32 only).

How to run
----------
From the repository root, with the project's virtualenv::

    .venv/bin/python benchmarks/kronecker_attention.py              # CPU, ViT-B: 1-2 min
    .venv/bin/python benchmarks/kronecker_attention.py --mode kmct
    .venv/bin/python benchmarks/kronecker_attention.py --sizes 8x50,8x197 --repeats 3
    .venv/bin/python benchmarks/kronecker_attention.py --device cuda --dtype bfloat16
    .venv/bin/python benchmarks/kronecker_attention.py --quick      # smoke run, a few seconds

Defaults: width 768 and 12 heads (ViT-B); sizes 8x50, 8x197, 16x197 (50 and 197 tokens per
frame are ViT-B/32 and ViT-B/16 at 224 px); ``--batch`` 1 on CPU (one video; a (16, 197)
step already takes seconds on 2 cores) and 8 on CUDA; ``--repeats`` 5 after ``--warmup`` 1
(plus the verification step, which also warms up). Torch's thread count is left at its
default and printed, with the load average: on a busy 2-core machine the absolute times
moved by up to 2x between runs while the naive/ours ratios stayed put. With ``--dtype
bfloat16`` every parameter is bfloat16 (claver's ``LayerNorm`` computes in float32).

How to read it
--------------
- ``ours ms`` / ``naive ms``: median wall-clock time of one forward+backward
  (``time.perf_counter``, CUDA synchronised); the two blocks are run interleaved, repeat by
  repeat, so slow drifts of a shared machine hit both. ``speed`` = naive / ours: > 1 means
  ours is faster.
- ``ours MiB`` / ``naive MiB``: peak memory of one step *above the baseline after setup*
  (module, input and -- for ours -- its cached mask already exist; the naive block's float
  mask is rebuilt inside the step, as it is on every call). On CUDA:
  ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()`` minus
  ``memory_allocated()`` before the step. On CPU each (implementation, size) runs in a fresh
  subprocess (``--_measure-one``) so earlier runs in the same process cannot raise the
  high-water mark, and the number is the process's peak RSS after the step minus its
  current RSS (``VmRSS``) just before it. Caveat found here: on Linux ``ru_maxrss``
  (``resource.getrusage``, KiB) is *inherited across fork + exec* -- a child starts with
  its parent's high-water mark (hundreds of MiB once this script has run a size), so a
  plain ``ru_maxrss`` difference in the child measures the parent. The child therefore
  resets its own high-water mark (``echo 5 > /proc/self/clear_refs``) after setup and reads
  ``VmHWM`` from ``/proc/self/status`` after the step (method ``VmHWM``); ``ru_maxrss``
  before/after is still read and printed as a cross-check (a dash when the step did not
  raise it). Where ``clear_refs`` cannot be written it falls back to ``ru_maxrss``
  (method ``ru_maxrss``), and a ``<=`` marks a value that is then only an upper bound. The
  number includes the parameter gradients, saved activations and all temporaries; one-off
  lazy initialisation is excluded by a tiny (2-token) step before the reset, and freed heap
  pages are returned with glibc's ``malloc_trim(0)`` first (without it the baseline RSS,
  and so the increase, varied by ~18 MiB from run to run at 8x50).
  ``mem`` = naive / ours.
- ``attn GFLOP``: the dense attention matmuls of one forward, ``4·B·N²·D`` (``Q·Kᵀ`` and
  ``A·V``, 2·B·N²·D each), counted explicitly because ``torch.utils.flop_counter`` counts 0
  for SDPA on CPU. Backward costs about twice that. Both implementations are dense: the
  KMT mask blocks only a fraction ``(L-1)/(T·L) ≈ 1/T`` of the entries and no kernel here
  skips them.

What to expect: with ``need_weights=False`` both blocks end in the same SDPA kernel (SDPA
turns a boolean mask into an additive one itself), so outputs agree bit for bit and time and
memory are within a few per cent -- what ours saves is only the per-call mask rebuild. With
``--naive-need-weights`` the naive block materialises the weights and falls behind as N
grows (here at 16x197: ~1.7x slower, ~4.5x the memory).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

from claver.models.clip import LayerNorm, clip_mlp
from claver.models.kronecker import MASK_MODES, KroneckerTemporalBlock, cached_kronecker_mask

DEFAULT_SIZES = ((8, 50), (8, 197), (16, 197))
FULL_DEFAULTS = {"width": 768, "heads": 12, "repeats": 5, "warmup": 1}
QUICK_DEFAULTS = {"width": 64, "heads": 4, "repeats": 3, "warmup": 1}
QUICK_SIZES = ((2, 5), (4, 9))
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
OUT_TOL = {torch.float32: 1e-4, torch.bfloat16: 0.25}
GRAD_REL_TOL = 1e-3  # checked in float32 only
IMPLS = ("ours", "naive")


# --------------------------------------------------------------------------- reference block
def reference_float_mask(
    num_frames: int, tokens_per_frame: int, mode: str, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Additive (N, N) mask from the definition: -inf where blocked, 0 where allowed."""
    eye_t = torch.eye(num_frames, dtype=dtype, device=device)
    eye_l = torch.eye(tokens_per_frame, dtype=dtype, device=device)
    blocked = torch.kron(eye_t, 1 - eye_l)  # same frame, other token
    if mode == "kmct":
        future = torch.ones(num_frames, num_frames, dtype=dtype, device=device).triu(1)
        ones_l = torch.ones(tokens_per_frame, tokens_per_frame, dtype=dtype, device=device)
        blocked = blocked + torch.kron(future, ones_l)  # later frames
    return torch.zeros_like(blocked).masked_fill(blocked > 0, float("-inf"))


class NaiveTemporalBlock(nn.Module):
    """Pre-LN temporal block on ``nn.MultiheadAttention`` with a float mask rebuilt per call."""

    def __init__(self, width: int, heads: int, mode: str, need_weights: bool = False) -> None:
        super().__init__()
        self.mode = mode
        self.need_weights = need_weights
        self.temporal_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.temporal_ln_1 = LayerNorm(width)
        self.temporal_mlp = clip_mlp(width)
        self.temporal_ln_2 = LayerNorm(width)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        n = x.shape[1]
        mask = reference_float_mask(num_frames, n // num_frames, self.mode, x.dtype, x.device)
        h = self.temporal_ln_1(x)
        attn, _ = self.temporal_attn(h, h, h, need_weights=self.need_weights, attn_mask=mask)
        x = x + attn
        return x + self.temporal_mlp(self.temporal_ln_2(x))


# --------------------------------------------------------------------------- helpers
def build_blocks(args: argparse.Namespace, device: torch.device) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    ours = KroneckerTemporalBlock(args.width, args.heads, args.mode)
    naive = NaiveTemporalBlock(args.width, args.heads, args.mode, args.naive_need_weights)
    naive.load_state_dict(ours.state_dict(), strict=True)  # identical weights, same names
    blocks = {"ours": ours, "naive": naive}
    for block in blocks.values():
        block.to(device, DTYPES[args.dtype])
    return blocks


def make_input(args: argparse.Namespace, n: int, device: torch.device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, n, args.width, generator=gen)
    return x.to(device, DTYPES[args.dtype]).requires_grad_(True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(block: nn.Module, x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """One forward + backward with ``loss = output.sum()``; grads are reset (set to None)."""
    block.zero_grad(set_to_none=True)
    x.grad = None
    out = block(x, num_frames)
    out.sum().backward()
    return out.detach()


def attention_gflop(batch: int, n: int, width: int) -> float:
    """Dense attention matmuls of one forward: Q·Kᵀ and A·V, 2·B·N²·D FLOPs each."""
    return 4 * batch * n * n * width / 1e9


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        try:
            t, l = (int(v) for v in item.lower().strip().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"bad size {item!r}; expected TxL pairs like 8x50,8x197"
            ) from None
        if t < 1 or l < 1:
            raise argparse.ArgumentTypeError(f"bad size {item!r}; T and L must be >= 1")
        sizes.append((t, l))
    return sizes


# --------------------------------------------------------------------------- checks, timing
def verify(blocks: dict[str, nn.Module], x: torch.Tensor, num_frames: int,
           dtype: torch.dtype) -> tuple[dict[str, float], bool]:
    """Run both blocks once (fwd+bwd) on the same input; compare outputs and gradients."""
    results = {}
    for name, block in blocks.items():
        out = train_step(block, x, num_frames)
        grads = {k: p.grad.detach().clone() for k, p in block.named_parameters()}
        results[name] = (out, x.grad.detach().clone(), grads)
    (out_o, gx_o, g_o), (out_n, gx_n, g_n) = results["ours"], results["naive"]
    out_diff = (out_o.float() - out_n.float()).abs().max().item()
    gx_diff = (gx_o.float() - gx_n.float()).abs().max().item()
    grad_rel = max(
        ((g_o[k].float() - g_n[k].float()).abs().max()
         / g_o[k].float().abs().max().clamp_min(1e-12)).item()
        for k in g_o
    )
    ok = out_diff <= OUT_TOL[dtype] and (dtype != torch.float32 or grad_rel <= GRAD_REL_TOL)
    return {"out": out_diff, "dx": gx_diff, "dparam_rel": grad_rel}, ok


def time_blocks(blocks: dict[str, nn.Module], x: torch.Tensor, num_frames: int,
                warmup: int, repeats: int, device: torch.device) -> dict[str, float]:
    """Median ms of forward+backward per block, the blocks interleaved repeat by repeat."""
    for _ in range(warmup):
        for block in blocks.values():
            train_step(block, x, num_frames)
    times: dict[str, list[float]] = {name: [] for name in blocks}
    for _ in range(repeats):
        for name, block in blocks.items():
            sync(device)
            t0 = time.perf_counter()
            train_step(block, x, num_frames)
            sync(device)
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(ts) for name, ts in times.items()}


# --------------------------------------------------------------------------- peak memory
def cuda_peak_mib(block: nn.Module, x: torch.Tensor, num_frames: int,
                  device: torch.device) -> tuple[float, bool, str, float | None]:
    block.zero_grad(set_to_none=True)
    x.grad = None
    gc.collect()
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    train_step(block, x, num_frames)
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20, True, "cuda", None


def proc_status_kib(field: str) -> int:
    """A KiB field of /proc/self/status (``VmRSS``: current RSS, ``VmHWM``: its peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def malloc_trim() -> None:
    """Give freed heap pages back to the OS (glibc), so the baseline RSS does not depend on
    which thread's malloc arena happened to keep setup garbage resident."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def measure_one(args: argparse.Namespace) -> None:
    """Child process: one step of one implementation; print its RSS peak as JSON."""
    device = torch.device("cpu")
    (num_frames, tokens), = args.sizes
    blocks = build_blocks(args, device)
    block = blocks.pop(args._measure_one)
    del blocks
    x = make_input(args, num_frames * tokens, device)
    if args._measure_one == "ours":  # the cached mask is setup, not per-step work
        cached_kronecker_mask(num_frames, tokens, args.mode, device)
    # one tiny step first, so that one-off lazy initialisation (autograd engine, kernels)
    # is not counted; it is small enough not to leave large freed blocks resident
    train_step(block, make_input(args, 2, device), 1)
    block.zero_grad(set_to_none=True)
    gc.collect()
    malloc_trim()
    reset_ok = reset_peak_rss()
    ru_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_before = proc_status_kib("VmRSS")
    train_step(block, x, num_frames)
    ru_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hwm_after = proc_status_kib("VmHWM")
    ru_raised = ru_after > ru_before
    print(json.dumps({
        "method": "VmHWM" if reset_ok else "ru_maxrss",
        "peak_kib": (hwm_after if reset_ok else ru_after) - rss_before,
        "exact": reset_ok or ru_raised,
        "ru_maxrss_delta_kib": ru_after - ru_before if ru_raised else None,
        "rss_before_kib": rss_before,
        "ru_maxrss_before_kib": ru_before,
    }))


def cpu_peak_mib(args: argparse.Namespace, impl: str, num_frames: int,
                 tokens: int) -> tuple[float, bool, str, float | None]:
    cmd = [
        sys.executable, os.path.abspath(__file__), "--_measure-one", impl,
        "--sizes", f"{num_frames}x{tokens}", "--width", str(args.width),
        "--heads", str(args.heads), "--batch", str(args.batch), "--mode", args.mode,
        "--dtype", args.dtype, "--device", "cpu",
    ]
    if args.naive_need_weights:
        cmd.append("--naive-need-weights")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory subprocess failed ({proc.returncode}):\n{proc.stderr}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    ru = r["ru_maxrss_delta_kib"]
    return r["peak_kib"] / 1024, r["exact"], r["method"], None if ru is None else ru / 1024


# --------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Forward+backward time and peak memory of CLAVER's Kronecker-mask "
        "temporal block (SDPA, cached bool mask) vs a naive nn.MultiheadAttention block "
        "(float mask rebuilt per call), identical weights.",
    )
    p.add_argument("--batch", type=int, default=None,
                   help="videos per step (default: 1 on CPU, 8 on CUDA)")
    p.add_argument("--width", type=int, default=None, help="model width (default 768, ViT-B)")
    p.add_argument("--heads", type=int, default=None, help="attention heads (default 12)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed steps per block and size; the median is reported (default 5)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps per block and size after verification (default 1)")
    p.add_argument("--mode", choices=MASK_MODES, default="kmt", help="mask (default kmt)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    p.add_argument("--sizes", type=parse_sizes, default=None,
                   help="comma-separated TxL list (default 8x50,8x197,16x197)")
    p.add_argument("--naive-need-weights", action="store_true",
                   help="call the naive nn.MultiheadAttention with need_weights=True (its "
                   "default), which materialises the (B*heads, N, N) weights")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: width 64, 4 heads, sizes 2x5,4x9, 3 repeats")
    p.add_argument("--_measure-one", dest="_measure_one", choices=IMPLS, default=None,
                   help=argparse.SUPPRESS)
    return p


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    defaults = QUICK_DEFAULTS if args.quick else FULL_DEFAULTS
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.sizes is None:
        args.sizes = list(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    if args.batch is None:
        args.batch = 8 if args.device == "cuda" else 1
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = resolve_args(parser.parse_args(argv))
    if args.width % args.heads:
        parser.error(f"--width {args.width} is not divisible by --heads {args.heads}")
    if min(args.batch, args.repeats) < 1 or args.warmup < 0:
        parser.error("--batch and --repeats must be >= 1 and --warmup >= 0")
    if args._measure_one is not None:
        measure_one(args)
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda was asked for but torch.cuda.is_available() is False")

    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    attn_call = "need_weights=True" if args.naive_need_weights else "need_weights=False"
    print(f"torch {torch.__version__} | device {dev_name} | threads {torch.get_num_threads()} "
          f"| dtype {args.dtype} | batch {args.batch} | width {args.width} / heads "
          f"{args.heads} | mode {args.mode} | warmup {args.warmup} + repeats {args.repeats}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average (1 min) at start: {load:.2f} on {os.cpu_count()} logical CPUs -- "
          "other busy processes distort CPU timings (oversubscribed OpenMP threads)")
    print("ours : KroneckerTemporalBlock, SDPA with a cached bool (N, N) mask")
    print(f"naive: nn.MultiheadAttention(batch_first=True, {attn_call}) with a float "
          "0/-inf mask rebuilt by torch.kron on every call; same pre-LN block and weights")
    if device.type == "cuda":
        mem_method = ("torch.cuda.max_memory_allocated after reset_peak_memory_stats, "
                      "minus memory_allocated before the step")
    else:
        mem_method = ("peak RSS of one step minus VmRSS before it, in one fresh "
                      "subprocess per (implementation, size); the method used is printed "
                      "after the table")
    print(f"peak memory: {mem_method}")
    print()

    rows = []
    for num_frames, tokens in args.sizes:
        n = num_frames * tokens
        blocks = build_blocks(args, device)
        x = make_input(args, n, device)
        diffs, ok = verify(blocks, x, num_frames, dtype)
        print(f"check T={num_frames} L={tokens}: max|out diff| {diffs['out']:.2e} "
              f"(tol {OUT_TOL[dtype]:g}), max|dx diff| {diffs['dx']:.2e}, "
              f"max rel param-grad diff {diffs['dparam_rel']:.2e}", flush=True)
        if not ok:
            print("ERROR: the two blocks disagree; not comparing different computations.",
                  file=sys.stderr)
            return 1
        ms = time_blocks(blocks, x, num_frames, args.warmup, args.repeats, device)
        mem = {}
        for impl in IMPLS:
            if device.type == "cuda":
                mem[impl] = cuda_peak_mib(blocks[impl], x, num_frames, device)
            else:
                mem[impl] = cpu_peak_mib(args, impl, num_frames, tokens)
        rows.append((num_frames, tokens, n, attention_gflop(args.batch, n, args.width),
                     ms, mem))
        del blocks, x
        gc.collect()

    print()
    header = (f"{'T':>3} {'L':>4} {'tokens':>6} {'attn GFLOP':>10} {'ours ms':>9} "
              f"{'naive ms':>9} {'speed':>6} {'ours MiB':>9} {'naive MiB':>10} {'mem':>6}")
    print(header)
    print("-" * len(header))

    def fmt_mem(value: tuple[float, bool, str, float | None], width: int) -> str:
        mib, exact = value[:2]
        return f"{'' if exact else '<='}{mib:.1f}".rjust(width)

    for num_frames, tokens, n, gflop, ms, mem in rows:
        speed = ms["naive"] / ms["ours"]
        mem_ratio = mem["naive"][0] / mem["ours"][0] if mem["ours"][0] > 0 else float("nan")
        print(f"{num_frames:>3} {tokens:>4} {n:>6} {gflop:>10.2f} {ms['ours']:>9.1f} "
              f"{ms['naive']:>9.1f} {speed:>5.2f}x {fmt_mem(mem['ours'], 9)} "
              f"{fmt_mem(mem['naive'], 10)} {mem_ratio:>5.2f}x")
    print()
    print("speed = naive ms / ours ms, mem = naive MiB / ours MiB (> 1: ours is better); "
          "attn GFLOP = 4*B*N^2*D for one forward (backward ~2x).")
    methods = sorted({m[2] for *_, mem in rows for m in mem.values()})
    describe = {
        "cuda": "torch.cuda.max_memory_allocated after reset_peak_memory_stats",
        "VmHWM": "VmHWM after resetting it via /proc/self/clear_refs (ru_maxrss is inherited "
                 "from the parent across fork+exec, so it is only a cross-check)",
        "ru_maxrss": "ru_maxrss (clear_refs not writable; '<=' = upper bound)",
    }
    print("peak memory method used: " + "; ".join(describe[m] for m in methods))
    if "VmHWM" in methods:
        cross = []
        for num_frames, tokens, *_, mem in rows:
            for impl in IMPLS:
                ru = mem[impl][3]
                cross.append(f"{impl} {num_frames}x{tokens} "
                             + ("-" if ru is None else f"{ru:.1f}"))
        print("cross-check, ru_maxrss increase in the child (MiB; '-' = not raised): "
              + ", ".join(cross))
    return 0


if __name__ == "__main__":
    sys.exit(main())
