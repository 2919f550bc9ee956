"""Does a faster mode give the same answers as fp32 eager? The test a default must pass.

:func:`agreement` compares label probabilities (N, C) of a candidate mode with the fp32
eager reference on the same N videos: the top-1 label must be the same on every video whose
reference top-2 margin (best minus second-best probability) exceeds ``margin`` (1 %), and
every probability must be within ``atol`` (0.01) of the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MARGIN = 0.01
ATOL = 0.01


@dataclass(frozen=True)
class Agreement:
    """``checked``: videos whose reference margin exceeds the threshold; ``same_top1``: of
    those, how many keep their top-1; ``max_abs``: largest probability difference."""

    videos: int
    checked: int
    same_top1: int
    max_abs: float
    margin: float = MARGIN
    atol: float = ATOL

    @property
    def ok(self) -> bool:
        return self.same_top1 == self.checked and self.max_abs <= self.atol

    def __str__(self) -> str:
        return (f"top-1 {self.same_top1}/{self.checked} (margin > {self.margin:.0%}), "
                f"max |dp| {self.max_abs:.4f} -> {'agrees' if self.ok else 'DISAGREES'}")


def agreement(reference: torch.Tensor, candidate: torch.Tensor, *, margin: float = MARGIN,
              atol: float = ATOL) -> Agreement:
    """Compare probabilities ``candidate`` (N, C) with ``reference`` (N, C) (fp32 eager)."""
    if reference.shape != candidate.shape or reference.dim() != 2:
        raise ValueError(f"expected two (N, C) probability tensors of the same shape, got "
                         f"{tuple(reference.shape)} and {tuple(candidate.shape)}")
    ref, cand = reference.double(), candidate.double()
    n, c = ref.shape
    if n == 0:
        return Agreement(0, 0, 0, 0.0, margin, atol)
    if c > 1:
        top2 = ref.topk(2, dim=-1).values
        confident = (top2[:, 0] - top2[:, 1]) > margin
    else:
        confident = torch.ones(n, dtype=torch.bool)
    same = ref.argmax(-1) == cand.argmax(-1)
    return Agreement(n, int(confident.sum()), int((same & confident).sum()),
                     float((ref - cand).abs().max()), margin, atol)
