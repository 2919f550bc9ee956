"""Model configurations: frozen dataclasses and named presets.

A :class:`ModelConfig` fully describes an architecture (and the preprocessing its weights
expect), so a checkpoint that stores ``ModelConfig.to_dict()`` rebuilds its model alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (123.675 / 255, 116.28 / 255, 103.53 / 255)
IMAGENET_STD = (58.395 / 255, 57.12 / 255, 57.375 / 255)

ARCHS = ("clip", "claver", "actionclip")
MASKS = ("kmt", "kmct")
FUSIONS = ("meanP", "Conv1D", "LSTM", "Transf", "Transf_cls")


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
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.arch == "claver" and self.mask not in MASKS:
            raise ValueError(f"mask must be one of {MASKS}, got {self.mask!r}")
        if self.arch == "actionclip" and self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        v = self.vision
        if v.image_size % v.patch_size:
            raise ValueError(
                f"image_size {v.image_size} is not a multiple of patch_size {v.patch_size}"
            )
        for name, tower in (("vision", v), ("text", self.text)):
            if tower.width % tower.heads:
                raise ValueError(
                    f"{name} width {tower.width} is not divisible by heads {tower.heads}"
                )
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
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"model config has unknown field(s) {sorted(unknown)}")
        data["vision"] = VisionConfig(**data.get("vision", {}))
        data["text"] = TextConfig(**data.get("text", {}))
        return cls(**data)


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
                f"unknown model name {name!r}; expected one of {model_names()} "
                f"or an OpenAI name {list(OPENAI_NAMES)}"
            )
    embed_dim, vision, text = BACKBONES[backbone]
    config = ModelConfig(arch=arch, embed_dim=embed_dim, vision=vision, text=text)
    return config.replace(**overrides) if overrides else config
