"""What prediction takes in: video inputs, their preprocessing, and the label text rows.

- :class:`Preprocess`: uint8 frames (N, H, W, 3) -> normalised float (T, 3, S, S): T
  segment centres, short side -> ``short_side``, centre crop S x S, /255, mean/std. Built
  from a model's config (or the named weights' table entry) by :meth:`Preprocess.for_model`.
- :func:`as_frames` checks uint8 arrays/tensors; :func:`as_items` turns one input or a list
  into a list.
- :func:`text_rows`: R rows of C texts, one row per template and one per description index.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from claver.data.decode import read_video
from claver.data.sampling import segment_indices
from claver.data.transforms import center_crop, normalize, resize_short_side, to_float, to_tchw

__all__ = ["DEFAULT_TEMPLATE", "FILE_TYPES", "Preprocess", "as_frames", "as_items",
           "check_labels", "source_name", "text_rows", "tokens_for"]

DEFAULT_TEMPLATE = "a video of {}."
VideoInput = str | os.PathLike | bytes | bytearray | memoryview | np.ndarray | torch.Tensor
FILE_TYPES = (str, os.PathLike, bytes, bytearray, memoryview)

# ------------------------------------------------------------------------- preprocessing

@dataclass(frozen=True)
class Preprocess:
    """How a video becomes model input: uint8 (N, H, W, 3) -> float (T, 3, S, S).

    ``num_frames`` segment centres, short side -> ``short_side``, centre crop
    ``image_size``, /255, ``(x - mean) / std``. ``backend`` decodes files.
    """

    num_frames: int
    image_size: int
    short_side: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    backend: str = "pyav"

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.image_size < 1:
            raise ValueError(f"num_frames and image_size must be >= 1, got {self.num_frames}, "
                             f"{self.image_size}")
        if self.short_side < self.image_size:
            raise ValueError(f"short_side={self.short_side} is smaller than the crop "
                             f"image_size={self.image_size}; use short_side >= image_size")

    @classmethod
    def for_model(cls, model: torch.nn.Module, *, num_frames: int | None = None,
                  short_side: int | None = None, backend: str | None = None) -> Preprocess:
        """The model's preprocessing: ``model.preprocess`` (set by
        :func:`claver.pretrained.load_pretrained`) or its config, with overrides."""
        base = getattr(model, "preprocess", None)
        if not isinstance(base, Preprocess):
            cfg = model.config
            base = cls(cfg.num_frames, cfg.vision.image_size, cfg.vision.image_size,
                       tuple(cfg.mean), tuple(cfg.std))
        changes = {k: v for k, v in (("num_frames", num_frames), ("short_side", short_side),
                                     ("backend", backend)) if v is not None}
        return dataclasses.replace(base, **changes) if changes else base

    def indices(self, n: int) -> list[int]:
        """The frames taken from a video of ``n`` frames (segment centres)."""
        return segment_indices(n, self.num_frames, train=False).tolist()

    def crop(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> uint8 (T, S, S, 3): T of the N frames, short side scaled,
        centre crop (a view when the short side is right already, as decoded files are)."""
        if frames.shape[0] != self.num_frames:
            frames = frames[self.indices(frames.shape[0])]
        x = to_tchw(frames, "THWC")
        if min(x.shape[-2:]) != self.short_side:
            x = resize_short_side(x, self.short_side)
        return center_crop(x, self.image_size).permute(0, 2, 3, 1)

    def normalize(self, clips: torch.Tensor) -> torch.Tensor:
        """uint8 (..., T, S, S, 3) -> normalised float (..., T, 3, S, S), contiguous."""
        x = normalize(to_float(clips.movedim(-1, -3)), self.mean, self.std)
        return x.contiguous()

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> normalised float (T, 3, S, S) (takes T of the N frames)."""
        return self.normalize(self.crop(frames))

    def load_crop(self, src: VideoInput, name: str = "video") -> torch.Tensor:
        """Decode or take the frames of one input -> uint8 (T, S, S, 3) (see :meth:`crop`)."""
        if isinstance(src, FILE_TYPES):
            return self.crop(read_video(src, num_frames=self.num_frames, backend=self.backend,
                                        short_side=self.short_side))
        return self.crop(as_frames(src, name))

    def load(self, src: VideoInput, name: str = "video") -> torch.Tensor:
        """Decode or take the frames of one input -> normalised float (T, 3, S, S)."""
        return self.normalize(self.load_crop(src, name))

    def display(self, video: torch.Tensor) -> torch.Tensor:
        """Undo the normalisation: float (T, 3, S, S) -> uint8 (T, S, S, 3) for pictures."""
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        x = (video.float().cpu() * std + mean).mul(255).round().clamp(0, 255)
        return x.to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def as_frames(x: Any, name: str = "video") -> torch.Tensor:
    """Check a uint8 array/tensor of frames (T, H, W, 3) and return it as a CPU tensor."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a path, bytes, or uint8 frames (T, H, W, 3) as a numpy "
                        f"array or torch tensor, got {type(x).__name__}")
    shape = tuple(x.shape)
    if x.dtype != torch.uint8:
        raise ValueError(f"{name}: expected uint8 frames in 0..255, got dtype {x.dtype} {shape}; "
                         "convert floats in [0, 1] with (x * 255).round().clamp(0, 255) "
                         "and .to(torch.uint8) / .astype(np.uint8)")
    if x.dim() == 3 and shape[-1] == 3:
        raise ValueError(f"{name}: got one image {shape}; a video needs a time axis: "
                         "pass x[None] (or stack several frames) as (T, H, W, 3)")
    if x.dim() != 4 or shape[-1] != 3:
        hint = " (channels first? use x.permute(0, 2, 3, 1))" if x.dim() == 4 and \
            shape[1] == 3 else ""
        raise ValueError(f"{name}: expected frames (T, H, W, 3) RGB, channels last, got shape "
                         f"{shape}{hint}")
    if min(shape[:3]) < 1:
        raise ValueError(f"{name}: empty video {shape}")
    return x.cpu()


def as_items(videos: Any) -> tuple[list[Any], bool]:
    """(inputs, whether a single input was given)."""
    if isinstance(videos, FILE_TYPES):
        return [videos], True
    if isinstance(videos, (np.ndarray, torch.Tensor)):
        if videos.ndim == 5:
            return list(videos), False
        return [videos], True
    if isinstance(videos, (list, tuple)):
        if not videos:
            raise ValueError("no videos given (an empty list)")
        return list(videos), False
    raise TypeError(f"videos must be a path, bytes, uint8 frames (T, H, W, 3) or a list of "
                    f"these, got {type(videos).__name__}")


def source_name(item: Any, index: int) -> str:
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return f"<bytes #{index}>"
    return f"<frames #{index}>"


# ------------------------------------------------------------------------------ text side

def check_labels(labels: Any) -> tuple[str, ...]:
    """Labels as a tuple of distinct non-empty strings (clear errors otherwise)."""
    if isinstance(labels, str):
        raise TypeError(f"labels must be a list of strings, got one string {labels!r:.60}; "
                        "split it first, e.g. labels.split(',')")
    labels = tuple(labels)
    if not labels:
        raise ValueError("no labels given; pass at least one label word")
    for i, label in enumerate(labels):
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"label {i} is {label!r}; labels must be non-empty strings")
    dups = sorted(x for x, n in Counter(labels).items() if n > 1)
    if dups:
        raise ValueError(f"labels must be distinct; repeated: {dups}")
    return labels


def text_rows(labels: Sequence[str], templates: str | Sequence[str] | None = None,
              descriptions: Mapping[str, Sequence[str] | str] | Sequence[Sequence[str]]
              | None = None) -> list[list[str]]:
    """The R x C texts: one row per template, then one row per description index.

    ``templates``: a list of templates with one ``{}``, one template, or a named set of
    :mod:`claver.text.prompts` (``"claver"``, ``"actionclip"``: the papers' 16 each);
    default ``"a video of {}."``. ``descriptions``: a mapping label -> texts (extra labels
    are ignored) or a list aligned with ``labels``. Rows are built by
    :func:`claver.prompts.rows.build_text_rows`, as in training and evaluation: a class with
    fewer descriptions than the most described one fills its rows with its *own*
    descriptions (seeded), never another class's.
    """
    from claver.prompts.rows import build_text_rows

    labels = check_labels(labels)
    per_class = None
    if descriptions is not None:
        if isinstance(descriptions, Mapping):
            missing = [lb for lb in labels if not descriptions.get(lb)]
            if missing:
                raise ValueError(f"no descriptions for label(s) {missing}; give every label at "
                                 "least one description or none at all")
            per_class = [descriptions[lb] for lb in labels]
        else:
            per_class = list(descriptions)
        per_class = [[d] if isinstance(d, str) else list(d) for d in per_class]
    rows = build_text_rows(labels, DEFAULT_TEMPLATE if templates is None else templates,
                           per_class)
    if not rows:
        raise ValueError("no text rows: give at least one template or descriptions")
    return rows


def tokens_for(model: torch.nn.Module, texts: Sequence[str]) -> torch.Tensor:
    """Token ids (N, ctx); too-long texts are truncated with one warning."""
    from claver.text.tokenizer import count_tokens, tokenize

    ctx = model.config.text.context_length
    long = [t for t in texts if count_tokens(t) > ctx]
    if long:
        warnings.warn(f"{len(long)} text(s) exceed {ctx} CLIP tokens and were truncated "
                      f"(first: {long[0][:60]!r}...)", stacklevel=3)
    return tokenize(list(texts), context_length=ctx, truncate=True)
