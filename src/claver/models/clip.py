"""CLIP image and text towers (ViT), with OpenAI's parameter names.

Blocks are pre-LN with QuickGELU MLPs; attention runs through
``F.scaled_dot_product_attention`` on batch-first ``(B, L, D)`` tensors. Parameter names
match OpenAI's checkpoints (``attn.in_proj_weight``, ``mlp.c_fc`` ...), so their state
dicts load without renaming.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from claver.models.config import ModelConfig, TextConfig, VisionConfig


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 (stable when the model runs in fp16/bf16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        out = F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps)
        return out.to(x.dtype)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def clip_mlp(width: int) -> nn.Sequential:
    """CLIP's MLP: ``c_fc`` (width → 4·width), QuickGELU, ``c_proj`` (4·width → width)."""
    return nn.Sequential(
        OrderedDict(
            [("c_fc", nn.Linear(width, 4 * width)), ("gelu", QuickGELU()),
             ("c_proj", nn.Linear(4 * width, width))]
        )
    )


class Attention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameter names.

    ``attn_mask``: boolean, True = may attend (SDPA convention), broadcastable to (L, L).
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.normal_(self.in_proj_weight, std=width**-0.5)
        nn.init.zeros_(self.out_proj.bias)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        """x (B, L, D) -> (B, L, D)."""
        b, n, d = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = Attention(width, heads)
        self.ln_1 = LayerNorm(width)
        self.mlp = clip_mlp(width)
        self.ln_2 = LayerNorm(width)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), attn_mask=attn_mask, is_causal=is_causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of blocks (``resblocks.N``) with optional gradient checkpointing."""

    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.width = width
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))
        self.grad_checkpointing = False
        init_blocks(self.resblocks, width, layers)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        return run_blocks(self.resblocks, x, self.grad_checkpointing, attn_mask, is_causal)


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, grad_checkpointing: bool,
               *args: object) -> torch.Tensor:
    for block in blocks:
        if grad_checkpointing and torch.is_grad_enabled():
            x = checkpoint(block, x, *args, use_reentrant=False)
        else:
            x = block(x, *args)
    return x


def init_blocks(blocks: nn.ModuleList, width: int, layers: int) -> None:
    """CLIP's initialisation for a stack of blocks (attention, output and MLP projections)."""
    proj_std = width**-0.5 * (2 * max(layers, 1)) ** -0.5
    for block in blocks:
        for name, p in block.named_parameters():
            if name.endswith("in_proj_weight"):
                nn.init.normal_(p, std=width**-0.5)
            elif name.endswith(("out_proj.weight", "c_proj.weight")):
                nn.init.normal_(p, std=proj_std)
            elif name.endswith("c_fc.weight"):
                nn.init.normal_(p, std=(2 * width) ** -0.5)


class VisionTransformer(nn.Module):
    """CLIP's image tower. ``forward`` maps images (N, 3, H, W) to features (N, E)."""

    def __init__(self, cfg: VisionConfig, embed_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        scale = w**-0.5
        self.conv1 = nn.Conv2d(3, w, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(w))
        self.positional_embedding = nn.Parameter(scale * torch.randn(cfg.num_tokens, w))
        self.ln_pre = LayerNorm(w)
        self.transformer = Transformer(w, cfg.layers, cfg.heads)
        self.ln_post = LayerNorm(w)
        self.proj = nn.Parameter(scale * torch.randn(w, embed_dim))

    def check_images(self, x: torch.Tensor) -> None:
        s = self.cfg.image_size
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != s or x.shape[3] != s:
            raise ValueError(
                f"expected images of shape (N, 3, {s}, {s}) for this model "
                f"(image_size={s}), got {tuple(x.shape)}; resize/crop frames to {s}x{s}"
            )

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W) -> tokens (N, 1 + grid², width) after the spatial blocks."""
        self.check_images(x)
        x = self.conv1(x.to(self.conv1.weight.dtype))  # (N, W, g, g)
        x = x.flatten(2).transpose(1, 2)  # (N, g², W)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        return self.transformer(self.ln_pre(x))

    def project(self, cls_tokens: torch.Tensor) -> torch.Tensor:
        """CLS tokens (..., width) -> ``ln_post`` -> ``@ proj`` -> (..., E)."""
        return self.ln_post(cls_tokens) @ self.proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.tokens(x)[:, 0])


class CLIP(nn.Module):
    """CLIP image + text towers with OpenAI's key layout (text parts at the top level).

    ``encode_image`` (N, 3, S, S) -> (N, E); ``encode_text`` (N, context_length) -> (N, E);
    both L2-normalised unless ``normalize=False``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.visual = self.build_visual(config)
        t: TextConfig = config.text
        self.token_embedding = nn.Embedding(t.vocab_size, t.width)
        self.positional_embedding = nn.Parameter(torch.empty(t.context_length, t.width))
        self.transformer = Transformer(t.width, t.layers, t.heads)
        self.ln_final = LayerNorm(t.width)
        self.text_projection = nn.Parameter(torch.empty(t.width, config.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=t.width**-0.5)

    def build_visual(self, config: ModelConfig) -> nn.Module:
        return VisionTransformer(config.vision, config.embed_dim)

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for module in self.modules():
            if hasattr(module, "grad_checkpointing"):
                module.grad_checkpointing = enable

    def check_tokens(self, tokens: torch.Tensor) -> None:
        ctx = self.config.text.context_length
        if tokens.dim() != 2 or tokens.shape[1] != ctx:
            raise ValueError(
                f"expected text tokens of shape (N, {ctx}) from claver.tokenize, "
                f"got {tuple(tokens.shape)}"
            )
        if tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"expected integer token ids, got dtype {tokens.dtype}")

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        x = self.visual(images)
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Token ids (N, context_length) -> features (N, E) at the end-of-text token."""
        self.check_tokens(tokens)
        eot = tokens.argmax(dim=-1)  # the end-of-text id is the largest id in the vocabulary
        # Attention is causal, so the feature at the end-of-text token depends only on the
        # tokens before it: the padding after the longest text is dropped (same result, and
        # e.g. ~8x less work for short label phrases than all 77 positions).
        n = int(eot.max()) + 1 if len(tokens) else tokens.shape[1]
        x = self.token_embedding(tokens[:, :n]).to(self.dtype)
        x = x + self.positional_embedding[:n].to(self.dtype)
        x = self.ln_final(self.transformer(x, is_causal=True))
        x = x[torch.arange(x.shape[0], device=x.device), eot] @ self.text_projection
        return F.normalize(x, dim=-1) if normalize else x

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Image-text logits (N_images, N_texts) scaled by ``exp(logit_scale)``."""
        img = self.encode_image(images)
        txt = self.encode_text(tokens)
        return self.logit_scale.exp() * img @ txt.t()
