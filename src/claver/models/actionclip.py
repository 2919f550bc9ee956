"""ActionCLIP: CLIP towers + a temporal fusion head over projected per-frame features.

Heads (``ModelConfig.fusion``), each mapping (B, T, E) -> (B, E), normalised afterwards:

- ``meanP``: mean over frames.
- ``Conv1D``: depthwise temporal conv (k=3, no bias) over the *time* axis, shift-initialised
  (1/4 of the channels from t-1, 1/4 from t+1, 1/2 identity), + residual, mean. (The
  original code views (B, T, C) as (B, C, T) without transposing; we convolve over time.)
- ``LSTM``: one LSTM layer, + residual, mean.
- ``Transf``: frame position embedding + CLIP-style blocks, + residual, mean.
- ``Transf_cls``: CLS token + position embedding + post-norm encoder layers, CLS output.

Parameter names follow the original ``visual_prompt`` module, under ``fusion.``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from claver.models.clip import Transformer
from claver.models.config import ModelConfig
from claver.models.video import VideoCLIP


class MeanFusion(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


class Conv1DFusion(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.shift = nn.Conv1d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=False)
        weight = torch.zeros(dim, 1, 3)
        q = dim // 4
        weight[:q, 0, 0] = 1.0  # output t reads t-1
        weight[q : dim - q, 0, 1] = 1.0  # identity
        weight[dim - q :, 0, 2] = 1.0  # output t reads t+1
        with torch.no_grad():
            self.shift.weight.copy_(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.shift(x.transpose(1, 2).float()).transpose(1, 2)  # conv over T
        return (y.to(x.dtype) + x).mean(dim=1)


class LSTMFusion(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lstm_visual = nn.LSTM(dim, dim, num_layers=1, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm_visual(x.float())
        return (y.to(x.dtype) + x).mean(dim=1)


class TransfFusion(nn.Module):
    def __init__(self, dim: int, num_frames: int, layers: int, heads: int) -> None:
        super().__init__()
        self.frame_position_embeddings = nn.Embedding(num_frames, dim)
        nn.init.normal_(self.frame_position_embeddings.weight, std=0.02)
        self.transformer = Transformer(dim, layers, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = self.frame_position_embeddings.weight[: x.shape[1]].to(x.dtype)
        return (self.transformer(x + pos) + x).mean(dim=1)


class TransfClsFusion(nn.Module):
    def __init__(self, dim: int, num_frames: int, layers: int, heads: int) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_frames + 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, batch_first=True)
        self.transformer_enc = nn.TransformerEncoder(
            layer, layers, norm=nn.LayerNorm(dim), enable_nested_tensor=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls = self.cls_token.to(x.dtype).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed.to(x.dtype)
        return self.transformer_enc(x)[:, 0]


def build_fusion(config: ModelConfig) -> nn.Module:
    dim, t = config.embed_dim, config.num_frames
    if config.fusion == "meanP":
        return MeanFusion()
    if config.fusion == "Conv1D":
        return Conv1DFusion(dim)
    if config.fusion == "LSTM":
        return LSTMFusion(dim)
    if config.fusion == "Transf":
        return TransfFusion(dim, t, config.fusion_layers, config.num_fusion_heads)
    return TransfClsFusion(dim, t, config.fusion_layers, config.num_fusion_heads)


class ActionCLIP(VideoCLIP):
    """ActionCLIP video-text model. ``model(video, text)`` -> logits (B, A, C)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.fusion = build_fusion(config)

    def frame_features(self, video: torch.Tensor) -> torch.Tensor:
        b, t = video.shape[:2]
        return self.visual(video.flatten(0, 1)).view(b, t, -1)

    def pool(self, frames: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.fusion(frames), dim=-1)
