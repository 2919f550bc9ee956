"""Run outputs: JSONL metrics (+ TensorBoard when installed), evaluation result files, PNGs."""

from __future__ import annotations

import json
import os
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from claver.fileio import atomic_write_text


class MetricsLog:
    """Appends one JSON object per record to ``metrics.jsonl`` (training records: ``step``,
    ``epoch``, ``loss``, ``lr`` ...; validation records: ``step``, ``epoch``, ``val_top1``,
    ``val_top5``, ``val_mean_class_acc``); mirrors scalars to TensorBoard (``pip install
    tensorboard``) when it is importable.

    ``resume_step``: the run continues from a checkpoint of that step, so the records of
    later steps (written after the checkpoint, by the run that stopped) are dropped first:
    the file never holds a step twice."""

    def __init__(self, out: str | Path, enabled: bool = True,
                 resume_step: int | None = None) -> None:
        self.enabled = enabled
        self.path = Path(out) / "metrics.jsonl"
        self.tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.is_file():
            self._drop_after(resume_step)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(out) / "tensorboard"))
        except ImportError:  # tensorboard is optional
            self.tb = None

    def _drop_after(self, step: int) -> None:
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # a line cut by a kill: dropped
                continue
            if isinstance(record, dict) and record.get("step", 0) <= step:
                kept.append(line + "\n")
        atomic_write_text(self.path, "".join(kept))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    group = "val" if key.startswith("val_") else "train"
                    self.tb.add_scalar(f"{group}/{key.removeprefix('val_')}", value,
                                       record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class BadVideoLog:
    """``OUTPUT/bad_videos.jsonl``: one line per video that failed to load during training,
    written as it happens: ``{"video", "reason", "epoch", "step", "count", "rank"}``
    (``count``: how often this video has failed in this run so far, earlier runs in the same
    folder included). Every rank appends its own lines (one small ``O_APPEND`` write each)."""

    def __init__(self, out: str | Path, rank: int = 0) -> None:
        self.path = Path(out) / "bad_videos.jsonl"
        self.rank = rank
        self.counts: dict[str, int] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    video = json.loads(line)["video"]
                except (ValueError, KeyError, TypeError):
                    continue
                self.counts[video] = self.counts.get(video, 0) + 1

    def write(self, failures: list[Any], epoch: int, step: int) -> None:
        """Record ``failures`` (:class:`~claver.data.dataset.LoadFailure` s or strings)."""
        for failure in failures:
            video = getattr(failure, "video", str(failure))
            reason = getattr(failure, "reason", str(failure))
            self.counts[video] = self.counts.get(video, 0) + 1
            line = json.dumps({"video": video, "reason": reason, "epoch": epoch, "step": step,
                               "count": self.counts[video], "rank": self.rank}) + "\n"
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode("utf-8"))
            finally:
                os.close(fd)


def code_version() -> str:
    """Package version plus the git commit when running from a checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    try:
        release = version("claver")
    except PackageNotFoundError:  # running from a source tree that was never installed
        release = "unknown"
    return f"{release}+{commit}" if commit else release


def write_confusion(summary: dict[str, Any], confusion: torch.Tensor, names: list[str],
                    out: Path, tag: str) -> None:
    """``<tag>_confusion.png`` (class names, colour bar, metrics and protocol in the title;
    the most-confused classes when there are many) and ``<tag>_confusion.csv`` (all counts)."""
    from claver.figures import confusion_figure, confusion_title

    named = names if len(names) == confusion.shape[0] else []  # else: class indices
    confusion_figure(confusion, named, confusion_title(summary), out / f"{tag}_confusion.png",
                     out / f"{tag}_confusion.csv")


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
                       checkpoint: str | Path | None = None, protocol: Any = None
                       ) -> dict[str, Any]:
    """``<OUTPUT>/eval/<tag>.json`` (metrics + protocol), ``<tag>_predictions.jsonl`` (one
    line per scored video, naming it), ``<tag>_confusion.png`` + ``.csv``; returns the summary dict.
    Only rank 0 writes.

    The protocol names what was scored: ``list`` (``list_file``, else the list the result's
    dataset read, else DATA.VAL_FILE), ``labels`` (``label_file``, else the TEST.SPLITS
    entry of that list, else DATA.LABEL_LIST), ``checkpoint`` (path + sha256; None when the
    model was evaluated in memory during training), ``views`` (of ``protocol``: ``cfg.TEST``,
    the default, or ``cfg.VAL``), ``text`` (see :func:`text_record`) and the ``skipped``
    videos with their reasons."""
    import torch.distributed as dist

    scored = list_file or getattr(result, "list_file", None) or cfg.DATA.VAL_FILE
    labels = label_file or eval_label_file(cfg, scored)
    views = protocol or cfg.TEST
    summary = {
        "top1": result.top1, "top5": result.top5, "mean_class_acc": result.mean_class_acc,
        "protocol": {
            "views": views.NUM_CLIPS * views.NUM_CROPS, "clips": views.NUM_CLIPS,
            "crops": views.NUM_CROPS, "frames": cfg.DATA.NUM_FRAMES,
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
        write_confusion(summary, result.confusion, names, out, tag)
    return summary
