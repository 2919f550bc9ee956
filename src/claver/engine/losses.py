"""Losses: CLAVER's soft-target cross-entropy over text rows, ActionCLIP's symmetric KL."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum(targets * log_softmax(logits))``.

    ``logits`` (B, C) or (B, K, C) with K text rows (each row is a classifier; the loss is
    averaged over rows); ``targets`` (B, C) soft (mixup / label smoothing) or hard ids (B,).
    """
    if targets.dim() == 1:
        targets = F.one_hot(targets.long(), logits.shape[-1]).to(logits.dtype)
    if logits.dim() == 3:
        targets = targets[:, None, :].expand_as(logits)
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


def actionclip_targets(labels: torch.Tensor, sharpness: float = 10.0) -> torch.Tensor:
    """ActionCLIP's in-batch targets: ``softmax(sharpness * same_label)`` over each row.

    ``labels`` (B,) -> (B, B) float; ``same_label[i, j]`` is 1 where samples i and j share a
    class. The original (``gen_label`` + ``KLLoss``) uses sharpness 10, so a positive gets
    ``e^10 / (k e^10 + B - k)`` (k positives in the row) and every negative ``1 / (...)``.
    """
    same = (labels[:, None] == labels[None, :]).float()
    return F.softmax(sharpness * same, dim=1)


def actionclip_loss(video_emb: torch.Tensor, text_emb: torch.Tensor, labels: torch.Tensor,
                    logit_scale: torch.Tensor) -> torch.Tensor:
    """ActionCLIP's in-batch video<->text loss with multi-positive targets.

    ``video_emb`` (B, E) and ``text_emb`` (B, E) L2-normalised, text i being a prompt of
    sample i's class; ``labels`` (B,). Logits ``exp(logit_scale) v . t`` (B, B); targets
    :func:`actionclip_targets` (``softmax(10 * same_label)``, as the original); KL divergence
    (summed over the row, averaged over the batch) for video->text and text->video, averaged.
    """
    scale = logit_scale.exp()
    logits_v = scale * video_emb @ text_emb.t()  # (B, B)
    target = actionclip_targets(labels)  # symmetric, so it serves both directions
    kl_v = F.kl_div(F.log_softmax(logits_v.float(), dim=1), target, reduction="batchmean")
    kl_t = F.kl_div(F.log_softmax(logits_v.t().float(), dim=1), target, reduction="batchmean")
    return (kl_v + kl_t) / 2
