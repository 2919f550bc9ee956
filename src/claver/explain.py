"""Where the model looks: attention heat-maps over patches, per frame, and mask pictures.

Two methods, both read the **last spatial block** (the last CLIP block every frame passes
through, before CLAVER's temporal blocks or ActionCLIP's fusion head):

- ``"grad-attention"`` (default, class-specific): that block's attention probabilities
  ``A`` (heads, L, L) per frame are multiplied by their gradient with respect to the
  target label's logit (mean over the text rows), the negative part is dropped and heads are
  averaged: ``mean_h relu(dlogit/dA * A)``, row of the frame's CLS token over its patches
  (the per-layer rule of Chefer et al., CVPR 2021, on one layer). Patches whose attention
  pushed the label's score up light up.
- ``"attention"`` (class-agnostic): the same row of ``A`` averaged over heads: where each
  frame's CLS token looks.

SDPA does not return attention weights, so while explaining, the last spatial block's
attention module computes ``softmax(q k^T / sqrt(d)) v`` explicitly (same result up to
float rounding) and keeps ``A``. Maps are scaled to [0, 1] jointly over all frames, so
frames are comparable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from claver.data.decode import VideoReader
from claver.images import overlay, save_gif
from claver.inputs import FILE_TYPES, Preprocess, as_items, source_name

__all__ = ["METHODS", "Explanation", "attention_maps", "explain", "explain_with",
           "mask_image"]

METHODS = ("grad-attention", "attention")


@contextlib.contextmanager
def recorded_attention(attn: torch.nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """While active, ``attn`` (a :class:`claver.models.clip.Attention`) computes attention
    explicitly and stores its probabilities (B, heads, L, L) under ``"probs"`` (keeping their
    gradient when autograd is on)."""
    store: dict[str, torch.Tensor] = {}

    def forward(x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                is_causal: bool = False) -> torch.Tensor:
        b, n, d = x.shape
        h = attn.heads
        qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)
        q, k, v = qkv.view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4).unbind(0)
        scores = (q @ k.transpose(-1, -2)) * (d // h) ** -0.5
        if is_causal:
            attn_mask = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == \
                torch.bool else scores + attn_mask
        probs = scores.softmax(-1)
        if probs.requires_grad:
            probs.retain_grad()
        store["probs"] = probs
        return attn.out_proj((probs @ v).transpose(1, 2).reshape(b, n, d))

    attn.forward = forward  # an instance attribute shadows the class's forward
    try:
        yield store
    finally:
        del attn.forward


def _last_spatial_attention(model: torch.nn.Module) -> torch.nn.Module:
    try:
        return model.visual.transformer.resblocks[-1].attn
    except AttributeError:
        raise TypeError(f"{type(model).__name__} has no CLIP vision transformer "
                        "(model.visual.transformer.resblocks)") from None


def _video_embedding(model: torch.nn.Module, video: torch.Tensor) -> torch.Tensor:
    if hasattr(model, "encode_video"):
        return model.encode_video(video)
    b, t = video.shape[:2]  # plain CLIP: frame-mean, as in claver.predict
    return F.normalize(model.encode_image(video.flatten(0, 1), normalize=False)
                       .view(b, t, -1).mean(1), dim=-1)


def attention_maps(model: torch.nn.Module, video: torch.Tensor, text_features: torch.Tensor,
                   target: int, method: str = "grad-attention") -> torch.Tensor:
    """Heat-maps (T, g, g) in [0, 1] of one normalised video (1, T, 3, S, S).

    ``text_features``: (R, C, E) normalised text rows; ``target``: the class index whose
    logit is explained (``grad-attention``). ``g`` = image_size // patch_size.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if video.dim() != 5 or video.shape[0] != 1:
        raise ValueError(f"expected one video (1, T, 3, S, S), got {tuple(video.shape)}")
    was_training = model.training
    model.eval()
    try:
        with recorded_attention(_last_spatial_attention(model)) as store, \
                torch.enable_grad():
            v = _video_embedding(model, video).float()
            probs = store["probs"]  # (T, heads, L, L) for one video
            if method == "grad-attention":
                logit = model.logit_scale.float().exp() * (v[0] @ text_features[:, target].T)
                (grad,) = torch.autograd.grad(logit.mean(), probs)
                maps = (grad * probs).clamp(min=0).mean(1)[:, 0, 1:]
            else:
                maps = probs.mean(1)[:, 0, 1:]
    finally:
        model.train(was_training)
    g = model.config.vision.grid
    maps = maps.detach().float().reshape(-1, g, g)
    lo, hi = maps.min(), maps.max()
    return (maps - lo) / (hi - lo) if hi > lo else torch.zeros_like(maps)


@dataclass(frozen=True, eq=False)
class Explanation:
    """An explained video: the frames the model saw, their heat-maps, the scores."""

    source: str
    labels: tuple[str, ...]
    probs: torch.Tensor  # (C,)
    target: int  # the explained label's index
    method: str
    frames: torch.Tensor  # uint8 (T, S, S, 3): the model's input, de-normalised
    heatmaps: torch.Tensor  # float (T, g, g) in [0, 1]
    times: tuple[float, ...] | None = None  # seconds of each frame (files), else None

    @property
    def label(self) -> str:
        return self.labels[self.target]

    def overlays(self, tile: int | None = None) -> list[torch.Tensor]:
        """Per frame: heat-map (bilinear up-sampling) over the frame, uint8 (P, P, 3), P =
        ``tile`` (default max(S, 128), nearest-neighbour scaling of the frame)."""
        size = tile or max(self.frames.shape[1], 128)
        frames = _scale(self.frames, size)
        heat = F.interpolate(self.heatmaps[:, None], size=(size, size), mode="bilinear",
                             align_corners=False)[:, 0].clamp(0, 1)
        return [overlay(f, h) for f, h in zip(frames, heat, strict=True)]

    def captions(self) -> list[str]:
        """Per frame: ``"t = 1.23 s"`` (files) or ``"frame i/T"`` (arrays)."""
        t = len(self.frames)
        if self.times is not None:
            return [f"t = {s:.2f} s" for s in self.times]
        return [f"frame {i + 1}/{t}" for i in range(t)]

    def save(self, out_dir: str | Path, stem: str | None = None,
             tile: int | None = None, topk: int = 5) -> dict[str, Path]:
        """Write ``<stem>.explain.png`` (:func:`claver.figures.explain_figure`: frames with
        their times, heat-maps with a colour bar, top-``topk`` bars) and
        ``<stem>.explain.gif`` (the heat-map overlays, captioned with their times)."""
        from claver.figures import explain_figure

        out = Path(out_dir)
        stem = stem or (Path(self.source).stem if not self.source.startswith("<") else "video")
        return {"png": explain_figure(self, out / f"{stem}.explain.png", topk, tile),
                "gif": save_gif(out / f"{stem}.explain.gif", self.overlays(tile), 250,
                                self.captions())}


def _scale(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Nearest-neighbour resize of uint8 (T, S, S, 3) to (T, size, size, 3)."""
    if frames.shape[1] == size:
        return frames
    x = F.interpolate(frames.permute(0, 3, 1, 2).float(), size=(size, size), mode="nearest")
    return x.to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def mask_image(num_frames: int, tokens_per_frame: int, mode: str = "kmt",
               cell: int | None = None) -> torch.Tensor:
    """Picture of a Kronecker mask: uint8 (N c, N c, 3), N = T L, ``cell`` px per entry.

    White: may attend; dark grey: blocked; a query token's own entry (the diagonal) is
    orange; thin blue lines separate frames. Rows are query tokens (t, l) frame-major.
    """
    from claver.models.kronecker import kronecker_mask

    m = kronecker_mask(num_frames, tokens_per_frame, mode)
    n = m.shape[0]
    cell = cell or max(1, 480 // n)
    img = torch.where(m[..., None], torch.tensor([250, 250, 250], dtype=torch.uint8),
                      torch.tensor([60, 60, 60], dtype=torch.uint8))
    img[torch.arange(n), torch.arange(n)] = torch.tensor([255, 140, 0], dtype=torch.uint8)
    img = img.repeat_interleave(cell, 0).repeat_interleave(cell, 1)
    if cell >= 3:
        for t in range(1, num_frames):
            edge = t * tokens_per_frame * cell
            img[edge - 1:edge, :] = torch.tensor([40, 90, 220], dtype=torch.uint8)
            img[:, edge - 1:edge] = torch.tensor([40, 90, 220], dtype=torch.uint8)
    return img


def explain_with(predictor: Any, video: Any, *, label: str | None = None,
                 method: str = "grad-attention") -> Explanation:
    """Heat-maps of one video with a :class:`claver.zeroshot.Predictor` that has labels."""
    items, single = as_items(video)
    if not single:
        raise ValueError(f"explain takes one video, got {len(items)}")
    if predictor.labels is None:
        raise ValueError("the predictor has no labels; pass labels first")
    name = source_name(items[0], 0)
    clip, times = _load_with_times(predictor.preprocess, items[0], name)
    clip = clip[None].to(predictor.device)
    probs = predictor.probs_from_features(predictor.video_features(clip))[0]
    target = int(probs.argmax()) if label is None else _index(predictor.labels, label)
    maps = attention_maps(predictor.model, clip, predictor.text_features, target, method)
    return Explanation(name, predictor.labels, probs, target, method,
                       predictor.preprocess.display(clip[0]), maps.cpu(), times)


def _load_with_times(pre: Preprocess, item: Any, name: str
                     ) -> tuple[torch.Tensor, tuple[float, ...] | None]:
    """Normalised clip (T, 3, S, S) as :meth:`Preprocess.load` makes it, and the time in
    seconds of each frame (index / frame rate) for files (None for arrays)."""
    if not isinstance(item, FILE_TYPES):
        return pre.load(item, name), None
    with VideoReader(item, pre.backend, short_side=pre.short_side) as reader:
        info = reader.info
        indices = pre.indices(info.num_frames)
        frames = reader.get_frames(indices)
    rate = info.num_frames / info.duration if info.duration > 0 else info.fps
    times = tuple(i / rate for i in indices) if rate and rate > 0 else None
    return pre.normalize(pre.crop(frames)), times


def explain(video: Any, labels: Sequence[str], model: Any = None, *, label: str | None = None,
            method: str = "grad-attention", template: str | None = None,
            templates: Sequence[str] | None = None, descriptions: Any = None,
            preprocess: Preprocess | None = None, device: str | None = None,
            allow_unverified: bool = False) -> Explanation:
    """Heat-maps of one video for ``label`` (default: the predicted label).

    ``video``, ``model``, ``template(s)`` and ``descriptions`` as for :func:`claver.predict`.
    """
    from claver.pretrained import resolve_model
    from claver.zeroshot import Predictor

    if template is not None and templates is not None:
        raise ValueError("pass template=... or templates=[...], not both")
    pred = Predictor(resolve_model(model, allow_unverified=allow_unverified), labels,
                     templates=[template] if template else templates,
                     descriptions=descriptions, preprocess=preprocess, device=device)
    return explain_with(pred, video, label=label, method=method)


def _index(labels: Sequence[str], label: str) -> int:
    try:
        return list(labels).index(label)
    except ValueError:
        raise ValueError(f"label {label!r} is not one of the labels {list(labels)}") from None
