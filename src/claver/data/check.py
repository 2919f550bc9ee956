"""``claver data check``: scan a dataset in parallel and report what would break training.

Every listed video is opened and probed, and its first and last frames are decoded (which
catches truncated streams); the report lists bad files with reasons, the class histogram
(flagging empty classes) and duration / resolution / frame-rate summaries.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from claver.data.dataset import READ_ERRORS


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


def check_video(source: Any, index: int, backend: str = "pyav") -> VideoCheck:
    """Open, probe and decode the first and last frame of one video."""
    from claver.data.decode import VideoReader

    where = source.describe(index)
    try:
        with VideoReader(source.open(index), backend) as reader:
            info = reader.info
            if info.num_frames < 1:
                return VideoCheck(index, where, False, "no decodable frames")
            reader.get_frames([0, info.num_frames - 1])
    except READ_ERRORS as err:
        return VideoCheck(index, where, False, f"{type(err).__name__}: {err}")
    return VideoCheck(index, where, True, "", info.num_frames, info.fps, info.duration,
                      info.width, info.height)


def check_dataset(source: Any, class_names: list[str], *, workers: int = 4,
                  backend: str = "pyav", progress: Callable[[int, int], None] | None = None
                  ) -> CheckReport:
    """Check every video of ``source`` with ``workers`` threads (decoding releases the GIL)."""
    checks: list[VideoCheck] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(check_video, source, i, backend) for i in range(len(source))]
        for done, fut in enumerate(futures, 1):
            checks.append(fut.result())
            if progress is not None:
                progress(done, len(futures))
    counts = Counter(label for e in source.entries for label in e.labels)
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


def run_check(list_file: str | Path, labels: str | Path, *, root: str | Path | None = None,
              tar: str | Path | None = None, workers: int = 4, backend: str = "pyav",
              log: Callable[[str], None] = print) -> int:
    """The CLI body: returns the exit status (0 clean, 1 bad videos)."""
    from claver.data.sources import FolderSource, TarSource, read_labels

    names = read_labels(labels)
    if tar is not None:
        source = TarSource(tar, list_file, num_classes=len(names))
    else:
        root = Path(root) if root is not None else Path(list_file).parent
        source = FolderSource(root, list_file, num_classes=len(names))
    step = max(1, len(source) // 10)

    def progress(done: int, total: int) -> None:
        if done % step == 0 or done == total:
            log(f"checked {done}/{total}")

    report = check_dataset(source, names, workers=workers, backend=backend, progress=progress)
    log(format_report(report))
    return 0 if report.ok else 1
