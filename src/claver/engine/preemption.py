"""Preemption: stop training cleanly on a signal (SLURM's SIGTERM / ``--signal`` USR1).

:class:`StopSignals` only records which signal came; the training loop checks it between
optimizer steps, every rank stops after the same step, rank 0 saves ``last.pth`` and
:class:`TrainingStopped` exits the process with :data:`STOPPED_EXIT_CODE` (75).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

STOPPED_EXIT_CODE = 75  # EX_TEMPFAIL: stopped on a signal, last.pth saved, rerun to continue


class TrainingStopped(SystemExit):
    """Training stopped early on a signal in TRAIN.STOP_SIGNALS after saving ``checkpoint``
    at ``step``; exits the process with :data:`STOPPED_EXIT_CODE` unless caught."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path | None) -> None:
        super().__init__(STOPPED_EXIT_CODE)
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint


class StopSignals:
    """Records the first TRAIN.STOP_SIGNALS signal received while installed (a context
    manager; the previous handlers come back on exit). Handlers only set a flag: the loop
    checks :attr:`received` between optimizer steps. Signals this platform lacks, and
    installation outside the main thread (where Python cannot handle signals), are skipped
    with a message."""

    def __init__(self, names: list[str], say: Any = print) -> None:
        self.names, self.say = names, say
        self.received: str | None = None
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name
            self.say(f"received {self.received}: finishing this step, then saving last.pth "
                     f"and exiting with code {STOPPED_EXIT_CODE}")

    def __enter__(self) -> StopSignals:
        global _ACTIVE
        _ACTIVE = self
        if not self.names:
            return self
        if threading.current_thread() is not threading.main_thread():
            self.say("warning: training runs outside the main thread: TRAIN.STOP_SIGNALS "
                     "are not handled")
            return self
        for name in self.names:
            num = getattr(signal, name, None)
            if num is None:
                self.say(f"warning: {name} does not exist on this platform; not handled")
                continue
            self.previous[num] = signal.signal(num, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        global _ACTIVE
        for num, handler in self.previous.items():
            signal.signal(num, handler)
        self.previous.clear()
        _ACTIVE = None


# The stop handler of the running training (None outside train()); tests and embedding code
# can read which signal arrived with :func:`stop_requested`.
_ACTIVE: StopSignals | None = None


def stop_requested() -> str | None:
    """The stop signal this process received during the running training, if any."""
    return _ACTIVE.received if _ACTIVE is not None else None


