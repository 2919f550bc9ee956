"""Figures people read: confusion matrix, training curves, explanations, masks, timelines.

Every figure is drawn with matplotlib's object API on an Agg canvas (``Figure`` +
``FigureCanvasAgg``): no pyplot, no global state, no display needed. PNGs are written through
a temporary file and a rename, so a reader never sees half a picture.

- :func:`confusion_figure`: row-normalised confusion matrix with class names, a colour bar
  and a title (see :func:`confusion_title`); with more than ``max_classes`` classes only the
  most-confused ones, and the full count matrix as CSV.
- :func:`training_curves`: loss, learning rate and validation accuracy from ``metrics.jsonl``.
- :func:`explain_figure`: frames with their times, heat-maps with a colour bar, top-k bars.
- :func:`mask_figure`: a Kronecker attention mask with labelled query/key axes.
- :func:`window_timeline`: per-window probabilities of the top labels of a long video.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from claver.fileio import atomic_write_bytes, atomic_write_text
from claver.images import HEAT_CMAP

__all__ = ["DPI", "confusion_classes", "confusion_figure", "confusion_title", "explain_figure",
           "mask_figure", "read_metrics", "training_curves", "window_timeline"]

DPI = 100  # pixels per inch of every figure: a W x H inch figure is (100 W) x (100 H) pixels
_NAME_CHARS = 28  # class names longer than this are shortened on axes


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    """Render ``fig`` to ``path`` as PNG (temporary file + rename)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return atomic_write_bytes(path, buf.getvalue())


def _short(name: str, limit: int = _NAME_CHARS) -> str:
    return name if len(name) <= limit else name[:limit - 1] + "\u2026"


# ----------------------------------------------------------------------------- confusion

def confusion_classes(confusion: np.ndarray, max_classes: int) -> list[int]:
    """Indices (ascending) of at most ``max_classes`` classes to show: all when there are
    that few, else the classes of the largest off-diagonal row fractions (true class i
    predicted as j), taken pair by pair until ``max_classes`` are chosen."""
    c = confusion.shape[0]
    if c <= max_classes:
        return list(range(c))
    frac = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    np.fill_diagonal(frac, 0)
    chosen: list[int] = []
    for flat in np.argsort(-frac, axis=None, kind="stable"):
        i, j = divmod(int(flat), c)
        if frac[i, j] <= 0:
            break
        for k in (i, j):
            if k not in chosen and len(chosen) < max_classes:
                chosen.append(k)
        if len(chosen) >= max_classes:
            break
    for k in range(c):  # fewer confused classes than places: fill in in class order
        if len(chosen) >= max_classes:
            break
        if k not in chosen:
            chosen.append(k)
    return sorted(chosen)


def confusion_title(summary: Mapping[str, Any]) -> str:
    """Title of an evaluation's confusion figure from its summary (``write_eval_outputs``):
    top-1 / top-5 / mean-class accuracy, then the protocol (views, frames, size, list)."""
    def pct(key: str) -> str:
        value = summary.get(key)
        return f"{100 * value:.1f}%" if isinstance(value, (int, float)) else "n/a"

    lines = [f"top-1 {pct('top1')}   top-5 {pct('top5')}   mean class {pct('mean_class_acc')}"]
    p = summary.get("protocol") or {}
    if p:
        lines.append(f"{p.get('views', '?')} view(s) ({p.get('clips', '?')} clip x "
                     f"{p.get('crops', '?')} crop), {p.get('frames', '?')} frames, "
                     f"{p.get('input_size', '?')} px, {p.get('text_rows', '?')} text row(s); "
                     f"{p.get('videos_scored', '?')} of {p.get('videos_listed', '?')} videos")
        if p.get("list"):
            lines.append(f"list {_short(Path(str(p['list'])).name, 60)}, model "
                         f"{p.get('model', '?')}")
    return "\n".join(lines)


def _write_confusion_csv(counts: np.ndarray, names: Sequence[str], path: str | Path) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["true \\ predicted", *names])
    for name, row in zip(names, counts.tolist(), strict=True):
        writer.writerow([name, *row])
    return atomic_write_text(path, buf.getvalue())


def confusion_figure(confusion: torch.Tensor | np.ndarray, class_names: Sequence[str],
                     title: str, png_path: str | Path, csv_path: str | Path | None = None,
                     max_classes: int = 40) -> dict[str, Path]:
    """Row-normalised confusion matrix (rows: true class, columns: predicted) as a PNG.

    ``confusion``: (C, C) counts. Classes beyond ``max_classes`` are left out of the picture
    (:func:`confusion_classes` keeps the most-confused); ``csv_path``: the full (C, C) count
    matrix with the class names. Returns ``{"png": path[, "csv": path]}``.
    """
    counts = np.asarray(confusion.cpu() if isinstance(confusion, torch.Tensor) else confusion)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"{png_path}: confusion matrix must be square (C, C), got "
                         f"{counts.shape}")
    c = counts.shape[0]
    names = [str(n) for n in class_names] if class_names else [str(i) for i in range(c)]
    if len(names) != c:
        raise ValueError(f"{png_path}: {len(names)} class names for a {c}x{c} confusion "
                         "matrix; pass one name per class")
    out: dict[str, Path] = {}
    if csv_path is not None:
        out["csv"] = _write_confusion_csv(counts, names, csv_path)
    shown = confusion_classes(counts, max_classes)
    frac = counts / np.maximum(counts.sum(1, keepdims=True), 1)  # of the true class's videos
    sub = frac[np.ix_(shown, shown)]
    k = len(shown)
    if k < c:
        where = f" (full matrix: {Path(csv_path).name})" if csv_path is not None else ""
        title = f"{title}\nthe {k} most-confused of {c} classes{where}"
    side = min(40.0, max(6.0, 0.26 * k + 3.5))
    fig = _figure(side + 1.2, side + 0.25 * title.count("\n"))
    ax = fig.add_subplot()
    image = ax.imshow(sub, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    labels = [_short(names[i]) for i in shown]
    size = max(4.0, min(10.0, 360 / max(k, 1)))
    ax.set_xticks(range(k), labels, rotation=90, fontsize=size)
    ax.set_yticks(range(k), labels, fontsize=size)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    if k <= 20:  # cells: percent of the true class's videos
        for i in range(k):
            for j in range(k):
                if sub[i, j] >= 0.005:
                    ax.text(j, i, f"{100 * sub[i, j]:.0f}", ha="center", va="center",
                            fontsize=max(5.0, size - 1),
                            color="white" if sub[i, j] > 0.5 else "black")
    bar = fig.colorbar(image, ax=ax, shrink=0.8)
    bar.set_label("share of the true class's videos (numbers in cells: %)")
    out["png"] = _save(fig, png_path)
    return out


# ------------------------------------------------------------------------------- curves

def read_metrics(metrics_jsonl: str | Path) -> tuple[list[dict], list[dict]]:
    """Training and validation records of a ``metrics.jsonl`` (validation: any ``val_*``
    key). Missing files give nothing; lines that are not JSON objects are skipped."""
    train: list[dict] = []
    val: list[dict] = []
    try:
        with open(metrics_jsonl, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a half-written last line, or noise
                if not isinstance(record, dict) or not _number(record.get("step")):
                    continue
                (val if any(k.startswith("val_") for k in record) else train).append(record)
    except (FileNotFoundError, IsADirectoryError):
        pass
    return train, val


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


def _series(records: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    pairs = [(r["step"], r[key]) for r in records if _number(r.get(key))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _epoch_lines(ax: Any, records: Sequence[dict]) -> None:
    """Faint vertical lines where the epoch changes (first step of each new epoch)."""
    last = None
    for r in records:
        epoch = r.get("epoch")
        if _number(epoch) and last is not None and epoch != last:
            ax.axvline(r["step"], color="0.85", linewidth=0.8, zorder=0)
        last = epoch if _number(epoch) else last


def training_curves(metrics_jsonl: str | Path, png_path: str | Path) -> Path | None:
    """Loss, learning rate and validation top-1/top-5/mean-class accuracy against step.

    Reads ``metrics_jsonl`` (see :func:`read_metrics`); writes ``png_path`` (1000 x 900 px)
    and returns it, or returns None (writing nothing) when there is nothing to plot yet.
    """
    train, val = read_metrics(metrics_jsonl)
    if not train and not val:
        return None
    fig = _figure(10, 9)
    loss_ax, lr_ax, val_ax = fig.subplots(3, 1, sharex=True)
    steps, loss = _series(train, "loss")
    if loss:
        n = max(1, len(loss) // 20)
        loss_ax.plot(steps, loss, color="tab:blue", alpha=0.35 if n > 1 else 1.0, linewidth=1,
                     label="loss")
        if n > 1:
            smooth = np.convolve(loss, np.ones(n) / n, mode="valid")
            loss_ax.plot(steps[n - 1:], smooth, color="tab:blue", linewidth=2,
                         label=f"mean of {n} records")
        loss_ax.legend(loc="upper right", fontsize=8)
    loss_ax.set_ylabel("training loss")
    steps_lr, lr = _series(train, "lr")
    if lr:
        lr_ax.plot(steps_lr, lr, color="tab:orange")
        lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    lr_ax.set_ylabel("learning rate")
    for key, label, colour in (("val_top1", "top-1", "tab:green"),
                               ("val_top5", "top-5", "tab:purple"),
                               ("val_mean_class_acc", "mean class", "tab:gray")):
        s, v = _series(val, key)
        if v:
            val_ax.plot(s, [100 * x for x in v], marker="o", color=colour, label=label)
    val_ax.set_ylim(0, 102)
    if val:
        val_ax.legend(loc="lower left", bbox_to_anchor=(0, 1), ncol=3, fontsize=8,
                      frameon=False)  # above the axes: never over a point
    else:
        val_ax.text(0.5, 0.5, "no validation yet", ha="center", va="center",
                    transform=val_ax.transAxes, color="0.5")
    val_ax.set_ylabel("validation accuracy (%)")
    val_ax.set_xlabel("step (grey lines: epoch starts)")
    for ax in (loss_ax, lr_ax, val_ax):
        ax.grid(True, alpha=0.3)
        _epoch_lines(ax, train)
    last = (train or val)[-1]
    epoch = f", epoch {last['epoch']}" if _number(last.get("epoch")) else ""
    fig.suptitle(f"{Path(metrics_jsonl).parent.name or 'run'}: step {last['step']}{epoch}")
    return _save(fig, png_path)


# ------------------------------------------------------------------------------ explain

def explain_figure(explanation: Any, png_path: str | Path, topk: int = 5,
                   tile: int | None = None) -> Path:
    """One figure of a :class:`claver.explain.Explanation`: the frames the model saw with
    their times (top row), the heat-maps over them with a colour bar (bottom row), and the
    top-``topk`` label probabilities (the explained label in red). Width 2.2 in per frame
    + 4 in, height 5.2 in (at :data:`DPI`)."""
    exp = explanation
    frames = exp.frames.numpy()  # (T, S, S, 3)
    overlays = [o.numpy() for o in exp.overlays(tile)]
    t = len(frames)
    fig = _figure(2.2 * t + 4, 5.2)
    left, right = fig.subfigures(1, 2, width_ratios=[2.2 * t, 4])
    axes = left.subplots(2, t, squeeze=False)
    times = getattr(exp, "times", None)
    for i in range(t):
        top, bottom = axes[0, i], axes[1, i]
        top.imshow(frames[i], interpolation="nearest")
        top.set_title(f"t = {times[i]:.2f} s" if times else f"frame {i + 1} of {t}",
                      fontsize=9)
        bottom.imshow(overlays[i], interpolation="nearest")
        for ax in (top, bottom):
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("frames the model saw", fontsize=9)
    axes[1, 0].set_ylabel("where it looked", fontsize=9)
    bar = left.colorbar(ScalarMappable(Normalize(0, 1), HEAT_CMAP), ax=axes[1, :].tolist(),
                        shrink=0.9, pad=0.01)
    bar.set_label(f"{exp.method} (0-1 over all frames)", fontsize=8)
    probs = exp.probs.float()
    order = torch.sort(probs, descending=True, stable=True).indices[:topk].tolist()
    ax = right.subplots()
    names = [_short(exp.labels[i], 22) for i in order][::-1]
    values = [100 * float(probs[i]) for i in order][::-1]
    colours = ["tab:red" if i == exp.target else "tab:blue" for i in order][::-1]
    ax.barh(range(len(order)), values, color=colours)
    ax.set_yticks(range(len(order)), names, fontsize=9)
    ax.set_xlim(0, 100)
    ax.set_xlabel("probability (%)")
    for y, v in enumerate(values):
        ax.text(min(v + 1, 80), y, f"{v:.1f}%", va="center", fontsize=8)
    ax.set_title(f"top {len(order)} of {len(exp.labels)} labels", fontsize=9)
    best = int(probs.argmax())
    fig.suptitle(f"{Path(exp.source).name}: explaining \u201c{exp.label}\u201d "
                 f"({100 * float(probs[exp.target]):.1f}%); predicted "
                 f"\u201c{exp.labels[best]}\u201d ({100 * float(probs[best]):.1f}%)",
                 fontsize=11)
    return _save(fig, png_path)


def mask_figure(num_frames: int, tokens_per_frame: int, mode: str,
                png_path: str | Path) -> Path:
    """A Kronecker mask (T L x T L, rows: query tokens, frame-major) with frame ticks on both
    axes, lines between frames and a legend; 8 x 8.6 in."""
    from claver.explain import mask_image

    n = num_frames * tokens_per_frame
    fig = _figure(8, 8.6)
    ax = fig.add_subplot()
    ax.imshow(mask_image(num_frames, tokens_per_frame, mode, cell=1).numpy(),
              interpolation="nearest", extent=(-0.5, n - 0.5, n - 0.5, -0.5))
    centres = [(t + 0.5) * tokens_per_frame - 0.5 for t in range(num_frames)]
    ticks = [f"frame {t}" for t in range(num_frames)]
    ax.set_xticks(centres, ticks, rotation=90 if num_frames > 6 else 0, fontsize=8)
    ax.set_yticks(centres, ticks, fontsize=8)
    for t in range(1, num_frames):
        edge = t * tokens_per_frame - 0.5
        ax.axhline(edge, color="tab:blue", linewidth=0.8)
        ax.axvline(edge, color="tab:blue", linewidth=0.8)
    ax.set_xlabel(f"key token (frame t', token l'); {tokens_per_frame} tokens per frame")
    ax.set_ylabel("query token (frame t, token l)")
    ax.set_title(f"{mode.upper()} mask: {num_frames} frames x {tokens_per_frame} tokens "
                 f"({n} x {n})", fontsize=11)
    ax.legend(handles=[Patch(facecolor=(0.98, 0.98, 0.98), edgecolor="0.5", label="may attend"),
                       Patch(facecolor=(0.24, 0.24, 0.24), label="blocked"),
                       Patch(facecolor=(1.0, 0.55, 0.0), label="the token itself")],
              loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, fontsize=9)
    return _save(fig, png_path)


# ---------------------------------------------------------------------------- timelines

def _window_records(windows: Any) -> list[dict[str, Any]]:
    """Windows as dicts with start, end, probs (label -> p), background, label."""
    if isinstance(windows, Mapping):
        windows = windows.get("windows") or []
    out = []
    for w in windows:
        d = w if isinstance(w, Mapping) else w.to_dict()
        if d.get("ok", True) and d.get("probs") is not None and d.get("start") is not None:
            out.append(d)
    return out


def window_timeline(windows: Any, png_path: str | Path, threshold: float | None = None,
                    topk: int = 3, title: str | None = None) -> Path:
    """Per-window probabilities of the ``topk`` labels of a long video, against time.

    ``windows``: what :meth:`claver.zeroshot.Predictor.predict_windows` returns (a list of
    Predictions), their ``to_dict()`` dicts, or one video's entry of ``claver predict
    --window --json`` (``{"video", "windows": [...], ...}``). Labels are ranked by their
    highest window probability; each window is drawn at its centre. ``threshold``: the
    background line; windows below it are shaded. The band underneath shows each window's
    label. 12 x 5 in.
    """
    records = _window_records(windows)
    if not records:
        raise ValueError(f"{png_path}: no readable windows to plot")
    labels = list(records[0]["probs"])
    probs = np.array([[r["probs"][lb] for lb in labels] for r in records])  # (W, C)
    order = np.argsort(-probs.max(0), kind="stable")[:topk]
    centres = np.array([(r["start"] + r["end"]) / 2 for r in records])
    fig = _figure(12, 5)
    ax, band = fig.subplots(2, 1, sharex=True, height_ratios=[5, 1])
    colours = {labels[c]: f"C{k}" for k, c in enumerate(order)}
    for c in order:
        ax.plot(centres, probs[:, c], marker="o", markersize=3, color=colours[labels[c]],
                label=_short(labels[c]))
    if threshold is not None:
        ax.axhline(threshold, color="black", linestyle="--", linewidth=1,
                   label=f"background threshold {threshold:g}")
    for k, r in enumerate(records):  # each window owns the time until the next one starts
        until = min(r["end"], records[k + 1]["start"]) if k + 1 < len(records) else r["end"]
        if r.get("background"):
            ax.axvspan(r["start"], until, color="0.9", zorder=0)
        name = r.get("label") or labels[int(np.argmax([r["probs"][lb] for lb in labels]))]
        band.broken_barh([(r["start"], until - r["start"])], (0, 1),
                         color="0.85" if r.get("background") else colours.get(name, "0.6"))
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    band.set_yticks([])
    band.set_ylabel("label", rotation=0, ha="right", va="center")
    band.set_xlabel("time (s); band: best label of each window until the next one starts "
                    "(light grey: no action)")
    band.set_xlim(0, max(r["end"] for r in records))
    source = title or (records[0].get("video") or "video")
    fig.suptitle(f"{source}: {len(records)} window(s), top {len(order)} labels")
    return _save(fig, png_path)

