"""AdamW with the papers' parameter groups and a per-iteration cosine schedule with warm-up.

Groups: parameters that are new relative to CLIP (CLAVER's temporal embedding and temporal
blocks, ActionCLIP's fusion head) get ``NEW_PARAM_LR_MULT`` x the base learning rate.
Weight decay follows the official CLAVER / X-CLIP rule by default (``no_decay="official"``):
no decay for 1-D parameters (norms, biases, ``class_embedding``), names ending in ``.bias`` and
names containing ``positional_embedding``; everything else decays, including
``visual.temporal_embedding`` (3-D) and ``logit_scale`` (0-D). ``no_decay="none"`` decays
every parameter (ActionCLIP). (The reference code passed a string where a tuple was meant, so
no CLIP parameter trained; here every parameter with ``requires_grad`` is in exactly one
group, and a test checks it.)

Schedule (:class:`WarmupCosine`): timm's ``CosineLRScheduler(t_initial=total,
lr_min=LR * MIN_LR_RATIO, warmup_lr_init=0, warmup_t=warmup, cycle_limit=1,
t_in_epochs=False)`` as the official code builds it, or ActionCLIP's warm-up-then-cosine
with ``warmup_prefix=True``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from claver.models.factory import NEW_PARTS

NoDecay = Literal["official", "none"]
NO_DECAY_RULES = ("official", "none")
# official CLAVER: CLAVER.no_weight_decay_keywords() == {'positional_embedding'}
NO_DECAY_KEYWORDS = ("positional_embedding",)


def is_no_decay(name: str, param: torch.Tensor, rule: NoDecay = "official") -> bool:
    """True when parameter ``name`` gets no weight decay under ``rule``.

    ``"official"`` (X-CLIP / CLAVER ``set_weight_decay``): ``param.ndim == 1``, a name ending
    in ``.bias``, or a name containing ``positional_embedding``. ``"none"``: never.
    """
    if rule not in NO_DECAY_RULES:
        raise ValueError(f"no_decay must be one of {NO_DECAY_RULES}, got {rule!r}")
    if rule == "none":
        return False
    return param.ndim == 1 or name.endswith(".bias") or any(
        k in name for k in NO_DECAY_KEYWORDS)


def param_groups(model: nn.Module, lr: float, weight_decay: float, new_lr_mult: float,
                 *, no_decay: NoDecay = "official") -> list[dict]:
    """Four groups: {CLIP, new} x {decay, no decay}; empty groups are dropped. Each group
    records its parameter ``names``, ``lr_mult`` and a ``group`` label."""
    groups: dict[tuple[bool, bool], list] = {}
    names: dict[tuple[bool, bool], list[str]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        new = name.startswith(NEW_PARTS)
        skip = is_no_decay(name, p, no_decay)
        groups.setdefault((new, skip), []).append(p)
        names.setdefault((new, skip), []).append(name)
    out = []
    for (new, skip), params in sorted(groups.items()):
        mult = new_lr_mult if new else 1.0
        out.append({"params": params, "names": names[(new, skip)], "lr": lr * mult,
                    "lr_mult": mult, "weight_decay": 0.0 if skip else weight_decay,
                    "group": f"{'new' if new else 'clip'}/{'no_decay' if skip else 'decay'}"})
    return out


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, new_lr_mult: float,
                    betas: tuple[float, float] = (0.9, 0.98), eps: float = 1e-8, *,
                    no_decay: NoDecay = "official") -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`."""
    groups = param_groups(model, lr, weight_decay, new_lr_mult, no_decay=no_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


class WarmupCosine:
    """Per-iteration learning rate of optimizer step ``step`` (0-based), for a group whose
    peak is ``peak = base_lr * lr_mult``:

    - ``warmup_prefix=False`` (official CLAVER / X-CLIP: timm ``CosineLRScheduler`` with
      ``t_initial=total_steps, lr_min=base_lr * min_ratio, warmup_lr_init=0,
      warmup_t=warmup_steps, cycle_limit=1``): ``step < warmup``: ``peak * step / warmup``
      (0 at step 0); then ``lr_min + (peak - lr_min) / 2 * (1 + cos(pi * step / total))``,
      the cosine running over the *whole* run (so it starts below the peak), and ``lr_min``
      from ``total`` on. ``lr_min`` is one absolute floor for every group (timm scales each
      group's own peak but not the floor).
    - ``warmup_prefix=True`` (ActionCLIP's ``WarmupCosineAnnealingLR``): the same warm-up,
      then ``peak * (r + (1 - r) / 2 * (1 + cos(pi * p)))`` with
      ``p = min(1, (step - warmup) / (total - warmup))`` and ``r = min_ratio``: the cosine
      starts at the peak after the warm-up and the floor is per group.

    Stateless apart from the step, so resuming only needs the step number.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, total_steps: int,
                 warmup_steps: int, min_ratio: float = 0.01, *,
                 warmup_prefix: bool = False) -> None:
        if warmup_steps < 0 or not 0.0 <= min_ratio <= 1.0:
            raise ValueError(f"warmup_steps must be >= 0 and min_ratio in [0, 1], got "
                             f"{warmup_steps} and {min_ratio}")
        self.optimizer, self.base_lr = optimizer, base_lr
        self.total, self.warmup, self.min_ratio = max(1, total_steps), warmup_steps, min_ratio
        self.warmup_prefix = warmup_prefix

    def lr(self, step: int, lr_mult: float = 1.0) -> float:
        """The learning rate of a group with ``lr_mult`` at optimizer step ``step``."""
        peak = self.base_lr * lr_mult
        if step < self.warmup:
            return peak * step / self.warmup
        if self.warmup_prefix:
            progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
            r = self.min_ratio
            return peak * (r + (1 - r) * 0.5 * (1 + math.cos(math.pi * progress)))
        lr_min = self.base_lr * self.min_ratio
        if step >= self.total:
            return lr_min
        return lr_min + (peak - lr_min) * 0.5 * (1 + math.cos(math.pi * step / self.total))

    def factor(self, step: int) -> float:
        """The base group's (``lr_mult`` 1) learning rate over ``base_lr``."""
        return self.lr(step) / self.base_lr if self.base_lr else 0.0

    def apply(self, step: int) -> float:
        """Set every group's lr for optimizer step ``step``; returns the base-group lr."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr(step, group.get("lr_mult", 1.0))
        return self.lr(step)
