"""Kronecker-mask temporal attention (CLAVER's KMT and KMCT).

Tokens of a video are one frame-major sequence of ``T·L`` tokens (frame ``t``, token ``l``
at position ``t·L + l``). The masks, as booleans where True means *may attend*:

- ``kmt``:  (t, l) -> (t', l')  iff  t' != t  or  l' == l
  (itself plus every token of every other frame);
- ``kmct``: (t, l) -> (t', l')  iff  (t', l') == (t, l)  or  t' < t
  (itself plus every token of earlier frames; frame 0 sees only itself).

Equivalently the blocked entries are ``kron(I_T, 1 - I_L)`` (+ ``kron(triu(1_T, 1), 1_L)``
for KMCT). Every row keeps its diagonal, so no row is ever fully masked.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from claver.models.clip import Attention, LayerNorm, clip_mlp, init_blocks, run_blocks

MASK_MODES = ("kmt", "kmct")


def kronecker_mask(
    num_frames: int, tokens_per_frame: int, mode: str = "kmt",
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean (T·L, T·L) mask, True where attention is allowed (see the module docstring)."""
    if mode not in MASK_MODES:
        raise ValueError(f"mask mode must be one of {MASK_MODES}, got {mode!r}")
    t, l = int(num_frames), int(tokens_per_frame)
    if t < 1 or l < 1:
        raise ValueError(f"num_frames and tokens_per_frame must be >= 1, got T={t}, L={l}")
    eye_t = torch.eye(t, dtype=torch.bool, device=device)
    eye_l = torch.eye(l, dtype=torch.bool, device=device)
    # same frame and a different token -> blocked
    blocked = torch.kron(eye_t.int(), (~eye_l).int()).bool()
    if mode == "kmct":
        future = torch.ones(t, t, dtype=torch.bool, device=device).triu(1)
        blocked |= torch.kron(future.int(), torch.ones(l, l, dtype=torch.int, device=device)).bool()
    return ~blocked


@functools.lru_cache(maxsize=64)
def _cached_mask(t: int, l: int, mode: str, device: torch.device) -> torch.Tensor:
    return kronecker_mask(t, l, mode, device=device)


def cached_kronecker_mask(t: int, l: int, mode: str, device: torch.device) -> torch.Tensor:
    """:func:`kronecker_mask`, built once per (T, L, mode, device)."""
    return _cached_mask(t, l, mode, torch.device(device))


class KroneckerTemporalBlock(nn.Module):
    """Pre-LN temporal block with a Kronecker mask, CLAVER's official parameter names.

    ``forward(x, num_frames)``: x (B, T·L, D), frame-major -> (B, T·L, D).
    """

    def __init__(self, width: int, heads: int, mode: str = "kmt") -> None:
        super().__init__()
        if mode not in MASK_MODES:
            raise ValueError(f"mask mode must be one of {MASK_MODES}, got {mode!r}")
        self.mode = mode
        self.temporal_attn = Attention(width, heads)
        self.temporal_ln_1 = LayerNorm(width)
        self.temporal_mlp = clip_mlp(width)
        self.temporal_ln_2 = LayerNorm(width)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        b, n, _ = x.shape
        if n % num_frames:
            raise ValueError(
                f"temporal block got {n} tokens, not a multiple of num_frames={num_frames}"
            )
        mask = cached_kronecker_mask(num_frames, n // num_frames, self.mode, x.device)
        x = x + self.temporal_attn(self.temporal_ln_1(x), attn_mask=mask)
        return x + self.temporal_mlp(self.temporal_ln_2(x))


class KroneckerTransformer(nn.Module):
    """A stack of :class:`KroneckerTemporalBlock` (``resblocks.M``)."""

    def __init__(self, width: int, layers: int, heads: int, mode: str = "kmt") -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(
            KroneckerTemporalBlock(width, heads, mode) for _ in range(layers)
        )
        self.grad_checkpointing = False
        init_blocks(self.resblocks, width, layers)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        return run_blocks(self.resblocks, x, self.grad_checkpointing, num_frames)
