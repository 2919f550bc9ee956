"""CLAVER: CLIP's ViT + Kronecker-mask temporal blocks (KMT / KMCT).

Visual path for a video (B, T, 3, S, S): every frame through all spatial CLIP blocks ->
``temporal_embedding`` (1, T, width) added to every token of frame t -> ``layers // 3``
Kronecker temporal blocks over the frame-major sequence of T·L tokens -> per-frame CLS ->
``ln_post`` -> ``@ proj`` -> L2-normalise each frame -> mean over T (not re-normalised).
Parameter names follow the official checkpoints (``visual.transformer_t.resblocks.M.*``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from claver.models.clip import VisionTransformer
from claver.models.config import ModelConfig
from claver.models.kronecker import KroneckerTransformer
from claver.models.video import VideoCLIP


class KroneckerVisionTransformer(VisionTransformer):
    """CLIP's ViT with a temporal embedding and Kronecker temporal blocks on top."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config.vision, config.embed_dim)
        w = config.vision.width
        self.num_frames = config.num_frames
        self.temporal_embedding = nn.Parameter(torch.empty(1, config.num_frames, w))
        nn.init.trunc_normal_(self.temporal_embedding, std=0.02)
        self.transformer_t = KroneckerTransformer(
            w, config.num_temporal_layers, config.vision.heads, config.mask
        )

    def frame_tokens(self, video: torch.Tensor) -> torch.Tensor:
        """Video (B, T, 3, S, S) -> tokens (B, T, L, width) after the temporal blocks."""
        b, t = video.shape[:2]
        x = self.tokens(video.flatten(0, 1))  # (B·T, L, W)
        x = x.view(b, t, *x.shape[1:]) + self.temporal_embedding.to(x.dtype)[:, :, None, :]
        l = x.shape[2]
        x = self.transformer_t(x.reshape(b, t * l, -1), t)
        return x.view(b, t, l, -1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Video (B, T, 3, S, S) -> per-frame projected CLS features (B, T, E)."""
        return self.project(self.frame_tokens(video)[:, :, 0])


class CLAVER(VideoCLIP):
    """CLAVER video-text model. ``model(video, text)`` -> logits (B, A, C)."""

    def build_visual(self, config: ModelConfig) -> nn.Module:
        return KroneckerVisionTransformer(config)

    def frame_features(self, video: torch.Tensor) -> torch.Tensor:
        return self.visual(video)

    def pool(self, frames: torch.Tensor) -> torch.Tensor:
        return F.normalize(frames, dim=-1).mean(dim=1)
