"""Self-describing training checkpoints, written atomically, for exact resumption.

A checkpoint holds the model weights and its :class:`ModelConfig`, the run config, epoch,
step, optimizer, grad-scaler, best metric, every RNG state (python, numpy, torch CPU and
CUDA) and the run settings that define the schedule and the data order (``settings``: a
resume that changes them is refused, see :func:`settings_changes`). It is written to
``<name>.tmp`` and renamed, so a crash never leaves a half file
under the real name. A checkpoint written inside an epoch (a stop signal or
``TRAIN.SAVE_EVERY``) also records ``step_in_epoch`` (optimizer steps already done in
``epoch``) and ``rng_epoch_start`` (the RNG states as that epoch's data loader started), so a
resume rebuilds the same loader and continues with the same draws; ``saved_because`` says
why it was written (``epoch end`` / ``every N steps`` / ``signal SIGTERM``). Everything is
plain data, so it loads with ``weights_only=True``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from claver.weights.safe_load import load_pickle_checkpoint

FORMAT = "claver-train-v1"


def rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, state, gauss = random.getstate()
    return {
        "python": [version, list(state), gauss],
        "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss,
                  cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, values, gauss = state["python"]
    random.setstate((version, tuple(values), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, *, model: torch.nn.Module, optimizer: Any, scaler: Any,
                    epoch: int, step: int, run_config: dict, best: float | None = None,
                    extra: dict | None = None, settings: dict | None = None,
                    step_in_epoch: int | None = None, rng_epoch_start: dict | None = None,
                    saved_because: str = "", skipped_steps: int = 0) -> Path:
    """Write a resumable checkpoint atomically; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = getattr(model, "module", model)
    state = {
        "format": FORMAT,
        "model": {k: v.detach().cpu() for k, v in raw.state_dict().items()},
        "model_config": raw.config.to_dict(),
        "config": run_config,
        "epoch": epoch,
        "step": step,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "best": best,
        "rng": rng_state(),
        "extra": extra or {},
        "settings": settings,
        "step_in_epoch": step_in_epoch,
        "rng_epoch_start": rng_epoch_start,
        "saved_because": saved_because,
        "skipped_steps": skipped_steps,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint (safely); raises ValueError if it is not one."""
    state = load_pickle_checkpoint(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a claver training checkpoint (use it as "
                         "MODEL.PRETRAINED to start from its weights instead)")
    return state


def latest_checkpoint(output: str | Path) -> Path | None:
    """``last.pth`` in ``output`` if present (``--auto-resume``)."""
    path = Path(output) / "last.pth"
    return path if path.is_file() else None


def settings_changes(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``"KEY: old -> new"`` for every setting that differs between a checkpoint's record and
    the run about to resume it (keys missing on either side show as ``(none)``)."""
    changes = []
    for key in [*recorded, *(k for k in current if k not in recorded)]:
        old, new = recorded.get(key, "(none)"), current.get(key, "(none)")
        if old != new:
            changes.append(f"{key}: {old} -> {new}")
    return changes
