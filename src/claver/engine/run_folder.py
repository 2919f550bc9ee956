"""A run's folder and what may continue it.

The output folder is never overwritten silently (:func:`check_output`,
:func:`clear_previous_run`); a resume must continue a training state of the same model
(:func:`check_resumable`) with the same schedule and data order (:func:`run_settings`,
:func:`check_resume_settings`).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from torch import nn

from claver.engine.checkpoint import settings_changes
from claver.engine.config import Config, ConfigError
from claver.models.config import ModelConfig
from claver.models.factory import config_differences


class OutputExistsError(ValueError):
    """OUTPUT already holds files and the run neither continues nor overwrites them."""


class ChangedSettingsError(ValueError):
    """A resume would change the schedule or the data order recorded in the checkpoint."""


# What a training run writes into OUTPUT (``--overwrite`` replaces these, nothing else).
RUN_FILES = ("config.yaml", "last.pth", "last.pth.tmp", "best.pth", "best.pth.tmp",
             "metrics.jsonl", "train.log", "bad_videos.jsonl", "curves.png")
RUN_DIRS = ("eval", "tensorboard")


def _is_run_file(path: Path) -> bool:
    name = path.name
    if path.is_dir():
        return name in RUN_DIRS
    return name in RUN_FILES or (name.startswith("few_shot_k") and name.endswith(".txt"))


def _describe(path: Path) -> str:
    return path.name + "/" if path.is_dir() else path.name


def output_contents(out: Path) -> list[Path]:
    """The entries of ``out`` (empty when it does not exist); an error if it is a file."""
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"OUTPUT {out} is a file, not a folder; choose another OUTPUT")
    return sorted(out.iterdir()) if out.is_dir() else []


def check_output(out: Path, *, continuing: bool, overwrite: bool) -> list[Path]:
    """Refuse a non-empty ``out`` unless the run continues it or ``overwrite``; returns what
    ``out`` holds. Reads only."""
    if continuing and overwrite:
        raise OutputExistsError("--overwrite starts the run over; it cannot be combined with "
                                "--resume or --auto-resume")
    entries = output_contents(out)
    if entries and not continuing and not overwrite:
        shown = ", ".join(_describe(p) for p in entries[:8])
        more = f" and {len(entries) - 8} more" if len(entries) > 8 else ""
        raise OutputExistsError(
            f"OUTPUT {out} is not empty ({shown}{more}): continue that run with --auto-resume "
            "(or --resume CHECKPOINT), start over with --overwrite, or choose another OUTPUT")
    return entries


def clear_previous_run(out: Path, entries: list[Path], keep: set[str]) -> tuple[list[str],
                                                                                  list[str]]:
    """``--overwrite``: delete the files an earlier run wrote (:data:`RUN_FILES`, eval/,
    tensorboard/, few-shot manifests) except ``keep``; returns (replaced, left alone)."""
    replaced, left = [], []
    for path in entries:
        if path.name in keep:
            replaced.append(path.name)  # rewritten by this run
        elif _is_run_file(path):
            replaced.append(_describe(path))
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        else:
            left.append(path.name + ("/" if path.is_dir() else ""))
    return replaced, left


def list_identity(list_file: str) -> str:
    """What identifies a training list: its content (a moved dataset keeps its identity)."""
    try:
        digest = hashlib.sha256(Path(list_file).read_bytes()).hexdigest()[:16]
    except OSError:
        return "(unreadable)"
    return f"sha256 {digest}"


def run_settings(cfg: Config, world: int, accum: int, steps_per_epoch: int, total: int,
                 videos: int) -> dict[str, Any]:
    """The settings that define the LR schedule and the data order; recorded in every
    checkpoint and compared on resume (see :func:`check_resume_settings`)."""
    t, d = cfg.TRAIN, cfg.DATA
    return {
        "TRAIN.BATCH_SIZE": t.BATCH_SIZE,
        "TRAIN.EFFECTIVE_BATCH_SIZE": t.EFFECTIVE_BATCH_SIZE,
        "world size": world,
        "accumulation": accum,
        "TRAIN.EPOCHS": t.EPOCHS,
        "TRAIN.MAX_STEPS": t.MAX_STEPS,
        "TRAIN.WARMUP_EPOCHS": t.WARMUP_EPOCHS,
        "TRAIN.LR": t.LR,
        "TRAIN.MIN_LR_RATIO": t.MIN_LR_RATIO,
        "TRAIN.NEW_PARAM_LR_MULT": t.NEW_PARAM_LR_MULT,
        "TRAIN.WARMUP_PREFIX": t.WARMUP_PREFIX,
        "TRAIN.NO_DECAY": t.NO_DECAY,
        "TRAIN.TEXT_ROW_DRAW": t.TEXT_ROW_DRAW,
        "SEED": cfg.SEED,
        "DATA.NUM_FRAMES": d.NUM_FRAMES,
        "DATA.FEW_SHOT_K": d.FEW_SHOT_K,
        "DATA.KEEP_TAIL_FRAMES": d.KEEP_TAIL_FRAMES,
        "DATA.TRAIN_FILE content": list_identity(d.TRAIN_FILE),
        "training videos": videos,
        "steps per epoch": steps_per_epoch,
        "total steps": total,
    }


def check_resume_settings(path: str, state: dict[str, Any], current: dict[str, Any], *,
                          allow: bool, say: Any) -> None:
    """Refuse (or, with ``allow``, warn about) a resume that changes the recorded settings."""
    recorded = state.get("settings")
    if not recorded:
        say(f"warning: {path} records no run settings (an older checkpoint): cannot check "
            "that the schedule and data order are unchanged")
        return
    changes = settings_changes(recorded, current)
    if not changes:
        return
    listed = "; ".join(changes)
    if not allow:
        raise ChangedSettingsError(
            f"resuming {path} with changed settings ({listed}): the schedule and data order "
            "would no longer match the checkpoint; undo the changes, start over in another "
            "OUTPUT, or pass --allow-changed-settings")
    say(f"warning: resuming {path} with changed settings ({listed}); the LR schedule, step "
        "count and data order follow the new settings from step "
        f"{state.get('step')} on")


def manifest_name(cfg: Config) -> str:
    return f"few_shot_k{cfg.DATA.FEW_SHOT_K}_seed{cfg.SEED}.txt"


def undo_manifest(cfg: Config, out: Path, entries: list[Path], existed: bool) -> None:
    """A start that failed: remove the few-shot manifest it wrote (if OUTPUT had none) and
    the folder if this start created it and left it empty."""
    manifest = out / manifest_name(cfg)
    if cfg.DATA.FEW_SHOT_K > 0 and manifest not in entries and manifest.is_file():
        manifest.unlink()
    if not existed and out.is_dir() and not any(out.iterdir()):
        out.rmdir()


def check_resumable(path: str, state: dict[str, Any], model: nn.Module, out: Path) -> None:
    """A checkpoint a run can continue: a training state (not weights only) of this model."""
    if state.get("optimizer") is None:
        why = f" ({state['saved_because']})" if state.get("saved_because") else ""
        raise ConfigError(
            f"{path} holds model weights only{why}, not a training state to continue: continue "
            f"from {out / 'last.pth'} with --auto-resume, or start a new run from these "
            f"weights with MODEL.PRETRAINED={path}")
    recorded = ModelConfig.from_dict(state.get("model_config") or {})
    diffs = config_differences(model.config, recorded, ignore=())
    if diffs:
        shown = "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
        config_file = Path(path).parent / "config.yaml"
        raise ConfigError(
            f"{path} was trained with another model (this run's config vs the checkpoint's: "
            f"{shown}): resume with the config it was trained with ({config_file}), or "
            f"start a new run from its weights with MODEL.PRETRAINED={path}")


