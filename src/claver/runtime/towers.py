"""The two towers of a video-text model as stand-alone modules (what ONNX export traces).

- :func:`video_embedding`: normalised video (B, T, 3, S, S) -> float32 embedding (B, E), as
  matched against text: ``model.encode_video`` for CLAVER/ActionCLIP (CLAVER's is a mean of
  unit vectors, not re-normalised), the normalised mean of frame features for plain CLIP
  (ActionCLIP meanP).
- :class:`VideoTower` wraps it; :class:`TextTower` maps token ids (N, n) (n <= context
  length, anything after the end-of-text token ignored) to L2-normalised features (N, E).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def video_embedding(model: nn.Module, video: torch.Tensor) -> torch.Tensor:
    """Video (B, T, 3, S, S) -> float32 (B, E), the embedding matched against text."""
    if hasattr(model, "encode_video"):
        return model.encode_video(video).float()
    b, t = video.shape[:2]  # plain CLIP: mean of frame features (ActionCLIP meanP)
    frames = model.encode_image(video.flatten(0, 1), normalize=False)
    return F.normalize(frames.view(b, t, -1).float().mean(1), dim=-1)


class VideoTower(nn.Module):
    """``forward(video (B, T, 3, S, S) float32) -> (B, E) float32`` (:func:`video_embedding`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return video_embedding(self.model, video.to(self.model.dtype))


class TextTower(nn.Module):
    """``forward(tokens (N, n) int64) -> (N, E)`` L2-normalised text features.

    The same computation as ``CLIP.encode_text`` without its data-dependent truncation (the
    caller passes tokens already cut after the longest text's end-of-text token, which gives
    the same features because the text attention is causal).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        m = self.model
        n = tokens.shape[1]
        x = m.token_embedding(tokens).to(m.dtype) + m.positional_embedding[:n].to(m.dtype)
        x = m.ln_final(m.transformer(x, is_causal=True))
        eot = tokens.argmax(dim=-1)  # the end-of-text id is the largest in the vocabulary
        x = x[torch.arange(x.shape[0], device=x.device), eot] @ m.text_projection
        return F.normalize(x.float(), dim=-1)


def cut_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """Token ids (N, ctx) -> (N, n): the columns up to the longest text's end-of-text."""
    if len(tokens) == 0:
        return tokens
    return tokens[:, :int(tokens.argmax(dim=-1).max()) + 1]
