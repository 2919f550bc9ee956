"""Errors raised while reading checkpoint files (re-exported by :mod:`claver.weights.safe_load`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

PathLike = str | Path


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the requested model."""


class CheckpointReadError(CheckpointError):
    """The file is not a readable checkpoint (empty, truncated, corrupt or another format)."""

    def __init__(self, message: str, path: PathLike | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else Path(path)


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint was refused for safety; nothing in it was executed.

    Raised when a pickle references globals outside the allow-list (listed in ``globals``),
    when a TorchScript archive needs its own code to restore a module, and when a file's
    data would expand far beyond what it holds (zip bombs, zero-stride or overlapping
    tensor views larger than their storage); ``globals`` is empty for the last two.
    """

    def __init__(self, message: str, path: PathLike, globals_: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.path = Path(path)
        self.globals = sorted(set(globals_))
