"""Evaluation: text rows averaged as in the paper, views summed, every video scored once.

For each video: every view (clips x crops) is encoded; for every text row r (templates and
interpretive descriptions) the class probabilities ``softmax_c(exp(s) v . t_rc)`` are
computed and averaged over rows; view scores are summed. Videos that could not be read are
counted as skipped (with reasons), never scored and never replaced.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from claver.data.dataset import LoadReport
from claver.engine.distributed import all_gather_objects
from claver.prompts.rows import mean_row_probabilities


@dataclass
class EvalResult:
    top1: float
    top5: float
    mean_class_acc: float
    listed: int
    scored: int
    skipped: list[str]
    predictions: list[dict[str, Any]] = field(default_factory=list)  # per video, by index
    confusion: torch.Tensor | None = None  # (C, C) counts, rows = true class
    list_file: str | None = None  # the video list scored (None: not a listed source)
    source: str = ""  # the source, in words (folder root / tar archive and list)

    def summary(self) -> str:
        return (f"top-1 {self.top1:.2%}  top-5 {self.top5:.2%}  mean class acc "
                f"{self.mean_class_acc:.2%}  (videos listed {self.listed}, scored "
                f"{self.scored}, skipped {len(self.skipped)})")


def amp_context(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def encode_text_rows(model: Any, tokens: torch.Tensor, device: torch.device,
                     chunk: int = 512) -> torch.Tensor:
    """Text tokens (R, C, ctx) -> normalised features (R, C, E), encoded in chunks."""
    flat = tokens.reshape(-1, tokens.shape[-1])
    feats = torch.cat([model.encode_text(flat[i:i + chunk].to(device)).float()
                       for i in range(0, len(flat), chunk)])
    return feats.view(*tokens.shape[:2], -1)


@torch.no_grad()
def video_scores(model: Any, video: torch.Tensor, text_feats: torch.Tensor, *,
                 logit_scale: float | None = None) -> torch.Tensor:
    """Videos (B, [V,] T, 3, S, S) -> class scores (B, C): per-row softmax averaged over
    rows, summed over views. ``logit_scale``: None or 0 = the model's ``exp(logit_scale)``;
    > 0 = this fixed scale (ActionCLIP's test: 100)."""
    views = video.shape[1] if video.dim() == 6 else 1
    flat = video.flatten(0, 1) if video.dim() == 6 else video
    v = model.encode_video(flat).float()  # (B*V, E)
    if logit_scale is not None and not logit_scale >= 0:
        raise ValueError(f"logit_scale must be >= 0 (0: the model's), got {logit_scale!r}")
    scale = logit_scale if logit_scale else model.logit_scale.exp().float()
    logits = scale * torch.einsum("ne,rce->nrc", v, text_feats)
    probs = mean_row_probabilities(logits)
    return probs.view(-1, views, probs.shape[-1]).sum(1)


def evaluate(model: Any, loader: Any, text_tokens: torch.Tensor, *, device: torch.device,
             amp: str = "none", class_names: list[str] | None = None,
             progress: Any = None, logit_scale: float | None = None) -> EvalResult:
    """Score every video of ``loader`` (an eval loader: no drop_last, sharded per rank).
    ``logit_scale``: see :func:`video_scores` (``TEST.LOGIT_SCALE``)."""
    raw = getattr(model, "module", model)
    was_training = raw.training
    raw.eval()
    report = LoadReport(len(loader.dataset))
    records: list[dict[str, Any]] = []
    with amp_context(device, amp):
        text_feats = encode_text_rows(raw, text_tokens, device)
        for batch in loader:
            report.update(batch)
            valid = batch["valid"]
            if valid.any():
                scores = video_scores(raw, batch["video"][valid].to(device), text_feats,
                                      logit_scale=logit_scale).cpu()
                for idx, label, s in zip(batch["index"][valid].tolist(),
                                         batch["label"][valid], scores, strict=True):
                    records.append({"index": idx, "label": label.tolist(), "scores": s})
            if progress is not None:
                progress(len(batch["index"]))
    raw.train(was_training)
    gathered = [r for part in all_gather_objects(records) for r in part]
    failures = [f for part in all_gather_objects(report.failures) for f in part]
    source = getattr(loader.dataset, "source", None)
    result = summarize(gathered, report.listed, failures, text_tokens.shape[1], class_names,
                       describe=getattr(source, "describe", None))
    list_file = getattr(source, "list_file", None)
    result.list_file = None if list_file is None else str(list_file)
    result.source = repr(source) if source is not None else ""
    return result


def summarize(records: list[dict[str, Any]], listed: int, failures: list[str],
              num_classes: int, class_names: list[str] | None = None,
              describe: Callable[[int], str] | None = None) -> EvalResult:
    """Metrics from per-video score records (single-label: ``label`` is an int).
    ``describe(index)`` names each video in the predictions (its path as the source gives
    it, e.g. ``source.describe``)."""
    records = sorted(records, key=lambda r: r["index"])
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    top1 = top5 = 0
    predictions = []
    for r in records:
        scores, label = r["scores"], r["label"]
        k = min(5, num_classes)
        top = scores.topk(k).indices.tolist()
        true = label if isinstance(label, int) else int(torch.tensor(label).argmax())
        top1 += top[0] == true
        top5 += true in top
        confusion[true, top[0]] += 1
        name = (lambda c: class_names[c]) if class_names else str
        video = {"video": describe(r["index"])} if describe is not None else {}
        predictions.append({"index": r["index"], **video, "label": true, "label_name": name(true),
                            "top5": top, "top5_names": [name(c) for c in top],
                            "top5_scores": [round(float(scores[c]), 6) for c in top]})
    n = max(1, len(records))
    per_class = confusion.diag().float() / confusion.sum(1).clamp(min=1).float()
    present = confusion.sum(1) > 0
    mean_class = per_class[present].mean().item() if present.any() else 0.0
    return EvalResult(top1 / n, top5 / n, mean_class, listed, len(records), failures,
                      predictions, confusion)
