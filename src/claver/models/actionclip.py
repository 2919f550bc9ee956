"""ActionCLIP: CLIP towers + a temporal fusion head over projected per-frame features.

Heads (``ModelConfig.fusion``), each mapping (B, T, E) -> (B, E), normalised afterwards,
computing what the original ``visual_prompt`` module (sallymmx/ActionCLIP) computes:

- ``meanP``: mean over frames.
- ``Conv1D``: depthwise conv (k=3, no bias), shift-initialised (1/4 of the channels read
  t-1, 1/4 read t+1, 1/2 identity), + residual, mean. ``conv1d_layout="time"`` (new models)
  convolves over time; ``"original"`` (checkpoints of the original code) reproduces its
  ``view(B, C, T)`` of the (B, T, C) features without a transpose, so those weights compute
  what they were trained to compute.
- ``LSTM``: one LSTM layer, + residual, mean.
- ``Transf``: frame position embedding + 6 CLIP-style pre-LN blocks with TF-style
  LayerNorms (eps 1e-12), + residual, mean.
- ``Transf_cls``: CLS token + position embedding + 6 post-norm ``nn.TransformerEncoderLayer``
  (8 heads, feed-forward 2048, ReLU, dropout 0.1, eps 1e-5) + final LayerNorm, CLS output.

Fresh heads are initialised as in the original: Transf linears N(0, 0.02) with zero biases,
attention in-projections Xavier-uniform, position table N(0, 0.02); Transf_cls linears,
CLS token and position embedding ``normal().fmod(2) * 0.02`` (its ``trunc_normal_``).
Parameter names follow the original ``visual_prompt`` module, under ``fusion.``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from claver.models.clip import Transformer
from claver.models.config import ModelConfig
from claver.models.video import VideoCLIP

TRANSF_LN_EPS = 1e-12  # the original's TF-style LayerNorm in the Transf blocks
INIT_STD = 0.02


def fmod_normal_(tensor: torch.Tensor, std: float = INIT_STD) -> torch.Tensor:
    """The original's ``trunc_normal_``: ``normal(0, 1).fmod(2) * std`` (values in
    (-2 std, 2 std), folded rather than redrawn), in place."""
    with torch.no_grad():
        return tensor.normal_().fmod_(2).mul_(std)


class MeanFusion(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, E) -> (B, E)."""
        return x.mean(dim=1)


def shift_weight(dim: int) -> torch.Tensor:
    """The original shift initialisation (dim, 1, 3), with its exact channel slices."""
    weight = torch.zeros(dim, 1, 3)
    weight[: dim // 4, 0, 0] = 1.0  # output t reads t-1
    weight[dim // 4: dim // 4 + dim // 2, 0, 1] = 1.0  # identity
    weight[-dim // 4:, 0, 2] = 1.0  # output t reads t+1
    return weight


class Conv1DFusion(nn.Module):
    def __init__(self, dim: int, layout: str = "time") -> None:
        super().__init__()
        self.layout = layout
        self.shift = nn.Conv1d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=False)
        with torch.no_grad():
            self.shift.weight.copy_(shift_weight(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, E) -> (B, E)."""
        b, t, e = x.shape
        if self.layout == "original":  # (B, T, E) memory read as (B, E, T): no transpose
            y = self.shift(x.contiguous().view(b, e, t).float()).permute(0, 2, 1)
        else:
            y = self.shift(x.transpose(1, 2).float()).transpose(1, 2)  # conv over T
        return (y.to(x.dtype) + x).mean(dim=1)


class LSTMFusion(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lstm_visual = nn.LSTM(dim, dim, num_layers=1, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, E) -> (B, E)."""
        y, _ = self.lstm_visual(x.float())
        return (y.to(x.dtype) + x).mean(dim=1)


class TransfFusion(nn.Module):
    def __init__(self, dim: int, num_frames: int, layers: int, heads: int) -> None:
        super().__init__()
        self.frame_position_embeddings = nn.Embedding(num_frames, dim)
        self.transformer = Transformer(dim, layers, heads)
        for block in self.transformer.resblocks:
            block.ln_1.eps = block.ln_2.eps = TRANSF_LN_EPS
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The original ``init_weights``: embeddings and linears N(0, 0.02), biases 0,
        LayerNorms 1/0; the attention in-projection keeps ``nn.MultiheadAttention``'s
        Xavier-uniform weight and zero bias."""
        nn.init.normal_(self.frame_position_embeddings.weight, std=INIT_STD)
        for module in self.transformer.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=INIT_STD)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for block in self.transformer.resblocks:
            nn.init.xavier_uniform_(block.attn.in_proj_weight)
            nn.init.zeros_(block.attn.in_proj_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, E) -> (B, E)."""
        pos = self.frame_position_embeddings.weight[: x.shape[1]].to(x.dtype)
        return (self.transformer(x + pos) + x).mean(dim=1)


class TransfClsFusion(nn.Module):
    def __init__(self, dim: int, num_frames: int, layers: int, heads: int) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_frames + 1, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, batch_first=True)
        self.transformer_enc = nn.TransformerEncoder(
            layer, layers, norm=nn.LayerNorm(dim), enable_nested_tensor=False
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The original ``TAggregate`` init: position embedding, CLS token and every linear
        (attention output, feed-forward) ``normal().fmod(2) * 0.02`` with zero biases,
        LayerNorms 1/0; in-projections keep their Xavier-uniform weight and zero bias."""
        fmod_normal_(self.pos_embed)
        fmod_normal_(self.cls_token)
        for module in self.transformer_enc.modules():
            if isinstance(module, nn.Linear):
                fmod_normal_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, E) -> (B, E): the encoder output at the CLS token."""
        cls = self.cls_token.to(x.dtype).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed.to(x.dtype)
        return self.transformer_enc(x)[:, 0]


def build_fusion(config: ModelConfig) -> nn.Module:
    dim, t = config.embed_dim, config.num_frames
    if config.fusion == "meanP":
        return MeanFusion()
    if config.fusion == "Conv1D":
        return Conv1DFusion(dim, config.conv1d_layout)
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
