"""``claver data check``: read a dataset the way training will, and report what would break.

Every video is read through :meth:`VideoDataset.read`, the very code training and evaluation
run (same reader, backend, short side, decode limits and frame samplers); only the transform
is skipped. Per video:

- the evaluation views: the frames of the test sampler (e.g. 4 clips x 8 segments);
- ``draws`` training draws: the frames the training sampler picks in epochs 0, 1, ... (the
  draws a run with the same seed makes);
- with ``full``, every frame as well (sequentially, in chunks).

A file that fails any of these is listed with the reason; the report also gives the class
histogram (flagging empty classes) and duration / resolution / frame-rate summaries.
"""

from __future__ import annotations

import statistics
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from claver.data.dataset import READ_ERRORS, VideoDataset

FULL_DECODE_CHUNK = 32  # frames per get_frames call of a full decode (bounds memory)


@dataclass
class VideoCheck:
    index: int
    source: str
    ok: bool
    reason: str = ""
    frames: int = 0
    fps: float = 0.0
    duration: float = 0.0
    width: int = 0
    height: int = 0


@dataclass
class CheckReport:
    checks: list[VideoCheck]
    class_names: list[str]
    class_counts: Counter = field(default_factory=Counter)

    @property
    def bad(self) -> list[VideoCheck]:
        return [c for c in self.checks if not c.ok]

    @property
    def ok(self) -> bool:
        return not self.bad


def _decode_every_frame(dataset: VideoDataset, index: int) -> None:
    with dataset.open_reader(index) as reader:
        n = reader.info.num_frames
        for start in range(0, n, FULL_DECODE_CHUNK):
            reader.get_frames(range(start, min(n, start + FULL_DECODE_CHUNK)))


def check_video(index: int, views: VideoDataset, train: VideoDataset | None = None, *,
                draws: int = 3, full: bool = False) -> VideoCheck:
    """Read video ``index`` as evaluation (``views``) and training (``train``, ``draws``
    epochs) would, and every frame too with ``full``; never raises for a bad video."""
    where = views.source.describe(index)
    step = "evaluation views"
    try:
        rng, _ = views.generators(index, epoch=0)
        _, _, info = views.read(index, rng)
        for epoch in range(draws if train is not None else 0):
            step = f"training draw {epoch + 1}"
            rng, _ = train.generators(index, epoch=epoch)  # type: ignore[union-attr]
            train.read(index, rng)  # type: ignore[union-attr]
        if full:
            step = "full decode"
            _decode_every_frame(views, index)
    except READ_ERRORS as err:
        return VideoCheck(index, where, False, f"{step}: {type(err).__name__}: {err}")
    except Exception as err:  # not a read error: training would stop on it, so report it
        return VideoCheck(index, where, False, f"{step}: {type(err).__name__}: {err} "
                          "(not a handled read error: it would stop a training run)")
    return VideoCheck(index, where, True, "", info.num_frames, info.fps, info.duration,
                      info.width, info.height)


def check_dataset(views: VideoDataset, class_names: list[str], *,
                  train: VideoDataset | None = None, draws: int = 3, full: bool = False,
                  workers: int = 4, progress: bool = True) -> CheckReport:
    """:func:`check_video` for every video of ``views`` with ``workers`` threads (decoding
    releases the GIL); ``train`` must list the same videos. ``progress``: a tqdm bar."""
    from tqdm import tqdm

    if train is not None and len(train) != len(views):
        raise ValueError(f"the training dataset lists {len(train)} videos, the evaluation "
                         f"one {len(views)}: check_dataset needs the same list for both")
    if draws < 0:
        raise ValueError(f"draws must be >= 0, got {draws}")
    checks: list[VideoCheck] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, \
            tqdm(total=len(views), desc="data check", unit="video",
                 disable=None if progress else True,  # None: no bar in a log file
                 dynamic_ncols=True) as bar:
        futures = [pool.submit(check_video, i, views, train, draws=draws, full=full)
                   for i in range(len(views))]
        for fut in as_completed(futures):
            check = fut.result()
            checks.append(check)
            bar.update(1)
            if not check.ok:
                bar.set_postfix(bad=sum(not c.ok for c in checks))
    checks.sort(key=lambda c: c.index)
    counts = Counter(label for e in views.source.entries for label in e.labels)
    return CheckReport(checks, class_names, counts)


def _summary(values: list[float], unit: str) -> str:
    if not values:
        return "n/a"
    return (f"min {min(values):.3g}{unit}, median {statistics.median(values):.3g}{unit}, "
            f"max {max(values):.3g}{unit}")


def format_report(report: CheckReport, *, max_bad: int = 50) -> str:
    good = [c for c in report.checks if c.ok]
    lines = [f"videos listed {len(report.checks)}, readable {len(good)}, "
             f"bad {len(report.bad)}"]
    if report.bad:
        lines.append("bad files:")
        for c in report.bad[:max_bad]:
            lines.append(f"  {c.source}: {c.reason}")
        if len(report.bad) > max_bad:
            lines.append(f"  ... and {len(report.bad) - max_bad} more")
        if not good and all("FileNotFoundError" in c.reason for c in report.bad):
            lines.append("no listed video exists: the list's paths are relative to the video "
                         "folder; check --root (default: the list's folder)")
    names = report.class_names
    counts = [report.class_counts.get(i, 0) for i in range(len(names))]
    empty = [names[i] for i, n in enumerate(counts) if n == 0]
    lines.append(f"classes {len(names)}: videos per class {_summary(counts, '')}")
    if empty:
        lines.append(f"  classes with no video ({len(empty)}): {', '.join(empty[:20])}"
                     + (" ..." if len(empty) > 20 else ""))
    width = max((len(n) for n in names), default=0)
    top = max(counts, default=0) or 1
    for name, n in zip(names, counts, strict=True):
        lines.append(f"  {name:<{width}} {n:>6} {'#' * round(30 * n / top)}")
    lines.append(f"duration: {_summary([c.duration for c in good], 's')}")
    lines.append(f"frames: {_summary([float(c.frames) for c in good], '')}")
    lines.append(f"fps: {_summary([c.fps for c in good], '')}")
    sizes = Counter(f"{c.width}x{c.height}" for c in good)
    lines.append("resolution: " + ", ".join(f"{s} ({n})" for s, n in sizes.most_common(5))
                 + (f", +{len(sizes) - 5} more" if len(sizes) > 5 else ""))
    return "\n".join(lines)


def describe_reads(views: VideoDataset, train: VideoDataset | None, draws: int,
                   full: bool) -> str:
    """One line saying what is read from every video."""
    s = views.sampler
    what = [f"evaluation views ({s.num_clips} x {s.num_frames} frames, {s.mode} sampling, "
            f"short side {views.short_side or 'native'})"]
    if train is not None and draws:
        what.append(f"{draws} training draw{'s' if draws > 1 else ''} "
                    f"({train.sampler.num_frames} frames, short side "
                    f"{train.short_side or 'native'})")
    if full:
        what.append("every frame")
    return "reading per video: " + " + ".join(what)
