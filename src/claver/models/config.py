"""Model configurations: frozen dataclasses and named presets.

A :class:`ModelConfig` fully describes an architecture (and the preprocessing its weights
expect), so a checkpoint that stores ``ModelConfig.to_dict()`` rebuilds its model alone.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

from claver.fileio import short_repr

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (123.675 / 255, 116.28 / 255, 103.53 / 255)
IMAGENET_STD = (58.395 / 255, 57.12 / 255, 57.375 / 255)

ARCHS = ("clip", "claver", "actionclip")
MASKS = ("kmt", "kmct")
FUSIONS = ("meanP", "Conv1D", "LSTM", "Transf", "Transf_cls")
# ActionCLIP Conv1D: "time" convolves over frames; "original" reproduces the original code's
# view of (B, T, C) as (B, C, T) without a transpose (checkpoints trained with it need it).
CONV1D_LAYOUTS = ("time", "original")


@dataclass(frozen=True)
class VisionConfig:
    image_size: int = 224
    patch_size: int = 32
    width: int = 768
    layers: int = 12
    heads: int = 12

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        """Tokens per frame: patches + CLS."""
        return self.grid**2 + 1


@dataclass(frozen=True)
class TextConfig:
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    layers: int = 12
    heads: int = 8


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a CLIP, CLAVER or ActionCLIP model.

    ``temporal_layers`` (CLAVER) defaults to ``vision.layers // 3``; ``fusion_layers`` and
    ``fusion_heads`` (ActionCLIP Transf/Transf_cls heads) default to 6 and ``text.width // 64``
    (8 for Transf_cls) as in the original code. Heads of the towers are ``width // 64`` in
    every released CLIP; checkpoints without a stored config are read with that rule.
    """

    arch: str = "claver"
    embed_dim: int = 512
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    num_frames: int = 8
    mask: str = "kmt"
    temporal_layers: int | None = None
    fusion: str = "meanP"
    fusion_layers: int = 6
    fusion_heads: int | None = None
    conv1d_layout: str = "time"
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def __post_init__(self) -> None:
        validate(self)
        # Normalise list inputs (from JSON/YAML) to tuples so the config stays hashable.
        object.__setattr__(self, "mean", tuple(float(x) for x in self.mean))
        object.__setattr__(self, "std", tuple(float(x) for x in self.std))

    @property
    def num_temporal_layers(self) -> int:
        if self.temporal_layers is not None:
            return self.temporal_layers
        return max(1, self.vision.layers // 3)

    @property
    def num_fusion_heads(self) -> int:
        if self.fusion_heads is not None:
            return self.fusion_heads
        if self.fusion == "Transf_cls":
            return 8  # fixed in the original code
        return max(1, self.text.width // 64)

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with top-level fields changed (``vision``/``text`` accept dicts of changes)."""
        for tower in ("vision", "text"):
            if isinstance(changes.get(tower), dict):
                changes[tower] = dataclasses.replace(getattr(self, tower), **changes[tower])
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(
                f"unknown model option(s) {sorted(unknown)}; "
                f"valid: {sorted(f.name for f in dataclasses.fields(self))}"
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ModelConfig:
        """The config ``to_dict`` wrote (e.g. read back from JSON); every field is checked
        (:class:`ModelConfigError` names the field, the value and the fix)."""
        data = _known_fields(data, cls, "model config")
        for tower, kind in (("vision", VisionConfig), ("text", TextConfig)):
            data[tower] = kind(**_known_fields(data.get(tower, {}), kind, tower))
        return cls(**data)


# ----------------------------------------------------------------------------- validation
# Bounds on every field, checked before anything is built: far above every released model
# (ViT-L/14@336px: width 1024, 24 layers, 577 tokens per frame), far below what exhausts a
# machine. The parameter count (arithmetic on the config) has its own limit, see
# :func:`check_size`.
MAX_WIDTH = 8192  # vision.width, text.width, embed_dim
MAX_LAYERS = 128  # vision.layers, text.layers, temporal_layers, fusion_layers
MAX_IMAGE_SIZE = 1024
MAX_GRID = 64  # patches per side: at most 64 x 64 + 1 tokens per frame
MAX_FRAMES = 256
MAX_CONTEXT = 1024  # text tokens
MAX_VOCAB = 1 << 20
DEFAULT_MAX_PARAMS = 2_000_000_000
MAX_PARAMS_ENV = "CLAVER_MAX_PARAMS"


class ModelConfigError(ValueError):
    """A model config field of the wrong type or out of range, or a model over the size limit.

    The message names the field, the value and the fix; readers of files prefix the file.
    """


def _known_fields(data: Any, cls: type, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ModelConfigError(f"{what} must be a mapping of field -> value, got "
                               f"{short_repr(data)}; write it as {{\"field\": value, ...}}")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = [str(k) for k in data if k not in known]
    if unknown:
        raise ModelConfigError(f"{what} has unknown field(s) {short_repr(sorted(unknown))}; "
                               f"valid: {', '.join(known)}")
    return dict(data)


def _int(name: str, value: Any, low: int, high: int, example: int | None = None) -> int:
    ok_type = isinstance(value, int) and not isinstance(value, bool)
    if not ok_type or not low <= value <= high:
        problem = "must be a whole number" if not ok_type else "is out of range: it must be"
        hint = f" (e.g. {example})" if example is not None else ""
        raise ModelConfigError(
            f"model config field {name} {problem} from {low} to {high}, got "
            f"{short_repr(value)}; write {name} as a number in that range{hint}")
    return value


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ModelConfigError(f"{name} must be one of {choices}, got {short_repr(value)}")


def _triple(name: str, value: Any, positive: bool) -> None:
    ok = isinstance(value, (list, tuple)) and len(value) == 3 and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
        and (x > 0 or not positive) for x in value)
    if not ok:
        kind = "positive" if positive else "finite"
        raise ModelConfigError(f"model config field {name} must be 3 {kind} numbers (one per "
                               f"RGB channel), got {short_repr(value)}; write it as 3 "
                               f"numbers, e.g. {name}: {list(CLIP_STD if positive else CLIP_MEAN)}")


def _heads(name: str, heads: Any, width: int) -> None:
    _int(name, heads, 1, width, max(1, width // 64))
    if width % heads:
        raise ModelConfigError(f"model config field {name} = {heads} does not divide the width "
                               f"{width}; use a divisor of {width} (CLIP uses width / 64)")


def validate(config: ModelConfig) -> None:
    """Check every field of ``config`` (types, ranges, divisibility); ModelConfigError."""
    _choice("arch", config.arch, ARCHS)
    _choice("mask", config.mask, MASKS)
    _choice("fusion", config.fusion, FUSIONS)
    _choice("conv1d_layout", config.conv1d_layout, CONV1D_LAYOUTS)
    for tower, kind in (("vision", VisionConfig), ("text", TextConfig)):
        if not isinstance(getattr(config, tower), kind):
            raise ModelConfigError(f"model config field {tower} must be a {kind.__name__}, got "
                                   f"{short_repr(getattr(config, tower))}")
    v, t = config.vision, config.text
    _int("embed_dim", config.embed_dim, 1, MAX_WIDTH, 512)
    _int("num_frames", config.num_frames, 1, MAX_FRAMES, 8)
    _int("vision.image_size", v.image_size, 1, MAX_IMAGE_SIZE, 224)
    _int("vision.patch_size", v.patch_size, 1, v.image_size, 16)
    if v.image_size % v.patch_size:
        raise ModelConfigError(f"model config: vision.image_size {v.image_size} is not a "
                               f"multiple of patch_size {v.patch_size}; make it one (e.g. 224/16)")
    if v.grid > MAX_GRID:
        raise ModelConfigError(
            f"model config: vision.image_size / patch_size = {v.grid} patches per side, more "
            f"than {MAX_GRID}; use a larger patch_size or a smaller image_size")
    for name, tower in (("vision", v), ("text", t)):
        _int(f"{name}.width", tower.width, 1, MAX_WIDTH, 768 if name == "vision" else 512)
        _int(f"{name}.layers", tower.layers, 1, MAX_LAYERS, 12)
        _heads(f"{name}.heads", tower.heads, tower.width)
    _int("text.context_length", t.context_length, 1, MAX_CONTEXT, 77)
    _int("text.vocab_size", t.vocab_size, 1, MAX_VOCAB, 49408)
    if config.temporal_layers is not None:
        _int("temporal_layers", config.temporal_layers, 0, MAX_LAYERS, 4)
    _int("fusion_layers", config.fusion_layers, 0, MAX_LAYERS, 6)
    if config.fusion_heads is not None:
        _int("fusion_heads", config.fusion_heads, 1, config.embed_dim, 8)
    if config.arch == "actionclip" and config.fusion in ("Transf", "Transf_cls"):
        _heads("fusion_heads", config.num_fusion_heads, config.embed_dim)
    _triple("mean", config.mean, positive=False)
    _triple("std", config.std, positive=True)


def _block(width: int) -> int:
    """Parameters of one CLIP block: attention (4 w^2 + 4 w), MLP (8 w^2 + 5 w), 2 LayerNorms."""
    return 12 * width * width + 13 * width


def count_parameters(config: ModelConfig) -> int:
    """Parameters of the model ``config`` describes, by arithmetic (nothing is built)."""
    v, t, e = config.vision, config.text, config.embed_dim
    vw, tw = v.width, t.width
    vision = (3 * v.patch_size**2 * vw + vw + v.num_tokens * vw + 4 * vw
              + v.layers * _block(vw) + vw * e)
    text = (t.vocab_size * tw + t.context_length * tw + t.layers * _block(tw) + 2 * tw
            + tw * e + 1)  # + logit_scale
    extra = 0
    if config.arch == "claver":
        extra = config.num_frames * vw + config.num_temporal_layers * _block(vw)
    elif config.arch == "actionclip":
        frames, layers = config.num_frames, config.fusion_layers
        extra = {
            "meanP": 0,
            "Conv1D": 3 * e,
            "LSTM": 8 * e * e + 8 * e,
            "Transf": frames * e + layers * _block(e),
            # torch encoder layers: attention, a 2048-wide feed-forward, 2 norms; final norm
            "Transf_cls": (frames + 2) * e + layers * (4 * e * e + 4105 * e + 2048) + 2 * e,
        }[config.fusion]
    return vision + text + extra


def max_params(override: int | float | None = None) -> int:
    """The parameter limit: ``override`` if given, else ``$CLAVER_MAX_PARAMS``, else
    :data:`DEFAULT_MAX_PARAMS` (2e9)."""
    raw: Any = override
    where = "max_params"
    if raw is None:
        raw, where = os.environ.get(MAX_PARAMS_ENV), MAX_PARAMS_ENV
        if not raw:
            return DEFAULT_MAX_PARAMS
    try:
        value = float(raw)
        if isinstance(raw, bool) or not math.isfinite(value) or value < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise ModelConfigError(f"{where} must be a positive number of parameters (e.g. 5e9), "
                               f"got {short_repr(raw)}") from None
    return int(value)


def check_size(config: ModelConfig, limit: int | float | None = None,
               source: str = "model config") -> int:
    """The parameter count of ``config``; ModelConfigError when it is over the limit
    (``limit``, else ``$CLAVER_MAX_PARAMS``, else 2e9)."""
    count = count_parameters(config)
    allowed = max_params(limit)
    if count > allowed:
        raise ModelConfigError(
            f"{source} describes a model of {count:,} parameters ({count / 1e9:.2f}B), over "
            f"the limit of {allowed:,} that guards against configs that would exhaust memory; "
            f"if you mean it, pass max_params={count} (CLI: --max-params {count}) or set "
            f"{MAX_PARAMS_ENV}={count}")
    return count


def _vit(image_size: int, patch: int, width: int, layers: int) -> VisionConfig:
    return VisionConfig(image_size, patch, width, layers, width // 64)


# Backbones: (embed_dim, vision, text), as in OpenAI's released CLIP models.
BACKBONES: dict[str, tuple[int, VisionConfig, TextConfig]] = {
    "vit-b32": (512, _vit(224, 32, 768, 12), TextConfig(width=512, layers=12, heads=8)),
    "vit-b16": (512, _vit(224, 16, 768, 12), TextConfig(width=512, layers=12, heads=8)),
    "vit-l14": (768, _vit(224, 14, 1024, 24), TextConfig(width=768, layers=12, heads=12)),
    "vit-l14-336": (768, _vit(336, 14, 1024, 24), TextConfig(width=768, layers=12, heads=12)),
    # Tiny backbones for tests and CPU demos (random weights only).
    "tiny": (64, VisionConfig(32, 8, 64, 3, 1), TextConfig(width=64, layers=2, heads=1)),
    "tiny6": (64, VisionConfig(32, 8, 64, 6, 1), TextConfig(width=64, layers=2, heads=1)),
}

# OpenAI's names for the same backbones.
OPENAI_NAMES = {
    "ViT-B/32": "vit-b32",
    "ViT-B/16": "vit-b16",
    "ViT-L/14": "vit-l14",
    "ViT-L/14@336px": "vit-l14-336",
}


def model_names() -> list[str]:
    """Every name :func:`get_config` accepts, family first (``claver-vit-b16`` ...)."""
    return [f"{arch}-{bb}" for arch in ARCHS for bb in BACKBONES]


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """Config of a named model, e.g. ``claver-vit-b16``, ``actionclip-tiny``, ``ViT-B/32``.

    Overrides are :class:`ModelConfig` fields (``num_frames=16, mask="kmct"``).
    """
    key = OPENAI_NAMES.get(name)
    if key is not None:
        arch, backbone = "clip", key
    else:
        arch, _, backbone = name.lower().partition("-")
        if arch not in ARCHS or backbone not in BACKBONES:
            raise ValueError(
                f"unknown model name {short_repr(name)}; expected one of {model_names()} "
                f"or an OpenAI name {list(OPENAI_NAMES)}"
            )
    embed_dim, vision, text = BACKBONES[backbone]
    config = ModelConfig(arch=arch, embed_dim=embed_dim, vision=vision, text=text)
    return config.replace(**overrides) if overrides else config
