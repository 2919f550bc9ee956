"""Run a snippet of Python in a fresh interpreter under a memory and a time limit (for the
hostile-input tests: a bomb must hit the bound in the child, never take down the test run).

``run_limited(code, memory_mb=..., seconds=...)`` returns the ``CompletedProcess``; the child
gets ``RLIMIT_AS`` (address space) and the parent kills it after ``seconds``. A child that
ran out of either is reported as such in the assertion helpers.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"
# torch alone maps ~1 GiB of address space; the default leaves ~1.5 GiB for the file's data
DEFAULT_MEMORY_MB = 2560


def run_limited(code: str, *, memory_mb: int = DEFAULT_MEMORY_MB, seconds: float = 60.0,
                cwd: str | os.PathLike | None = None,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` (dedented) with ``python -c`` under the limits; never raises on a
    timeout (returncode -9 and ``timed_out = True`` on the result)."""
    limit = memory_mb * 2**20

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    child_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)]),
                 "OMP_NUM_THREADS": "1", **(env or {})}
    try:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd,
                              env=child_env, preexec_fn=limits, capture_output=True,
                              text=True, timeout=seconds)
        done.timed_out = False  # type: ignore[attr-defined]
    except subprocess.TimeoutExpired as exc:
        done = subprocess.CompletedProcess(exc.cmd, -9, exc.stdout or "", exc.stderr or "")
        done.timed_out = True  # type: ignore[attr-defined]
    return done


def describe(done: subprocess.CompletedProcess) -> str:
    """What happened, for assertion messages (the tail of the child's output)."""
    if getattr(done, "timed_out", False):
        return "the child ran past its time limit"
    return (f"exit {done.returncode}; stdout: {done.stdout[-1500:]!r}; "
            f"stderr: {done.stderr[-1500:]!r}")


def peak_rss_mib() -> int:
    """Peak resident memory of this process since its last exec, in MiB (``VmHWM``). Not
    ``ru_maxrss``: a child forked from a large test process inherits the parent's resident
    pages until it execs, and ``ru_maxrss`` keeps that high-water mark."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    raise RuntimeError("no VmHWM in /proc/self/status")
