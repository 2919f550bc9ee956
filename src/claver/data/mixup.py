"""Batch-level mixup / cutmix for videos, and label smoothing, producing soft targets."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from claver.data.transforms import _rand, _randint

Tensor = torch.Tensor


def smooth_one_hot(labels: Tensor, num_classes: int, smoothing: float = 0.0) -> Tensor:
    """Smoothed targets ``(B, num_classes)`` float, each row summing to 1.

    ``labels`` is ``(B,)`` class ids (hard labels) or ``(B, num_classes)`` multi-hot / soft
    rows, which are first normalised to sum 1. Then ``(1 - smoothing) * y + smoothing / C``:
    for a hard label, ``on = 1 - smoothing + smoothing / C`` and ``off = smoothing / C``.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    if labels.dim() == 1:
        if labels.is_floating_point():
            raise TypeError("hard labels must be integer class ids")
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"labels outside [0, {num_classes}): {labels.tolist()}")
        y = F.one_hot(labels.long(), num_classes).float()
    elif labels.dim() == 2 and labels.shape[1] == num_classes:
        y = labels.float()
        total = y.sum(dim=1, keepdim=True)
        if (y < 0).any() or (total <= 0).any():
            raise ValueError("multi-hot rows must be non-negative with at least one positive")
        y = y / total
    else:
        raise ValueError(f"labels must be (B,) or (B, {num_classes}), got {tuple(labels.shape)}")
    return y * (1.0 - smoothing) + smoothing / num_classes


def _beta(alpha: float, generator: torch.Generator | None) -> float:
    """One Beta(alpha, alpha) draw, reproducible from the torch generator."""
    seed = int(torch.randint(2**62, (), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def mixup_cutmix(
    videos: Tensor, labels: Tensor, num_classes: int, *, mixup_alpha: float = 0.8,
    cutmix_alpha: float = 1.0, switch_prob: float = 0.5, label_smoothing: float = 0.1,
    prob: float = 1.0, generator: torch.Generator | None = None,
    partner: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Video-level mixup / cutmix with soft targets (X-CLIP / CLAVER ``CutmixMixupBlending``).

    With probability ``prob`` each sample ``i`` is mixed with sample ``p[i]`` of a random
    permutation ``p`` of the batch (``torch.randperm(B)``, as the official blending code; a
    sample may draw itself) using one ``lam`` for the whole batch: cutmix
    (``lam ~ Beta(cutmix_alpha)``) with probability ``switch_prob`` when both alphas are > 0,
    else mixup (``lam ~ Beta(mixup_alpha)``); an alpha of 0 disables that kind.

    - mixup: ``x = lam * x + (1 - lam) * x[p]``.
    - cutmix: a box of ``int(H sqrt(1 - lam)) x int(W sqrt(1 - lam))`` around a uniform centre,
      clipped to the frame, copied from ``x[p]`` into **every frame** of each clip; ``lam`` is
      then corrected to ``1 - box_area / (H W)``.

    Targets: ``lam * s(y) + (1 - lam) * s(y[p])`` with ``s`` = :func:`smooth_one_hot`. When
    no mixing happens (``lam = 1``) the targets are the smoothed one-hots, so hard labels
    always work. The inputs are not modified. Every draw comes from ``generator``.

    Args:
        videos: float ``(B, T, C, H, W)`` (any layout with H, W last).
        labels: ``(B,)`` class ids or ``(B, num_classes)`` multi-hot.
        partner: optional ``(B,)`` int64 pairing to use instead of the random permutation
            (e.g. ``arange(B).flip(0)`` pairs each sample with its mirror).

    Returns:
        ``(videos, targets)``: same shape as the input, and float ``(B, num_classes)``.
    """
    if not videos.is_floating_point():
        raise TypeError(f"mixup expects float videos, got {videos.dtype}")
    if labels.shape[0] != videos.shape[0]:
        raise ValueError(f"{videos.shape[0]} videos but {labels.shape[0]} labels")
    targets = smooth_one_hot(labels, num_classes, label_smoothing)
    lam, use_cutmix = 1.0, False
    if (mixup_alpha > 0 or cutmix_alpha > 0) and _rand(generator) < prob:
        if mixup_alpha > 0 and cutmix_alpha > 0:
            use_cutmix = _rand(generator) < switch_prob
        else:
            use_cutmix = cutmix_alpha > 0
        lam = _beta(cutmix_alpha if use_cutmix else mixup_alpha, generator)
    if lam >= 1.0:
        return videos, targets
    b = videos.shape[0]
    if partner is None:
        partner = torch.randperm(b, generator=generator)
    elif partner.shape != (b,):
        raise ValueError(f"partner must be ({b},) sample indices, got {tuple(partner.shape)}")
    partner = partner.to(videos.device)
    flipped = videos[partner]
    if use_cutmix:
        h, w = videos.shape[-2:]
        cut = math.sqrt(1.0 - lam)
        cut_h, cut_w = int(h * cut), int(w * cut)
        cy, cx = _randint(h, generator), _randint(w, generator)
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
        videos = videos.clone()
        videos[..., y0:y1, x0:x1] = flipped[..., y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
    else:
        videos = videos * lam + flipped * (1.0 - lam)
    return videos, targets * lam + targets[partner.to(targets.device)] * (1.0 - lam)
