"""Experiment configuration: typed dataclasses loaded from YAML, with inheritance and overrides.

Keys are upper case, as in the papers' configs. A YAML file may list ``BASE: [other.yaml]``
(paths relative to the file); later files and then command-line overrides win:

    claver train -c configs/k400/b16_8f_kmt.yaml --opts TRAIN.LR 2e-6 DATA.NUM_FRAMES 16
    claver train -c configs/k400/b16_8f_kmt.yaml TRAIN.LR=2e-6 TRAIN.EPOCHS=1

Unknown keys and values of the wrong type are errors that name the key, the file and the
closest valid key. ``save_config`` writes the resolved config next to every run.

Files are read bounded (:data:`claver.fileio.MAX_CONFIG_BYTES`, at most
:data:`MAX_CONFIG_FILES` files through ``BASE``, no cycles) with the safe YAML loader and
without aliases (``*name``), so a config costs what its bytes say; error messages quote
values cut to 200 characters.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from claver.data.video_source import DecodeLimits
from claver.fileio import FileFormatError, parse_yaml, read_yaml, short_repr
from claver.models.config import MAX_FRAMES, MAX_IMAGE_SIZE, get_config

_LIMITS = DecodeLimits()  # the reader's defaults, so config and library agree


@dataclass
class DataConfig:
    ROOT: str = ""  # folder the list paths are relative to
    TRAIN_FILE: str = ""  # "relative/path.mp4 LABEL" lists
    VAL_FILE: str = ""
    LABEL_LIST: str = ""  # id,name CSV
    TAR: str = ""  # read videos from this uncompressed tar instead of ROOT
    NUM_FRAMES: int = 8
    INPUT_SIZE: int = 224
    FRAME_MODE: str = "segment"  # segment (TSN) | clip (SampleFrames)
    FRAME_INTERVAL: int = 1
    # segment-mode training: false = official mmaction2 rule (segments of n // T frames, the
    # last n mod T frames never drawn); true = segments spread over the whole video
    KEEP_TAIL_FRAMES: bool = False
    CLIP_TEST_RULE: str = "1.x"  # clip-mode test clip placement: mmaction2 1.x | 0.x
    # bilinear resizes average over the source when shrinking; the official pipelines did
    # not (OpenCV); false also decodes at full size (FFmpeg's scaler always filters)
    ANTIALIAS: bool = True
    NUM_WORKERS: int = 4
    BACKEND: str = "pyav"
    NORM: str = "imagenet"  # imagenet | clip: mean/std of the input
    DESCRIPTIONS: list[str] = field(default_factory=list)  # interpretive prompt files
    TEMPLATES: str = "claver"  # claver | actionclip | none
    ON_ERROR: str = "skip"
    FEW_SHOT_K: int = 0  # > 0: train on a seeded K-shot subset of TRAIN_FILE (manifest saved)
    # Bounds on one video, whatever the file claims (a bad video is skipped, never the run):
    MAX_PIXELS: int = _LIMITS.max_pixels  # refuse frames larger than this (native W x H)
    # seconds a reader may spend opening a video, and again per read of its frames; a slower
    # video fails (skipped in training); 0: no deadline
    DECODE_TIMEOUT: float = _LIMITS.timeout or 0.0
    MAX_PACKETS: int = _LIMITS.max_packets  # refuse video streams with more packets
    # Seconds to wait for one batch from the DataLoader workers before stopping with an
    # error that names the stuck setting (only with NUM_WORKERS > 0); 0: wait forever.
    LOADER_TIMEOUT: float = 600.0


@dataclass
class ModelConfig:
    ARCH: str = "claver-vit-b16"  # a claver.list_models() name
    PRETRAINED: str = "openai"  # openai | a checkpoint path | "" (random init)
    MASK: str = "kmt"
    FUSION: str = "meanP"
    FIX_TEXT: bool = False  # freeze the text tower and cache its features
    GRAD_CHECKPOINTING: bool = False


@dataclass
class TrainConfig:
    EPOCHS: int = 60  # the official CLAVER default
    MAX_STEPS: int = 0  # > 0: stop after this many optimizer steps (quick runs)
    WARMUP_EPOCHS: float = 5.0
    LR: float = 12e-6
    MIN_LR_RATIO: float = 0.01
    # false: official timm cosine over the whole run (floor LR * MIN_LR_RATIO for every
    # group); true: cosine after the warm-up, floor per group (ActionCLIP)
    WARMUP_PREFIX: bool = False
    NEW_PARAM_LR_MULT: float = 10.0  # temporal / fusion parameters
    WEIGHT_DECAY: float = 0.001
    NO_DECAY: str = "official"  # official (1-D, biases, positional_embedding) | none (decay all)
    BETAS: list[float] = field(default_factory=lambda: [0.9, 0.98])
    EPS: float = 1e-8
    BATCH_SIZE: int = 8  # per device
    EFFECTIVE_BATCH_SIZE: int = 0  # 0: BATCH_SIZE x world size (no accumulation)
    AMP: str = "bf16"  # bf16 | fp16 | none
    CLIP_GRAD: float = 0.0  # 0: off
    LOSS: str = "claver"  # claver (soft-target CE over text rows) | actionclip (sym. KL)
    TEXT_ROWS: int = 5  # K text rows drawn per step
    # official: K rows with replacement per micro-batch (and rank); per_step: K distinct rows
    # per optimizer step, shared by its micro-batches and ranks
    TEXT_ROW_DRAW: str = "official"
    LABEL_SMOOTH: float = 0.1
    MIXUP: float = 0.8
    CUTMIX: float = 1.0
    MIXUP_SWITCH_PROB: float = 0.5
    FLIP: float = 0.5
    COLOR_JITTER: float = 0.8
    GRAYSCALE: float = 0.2
    COLOR_JITTER_MODE: str = "clip"  # clip: one jitter per clip | per_frame: official
    RANDAUGMENT: list[int] = field(default_factory=list)  # [N, M] RandAugment; []: off
    # fixed multi-scale crop positions: 5 (corners + centre: mmaction2 / CLAVER) or 13
    # (+ edge midpoints and quarter points: TSN's more_fix_crop, the ActionCLIP original)
    FIXED_CROPS: int = 5
    # signals that stop training cleanly: every rank finishes its step, rank 0 saves
    # last.pth, the process exits with code 75 (resume with --auto-resume); [] = none
    STOP_SIGNALS: list[str] = field(default_factory=lambda: ["SIGTERM", "SIGUSR1"])
    SAVE_EVERY: int = 0  # optimizer steps between mid-epoch last.pth saves; 0: epoch ends only
    SAVE_EVERY_MINUTES: float = 0.0  # also save last.pth when this many minutes passed; 0: off


@dataclass
class TestConfig:
    NUM_CLIPS: int = 1
    NUM_CROPS: int = 1
    BATCH_SIZE: int = 8
    ONLY_TEST: bool = False
    # scale of the video-text cosine logits when scoring: 0 = the model's exp(logit_scale);
    # > 0 = this fixed value (ActionCLIP's test uses 100)
    LOGIT_SCALE: float = 0.0
    # zero-shot / cross-dataset: "LIST.txt|LABELS.csv" pairs evaluated in turn (mean +- std)
    SPLITS: list[str] = field(default_factory=list)


@dataclass
class ValConfig:
    """Validation during training (on DATA.VAL_FILE): one view by default, as the papers
    validate; the multi-view protocol (TEST.NUM_CLIPS x TEST.NUM_CROPS) is for ``claver
    test``."""
    NUM_CLIPS: int = 1
    NUM_CROPS: int = 1
    BATCH_SIZE: int = 8
    EVERY: int = 1  # epochs between validations (the last epoch is always validated); 0: never


@dataclass
class Config:
    DATA: DataConfig = field(default_factory=DataConfig)
    MODEL: ModelConfig = field(default_factory=ModelConfig)
    TRAIN: TrainConfig = field(default_factory=TrainConfig)
    TEST: TestConfig = field(default_factory=TestConfig)
    VAL: ValConfig = field(default_factory=ValConfig)
    OUTPUT: str = "runs/default"
    SEED: int = 0
    DETERMINISTIC: bool = False
    SAVE_FREQ: int = 1  # epochs between checkpoints
    PRINT_FREQ: int = 20  # steps between metrics.jsonl records
    # seconds between plain progress lines when output is not a terminal (a log file, SLURM);
    # on a terminal a progress bar is shown instead
    LOG_INTERVAL: float = 30.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


CHOICES = {
    "DATA.FRAME_MODE": ("segment", "clip"),
    "DATA.CLIP_TEST_RULE": ("1.x", "0.x"),
    "TRAIN.NO_DECAY": ("official", "none"),
    "TRAIN.TEXT_ROW_DRAW": ("official", "per_step"),
    "TRAIN.COLOR_JITTER_MODE": ("clip", "per_frame"),
    "TRAIN.FIXED_CROPS": (5, 13),
    "DATA.NORM": ("imagenet", "clip"),
    "DATA.TEMPLATES": ("claver", "actionclip", "none"),
    "DATA.ON_ERROR": ("skip", "raise"),
    "DATA.BACKEND": ("pyav", "decord", "torchcodec"),
    "MODEL.MASK": ("kmt", "kmct"),
    "MODEL.FUSION": ("meanP", "Conv1D", "LSTM", "Transf", "Transf_cls"),
    "TRAIN.AMP": ("bf16", "fp16", "none"),
    "TRAIN.LOSS": ("claver", "actionclip"),
    "TEST.NUM_CROPS": (1, 3),
    "VAL.NUM_CROPS": (1, 3),
}


# Numeric keys with a lower bound: key -> (smallest value, what the value means).
MINIMUMS = {
    "DATA.MAX_PIXELS": (1, "pixels per frame, width x height"),
    "DATA.MAX_PACKETS": (1, "packets per video stream"),
    "DATA.DECODE_TIMEOUT": (0, "seconds per video; 0 turns the deadline off"),
    "DATA.LOADER_TIMEOUT": (0, "seconds per batch; 0 waits forever"),
    "DATA.NUM_FRAMES": (1, "frames per clip"),
    "DATA.INPUT_SIZE": (1, "pixels per side of the model input"),
    "DATA.FRAME_INTERVAL": (1, "frames between samples in clip mode"),
    "DATA.NUM_WORKERS": (0, "loader processes; 0 reads in the main process"),
    "TRAIN.BATCH_SIZE": (1, "videos per device and step"),
    "TRAIN.TEXT_ROWS": (1, "text rows drawn per step"),
    "TRAIN.SAVE_EVERY": (0, "optimizer steps between mid-epoch checkpoints; 0: epoch ends "
                         "only"),
    "TEST.BATCH_SIZE": (1, "videos per device and step"),
    "TEST.NUM_CLIPS": (1, "clips per test video"),
    "TEST.LOGIT_SCALE": (0, "fixed logit scale for scoring; 0: the model's exp(logit_scale)"),
    "VAL.BATCH_SIZE": (1, "videos per device and step"),
    "VAL.NUM_CLIPS": (1, "clips per validation video"),
    "VAL.EVERY": (0, "epochs between validations; 0: never"),
    "TRAIN.SAVE_EVERY_MINUTES": (0, "minutes between mid-epoch checkpoints; 0: off"),
    "LOG_INTERVAL": (0, "seconds between progress lines in a log file"),
}

# Upper bounds (the model's own limits, so a config cannot ask for a model the factory
# refuses only after the data are set up).
MAXIMUMS = {
    "DATA.NUM_FRAMES": MAX_FRAMES,
    "DATA.INPUT_SIZE": MAX_IMAGE_SIZE,
}

# Signals TRAIN.STOP_SIGNALS may name (catchable ones a scheduler or a user sends to stop).
STOP_SIGNAL_NAMES = ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT", "SIGHUP", "SIGQUIT",
                     "SIGXCPU")

MAX_CONFIG_FILES = 32  # files one config may read through BASE (itself included)
MAX_BASE_NAME = 1024  # characters of one BASE entry


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


def _fields(obj: Any) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(obj)}


def _coerce(value: Any, kind: Any, key: str, where: str) -> Any:
    """``value`` as type ``kind`` (int/float/str/bool/list[...]), or ConfigError."""
    origin = typing.get_origin(kind)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            value = [value]
        (item,) = typing.get_args(kind)
        return [_coerce(v, item, key, where) for v in value]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads 2e-6 (no dot) as a string
            except ValueError:
                pass
    elif kind is str:
        if value is None:
            return ""
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"{where}: {key} must be {getattr(kind, '__name__', kind)}, "
                      f"got {short_repr(value)}; e.g. {key}: {short_repr(_default(key))} "
                      "(the default)")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _set(cfg: Any, key: str, value: Any, where: str, prefix: str = "") -> None:
    """Set dotted ``key`` (``TRAIN.LR``) on the dataclass tree ``cfg``, type-checked."""
    head, _, rest = key.partition(".")
    fields = _fields(cfg)
    if head not in fields:
        shown = head if len(head) <= 80 else head[:77] + "..."
        close = difflib.get_close_matches(shown, list(fields), n=1)
        hint = f"; did you mean {prefix}{close[0]}?" if close else ""
        raise ConfigError(f"{where}: unknown key {prefix}{shown}{hint} "
                          f"(valid: {', '.join(prefix + f for f in fields)})")
    current = getattr(cfg, head)
    if dataclasses.is_dataclass(current):
        if rest:
            _set(current, rest, value, where, f"{prefix}{head}.")
            return
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {prefix}{head} is a section (KEY: value lines), "
                              f"got {short_repr(value)}")
        for k, v in value.items():
            _set(current, str(k), v, where, f"{prefix}{head}.")
        return
    if rest:
        raise ConfigError(f"{where}: {prefix}{head} has no sub-key {short_repr(rest)}")
    full = prefix + head
    value = _coerce(value, _hints(type(cfg))[head], full, where)
    if full in CHOICES and value not in CHOICES[full]:
        raise ConfigError(f"{where}: {full} must be one of {CHOICES[full]}, got "
                          f"{short_repr(value)}")
    if full in MINIMUMS:
        _check_minimum(full, value, where)
    if full == "TRAIN.STOP_SIGNALS":
        value = _stop_signals(value, where)
    if full == "TRAIN.RANDAUGMENT" and value and (len(value) != 2 or min(value) < 0):
        raise ConfigError(f"{where}: TRAIN.RANDAUGMENT must be [] (off) or [N, M] with N, M "
                          f">= 0, got {short_repr(value)}; e.g. TRAIN.RANDAUGMENT=[2,9]")
    if full == "MODEL.ARCH":
        try:  # a known name, checked now (cheap) rather than when the model is built
            get_config(value)
        except ValueError as e:
            raise ConfigError(f"{where}: MODEL.ARCH: {e}") from None
    setattr(cfg, head, value)


def _stop_signals(names: list[str], where: str) -> list[str]:
    """TRAIN.STOP_SIGNALS as canonical names (``term`` / ``USR1`` / ``SIGUSR1`` -> ``SIGUSR1``),
    duplicates dropped; an unknown or uncatchable name is an error."""
    out: list[str] = []
    for name in names:
        canon = name.strip().upper()
        canon = canon if canon.startswith("SIG") else "SIG" + canon
        if canon not in STOP_SIGNAL_NAMES:
            raise ConfigError(
                f"{where}: TRAIN.STOP_SIGNALS: {short_repr(name)} is not a signal training can "
                f"stop on (choose from {', '.join(STOP_SIGNAL_NAMES)}; SIGKILL and SIGSTOP "
                "cannot be caught); e.g. TRAIN.STOP_SIGNALS=[SIGTERM,SIGUSR1], or [] for none")
        if canon not in out:
            out.append(canon)
    return out


def _default(key: str) -> Any:
    node: Any = Config()
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _check_minimum(key: str, value: float, where: str) -> None:
    low, meaning = MINIMUMS[key]
    high = MAXIMUMS.get(key, math.inf)
    if not (math.isfinite(value) and low <= value <= high):
        bound = f">= {low}" if high == math.inf else f"from {low} to {high}"
        raise ConfigError(f"{where}: {key} must be a finite number {bound} ({meaning}), got "
                          f"{short_repr(value)}; e.g. {key}={_default(key)} (the default)")


def _bases(data: dict, path: Path) -> list[str]:
    bases = data.pop("BASE", None)
    if bases is None:
        return []
    items = [bases] if isinstance(bases, str) else bases
    if not isinstance(items, list) or not all(
            isinstance(b, str) and b.strip() and len(b) <= MAX_BASE_NAME for b in items):
        raise ConfigError(f"{path}: BASE must be a file name or a list of file names (relative "
                          f"to this file), got {short_repr(bases)}; e.g. BASE: [../base.yaml]")
    return items


def _read_yaml(path: Path, seen: tuple[Path, ...] = (),
               count: list[int] | None = None) -> list[tuple[dict, str]]:
    """The YAML layers of ``path`` in application order (bases first)."""
    count = [0] if count is None else count
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in seen)
        chain = chain if len(chain) <= 600 else "... -> " + chain[-593:]
        raise ConfigError(f"{path}: BASE cycle through {chain}; remove the BASE entry that "
                          "leads back")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    count[0] += 1
    if count[0] > MAX_CONFIG_FILES:
        raise ConfigError(f"{path}: the BASE chain reads more than {MAX_CONFIG_FILES} files; "
                          "list each base once and keep the chain short")
    try:
        data = read_yaml(path, what="config") or {}
    except FileFormatError as e:
        raise ConfigError(str(e)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level (KEY: value lines), got "
                          f"{type(data).__name__}")
    layers: list[tuple[dict, str]] = []
    for base in _bases(data, path):
        layers += _read_yaml(path.parent / base, (*seen, path), count)
    return layers + [(data, str(path))]


def parse_overrides(opts: list[str]) -> list[tuple[str, Any]]:
    """``["TRAIN.LR", "2e-6", "DATA.NUM_FRAMES=16"]`` -> ``[("TRAIN.LR", 2e-6), ...]``."""
    pairs, i = [], 0
    while i < len(opts):
        item = opts[i]
        if "=" in item:
            key, _, raw = item.partition("=")
            i += 1
        elif i + 1 < len(opts):
            key, raw = item, opts[i + 1]
            i += 2
        else:
            raise ConfigError(f"override {short_repr(item)} has no value; use KEY VALUE or "
                              "KEY=VALUE")
        try:
            value = parse_yaml(raw, f"command line {short_repr(key)}") if raw != "" else ""
        except FileFormatError as e:
            raise ConfigError(str(e)) from None
        pairs.append((key, value))
    return pairs


def _leaf_keys(key: str, value: Any) -> list[str]:
    """The dotted keys a YAML item sets (``DATA: {ROOT: x}`` -> ``["DATA.ROOT"]``)."""
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaf_keys(f"{key}.{k}", v)]
    return [key]


def load_config(path: str | Path | None = None, opts: list[str] | None = None) -> Config:
    """Defaults <- YAML (with BASE chain) <- overrides. Where each key was set last is
    remembered for messages (:func:`origin`)."""
    cfg = Config()
    origins: dict[str, str] = {}
    for data, where in _read_yaml(Path(path)) if path else []:
        for key, value in data.items():
            _set(cfg, str(key), value, where)
            origins.update(dict.fromkeys(_leaf_keys(str(key), value), where))
    for key, value in parse_overrides(opts or []):
        _set(cfg, key, value, "command line")
        origins.update(dict.fromkeys(_leaf_keys(key, value), "the command line"))
    cfg.__dict__["_origins"] = origins  # not a field: to_dict / save_config leave it out
    return cfg


def origin(cfg: Config, key: str) -> str:
    """Where ``key`` (e.g. ``TRAIN.EFFECTIVE_BATCH_SIZE``) got its value: a config file, "the
    command line" or "the default"."""
    return cfg.__dict__.get("_origins", {}).get(key, "the default")


def save_config(cfg: Config, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return path


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a Config saved with ``to_dict`` (e.g. from a checkpoint)."""
    cfg = Config()
    for key, value in data.items():
        _set(cfg, key, value, "checkpoint")
    return cfg
