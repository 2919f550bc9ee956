"""Run outputs: JSONL metrics (+ TensorBoard when installed), evaluation result files, PNGs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import torch

from claver import __version__
from claver.images import write_png


class MetricsLog:
    """Appends one JSON object per record to ``metrics.jsonl``; mirrors scalars to
    TensorBoard (``pip install tensorboard``) when it is importable."""

    def __init__(self, out: str | Path, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = Path(out) / "metrics.jsonl"
        self.tb = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(Path(out) / "tensorboard"))
            except ImportError:  # tensorboard is optional
                self.tb = None

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.tb.add_scalar(f"train/{key}", value, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def code_version() -> str:
    """Package version plus the git commit when running from a checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def confusion_image(confusion: torch.Tensor, cell: int = 0) -> torch.Tensor:
    """Row-normalised confusion matrix as a uint8 (H, W, 3) heat map (white -> dark blue)."""
    c = confusion.shape[0]
    cell = cell or max(1, min(16, 800 // max(c, 1)))
    frac = confusion.float() / confusion.sum(1, keepdim=True).clamp(min=1)
    low, high = torch.tensor([255.0, 255.0, 255.0]), torch.tensor([8.0, 48.0, 107.0])
    img = (low + (high - low) * frac[..., None]).round().to(torch.uint8)  # (C, C, 3)
    return img.repeat_interleave(cell, 0).repeat_interleave(cell, 1)


def _file_record(path: str | Path | None) -> dict[str, Any] | None:
    """``{"path", "sha256"}`` of a file (sha256 None when it cannot be read)."""
    if not path:
        return None
    from claver.weights.download import sha256_file

    try:
        digest: str | None = sha256_file(path)
    except OSError:
        digest = None
    return {"path": str(path), "sha256": digest}


def eval_label_file(cfg: Any, list_file: str | None) -> str:
    """The label file that names the classes of ``list_file``: its ``TEST.SPLITS`` entry
    (``LIST|LABELS``) when it is one of them, else DATA.LABEL_LIST."""
    for split in getattr(cfg.TEST, "SPLITS", None) or []:
        listed, sep, labels = split.partition("|")
        if sep and list_file is not None and listed == list_file:
            return labels
    return cfg.DATA.LABEL_LIST


def text_record(cfg: Any, text_rows: int) -> dict[str, Any]:
    """The text rows an evaluation averaged: templates (as configured) and description
    files (path + sha256); ``rows`` = templates + description rows."""
    from claver.engine import data as engine_data

    templates = engine_data.templates(cfg)
    return {"rows": text_rows, "template_set": cfg.DATA.TEMPLATES, "templates": templates,
            "description_rows": text_rows - len(templates),
            "descriptions": [_file_record(f) for f in cfg.DATA.DESCRIPTIONS]}


def write_eval_outputs(cfg: Any, result: Any, names: list[str], text_rows: int,
                       tag: str, *, list_file: str | None = None, label_file: str | None = None,
                       checkpoint: str | Path | None = None) -> dict[str, Any]:
    """``<OUTPUT>/eval/<tag>.json`` (metrics + protocol), ``<tag>_predictions.jsonl`` (one
    line per scored video, naming it), ``<tag>_confusion.png``; returns the summary dict.
    Only rank 0 writes.

    The protocol names what was scored: ``list`` (``list_file``, else the list the result's
    dataset read, else DATA.VAL_FILE), ``labels`` (``label_file``, else the TEST.SPLITS
    entry of that list, else DATA.LABEL_LIST), ``checkpoint`` (path + sha256; None when the
    model was evaluated in memory during training), ``views`` and ``text`` (see
    :func:`text_record`)."""
    import torch.distributed as dist

    scored = list_file or getattr(result, "list_file", None) or cfg.DATA.VAL_FILE
    labels = label_file or eval_label_file(cfg, scored)
    summary = {
        "top1": result.top1, "top5": result.top5, "mean_class_acc": result.mean_class_acc,
        "protocol": {
            "views": cfg.TEST.NUM_CLIPS * cfg.TEST.NUM_CROPS, "clips": cfg.TEST.NUM_CLIPS,
            "crops": cfg.TEST.NUM_CROPS, "frames": cfg.DATA.NUM_FRAMES,
            "input_size": cfg.DATA.INPUT_SIZE, "text_rows": text_rows,
            "classes": len(names), "list": scored,
            "list_sha256": (_file_record(scored) or {}).get("sha256"),
            "labels": _file_record(labels),
            "source": getattr(result, "source", ""),
            "checkpoint": _file_record(checkpoint), "text": text_record(cfg, text_rows),
            "videos_listed": result.listed, "videos_scored": result.scored,
            "videos_skipped": len(result.skipped), "seed": cfg.SEED,
            "code_version": code_version(), "model": cfg.MODEL.ARCH,
        },
        "skipped": result.skipped,
    }
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return summary
    out = Path(cfg.OUTPUT) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{tag}.json").write_text(json.dumps(summary, indent=2))
    with open(out / f"{tag}_predictions.jsonl", "w") as f:
        for p in result.predictions:
            f.write(json.dumps(p) + "\n")
    if result.confusion is not None:
        write_png(out / f"{tag}_confusion.png", confusion_image(result.confusion))
    return summary
