"""What a run prints: messages (also kept in ``OUTPUT/train.log``) and progress.

On a terminal, progress is a tqdm bar; in a log file (SLURM, ``nohup``, a pipe) a bar would
write a line per refresh, so there progress is a plain line every ``interval`` seconds
(config ``LOG_INTERVAL``) and one at the end. ``train.log`` gets every message and the plain
progress lines, never bars. Processes other than rank 0 print nothing (errors still reach
stderr through the exception that stops them).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class RunLog:
    """A callable that prints a message (rank 0 only) and appends it, time-stamped, to a log
    file once :meth:`attach` gave one. Messages said before that are kept and written first,
    so the file holds the whole run from its first line."""

    def __init__(self, echo: Callable[[str], Any] = print, enabled: bool = True) -> None:
        self.echo, self.enabled = echo, enabled
        self.file: TextIO | None = None
        self.pending: list[str] = []

    def attach(self, path: str | Path) -> None:
        """Append from now on to ``path`` (the messages said so far first)."""
        if not self.enabled:
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        for line in self.pending:
            self.file.write(line)
        self.pending.clear()
        self.file.flush()

    def note(self, message: str) -> None:
        """Write ``message`` to the log file only."""
        if not self.enabled:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        lines = "".join(f"{stamp} {line}\n" for line in str(message).splitlines() or [""])
        if self.file is None:
            self.pending.append(lines)
        else:
            self.file.write(lines)
            self.file.flush()

    def __call__(self, message: Any = "") -> None:
        """Print ``message`` and keep it in the log file."""
        if not self.enabled:
            return
        self.echo(str(message))
        self.note(str(message))

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def is_terminal(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


class Progress:
    """Progress of ``total`` items (``unit``: "steps", "videos"): a tqdm bar on a terminal,
    else a plain line through ``log`` at the first update and then every ``interval``
    seconds; either way one closing line
    in the log (file only on a terminal). ``update(n, **fields)`` adds ``n`` done items and
    shows ``fields`` (e.g. ``loss="1.23"``) with rate and ETA. A disabled progress (rank > 0)
    does nothing."""

    def __init__(self, total: int, desc: str, *, log: RunLog, unit: str = "steps",
                 interval: float = 30.0, enabled: bool = True, terminal: bool | None = None,
                 position: int | None = None) -> None:
        self.total, self.desc, self.log, self.unit = total, desc, log, unit
        self.interval, self.enabled = interval, enabled and log.enabled
        self.terminal = is_terminal() if terminal is None else terminal
        self.done, self.fields = 0, {}
        self.start = time.monotonic()
        self.last_line: float | None = None  # the first update gets a line (the job is alive)
        self.bar = None
        if self.enabled and self.terminal:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit.rstrip("s") or unit,
                            dynamic_ncols=True, leave=False, position=position)

    def line(self) -> str:
        """``desc: done/total unit (pct), rate, elapsed, ETA, fields``."""
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        pct = f" ({self.done / self.total:.0%})" if self.total else ""
        eta = (f", ETA {_clock((self.total - self.done) / rate)}"
               if rate > 0 and self.done < self.total else "")
        extra = "".join(f", {k} {v}" for k, v in self.fields.items())
        return (f"{self.desc}: {self.done}/{self.total} {self.unit}{pct}, {rate:.2f} "
                f"{self.unit}/s, {_clock(elapsed)}{eta}{extra}")

    def update(self, n: int = 1, **fields: Any) -> None:
        if not self.enabled:
            return
        self.done += n
        self.fields.update(fields)
        if self.bar is not None:
            self.bar.update(n)
            if fields:
                self.bar.set_postfix(self.fields, refresh=False)
        now = time.monotonic()
        due = self.last_line is None or now - self.last_line >= self.interval
        if due and self.done < self.total:
            self.last_line = now
            (self.log.note if self.terminal else self.log)(self.line())

    def close(self) -> None:
        """Close the bar and log the final line (once)."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        (self.log.note if self.terminal else self.log)(self.line())
        self.enabled = False
