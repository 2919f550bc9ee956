"""Shared video-text interface of CLAVER and ActionCLIP."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from claver.models.clip import CLIP


class VideoCLIP(CLIP):
    """A CLIP whose image side sees videos (B, T, 3, S, S).

    Subclasses implement ``frame_features`` (per-frame projected features) and ``pool``
    (frames -> the video embedding used for matching).
    """

    def check_video(self, video: torch.Tensor) -> None:
        cfg = self.config
        t, s = cfg.num_frames, cfg.vision.image_size
        if video.dim() != 5 or video.shape[2] != 3:
            raise ValueError(
                f"expected a video batch of shape (B, T={t}, 3, {s}, {s}), "
                f"got {tuple(video.shape)}; add a batch dimension with video[None] "
                "and put channels before height/width"
            )
        if video.shape[1] != t:
            raise ValueError(
                f"this model was built for num_frames={t}, got a video with "
                f"{video.shape[1]} frames (shape {tuple(video.shape)}); sample {t} frames "
                f"or rebuild/load the model with num_frames={video.shape[1]}"
            )
        if video.shape[3] != s or video.shape[4] != s:
            raise ValueError(
                f"this model expects {s}x{s} frames, got {video.shape[3]}x{video.shape[4]} "
                f"(shape {tuple(video.shape)}); resize/crop frames to {s}x{s}"
            )
        if not video.is_floating_point():
            raise ValueError(
                f"expected a normalised float video, got dtype {video.dtype}; convert uint8 "
                "frames to float in [0, 1] and normalise with the model's mean/std"
            )

    def encode_frames(self, video: torch.Tensor) -> torch.Tensor:
        """Video (B, T, 3, S, S) -> per-frame projected features (B, T, E)."""
        self.check_video(video)
        return self.frame_features(video)

    def frame_features(self, video: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pool(self, frames: torch.Tensor) -> torch.Tensor:
        """Per-frame features (B, T, E) -> video embedding (B, E)."""
        raise NotImplementedError

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """Video (B, T, 3, S, S) -> the embedding (B, E) that is matched against text."""
        return self.pool(self.encode_frames(video))

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Single images (N, 3, S, S) through the image tower alone (no temporal parts)."""
        x = self.visual.project(self.visual.tokens(images)[:, 0])
        return F.normalize(x, dim=-1) if normalize else x

    def forward(self, video: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Video (B, T, 3, S, S) and text (A, C, ctx) -> logits (B, A, C).

        ``A`` text rows (templates, descriptions) per class, ``C`` classes. Text (C, ctx)
        gives logits (B, C). Float ``text`` is taken as precomputed normalised text features
        (A, C, E) or (C, E) (e.g. a frozen, cached text tower).
        """
        if text.dim() not in (2, 3) or (not text.is_floating_point()
                                         and text.shape[-1] != self.config.text.context_length):
            raise ValueError(
                f"expected text tokens of shape (A, C, {self.config.text.context_length}) "
                f"or (C, {self.config.text.context_length}), got {tuple(text.shape)}"
            )
        v = self.encode_video(video)
        if text.is_floating_point():  # precomputed, normalised text features (A, C, E)
            t = text
        else:
            t = self.encode_text(text.reshape(-1, text.shape[-1])).reshape(*text.shape[:-1], -1)
        return self.logit_scale.exp() * torch.einsum("be,...ce->b...c", v, t.to(v.dtype))
