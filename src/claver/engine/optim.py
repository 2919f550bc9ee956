"""AdamW with the papers' parameter groups and a per-iteration cosine schedule with warm-up.

Groups: parameters that are new relative to CLIP (CLAVER's temporal embedding and temporal
blocks, ActionCLIP's fusion head) get ``NEW_PARAM_LR_MULT`` x the base learning rate;
1-D parameters (norms, biases), embeddings of positions and the logit scale get no weight
decay. (The reference code passed a string where a tuple was meant, so no CLIP parameter
trained; here every parameter with ``requires_grad`` is in exactly one group, and a test
checks it.)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from claver.models.factory import NEW_PARTS

NO_DECAY_NAMES = ("positional_embedding", "temporal_embedding", "class_embedding",
                  "frame_position_embeddings", "pos_embed", "cls_token", "logit_scale",
                  "token_embedding")


def param_groups(model: nn.Module, lr: float, weight_decay: float,
                 new_lr_mult: float) -> list[dict]:
    """Four groups: {CLIP, new} x {decay, no decay}; empty groups are dropped."""
    groups: dict[tuple[bool, bool], list] = {}
    names: dict[tuple[bool, bool], list[str]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        new = name.startswith(NEW_PARTS)
        no_decay = p.ndim <= 1 or name.endswith(".bias") or any(
            n in name for n in NO_DECAY_NAMES)
        groups.setdefault((new, no_decay), []).append(p)
        names.setdefault((new, no_decay), []).append(name)
    out = []
    for (new, no_decay), params in sorted(groups.items()):
        out.append({"params": params, "names": names[(new, no_decay)],
                    "lr": lr * (new_lr_mult if new else 1.0), "lr_mult": new_lr_mult if new
                    else 1.0, "weight_decay": 0.0 if no_decay else weight_decay,
                    "group": f"{'new' if new else 'clip'}/{'no_decay' if no_decay else 'decay'}"})
    return out


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, new_lr_mult: float,
                    betas: tuple[float, float] = (0.9, 0.98), eps: float = 1e-8
                    ) -> torch.optim.AdamW:
    groups = param_groups(model, lr, weight_decay, new_lr_mult)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


class WarmupCosine:
    """Per-iteration learning rate: linear warm-up from 0, then cosine down to ``min_ratio``.

    ``factor(step)`` multiplies each group's base lr (``lr_mult`` x base). Stateless apart
    from the step, so resuming only needs the step number.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, total_steps: int,
                 warmup_steps: int, min_ratio: float = 0.01) -> None:
        self.optimizer, self.base_lr = optimizer, base_lr
        self.total, self.warmup, self.min_ratio = max(1, total_steps), warmup_steps, min_ratio

    def factor(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def apply(self, step: int) -> float:
        """Set every group's lr for optimizer step ``step``; returns the base-group lr."""
        f = self.factor(step)
        for group in self.optimizer.param_groups:
            group["lr"] = self.base_lr * group.get("lr_mult", 1.0) * f
        return self.base_lr * f
