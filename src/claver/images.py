"""Raster helpers for visualisations: heat-map colours, overlays, animated GIFs (Pillow).

Images are uint8 arrays or tensors of shape (H, W, 3), RGB. Heat-maps use matplotlib's
perceptually uniform ``inferno`` colour map (:data:`HEAT_CMAP`), the same one the figures'
colour bars show; :func:`save_gif` writes an animated GIF that loops forever with Pillow.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from claver.fileio import atomic_write_bytes

__all__ = ["HEAT_CMAP", "colorize", "overlay", "save_gif", "to_uint8_image"]

HEAT_CMAP = matplotlib.colormaps["inferno"]  # 0: black-purple ... 1: pale yellow


def to_uint8_image(image: np.ndarray | torch.Tensor, name: str = "image") -> np.ndarray:
    """Check and convert an (H, W, 3) uint8 image to a C-contiguous numpy array."""
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"{name}: expected a uint8 RGB image of shape (H, W, 3), got "
                         f"{array.dtype} {tuple(array.shape)}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{name}: empty image {tuple(array.shape)}")
    return np.ascontiguousarray(array)


def colorize(values: torch.Tensor) -> torch.Tensor:
    """Heat-map colours (:data:`HEAT_CMAP`) of values in [0, 1]: (...,) float -> (..., 3)
    uint8."""
    v = values.detach().float().clamp(0, 1).cpu().numpy()
    rgba = HEAT_CMAP(v, bytes=True)  # (..., 4) uint8
    return torch.from_numpy(np.ascontiguousarray(rgba[..., :3]))


def overlay(frame: torch.Tensor, heat: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Blend an (H, W, 3) uint8 frame with the colours of an (H, W) heat-map in [0, 1]:
    ``(1 - alpha) frame + alpha colour``, rounded."""
    colours = colorize(heat).float()
    return (frame.float() * (1 - alpha) + colours * alpha).round().clamp(0, 255).to(torch.uint8)


def _caption(image: Image.Image, text: str) -> None:
    """Write ``text`` in white on a dark strip along the image's top edge (in place)."""
    draw = ImageDraw.Draw(image)
    size = max(8, image.height // 12)
    try:
        font: ImageFont.ImageFont | ImageFont.FreeTypeFont = ImageFont.load_default(size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        font = ImageFont.load_default()
    box = draw.textbbox((3, 2), text, font=font)
    draw.rectangle((0, 0, box[2] + 3, box[3] + 2), fill=(0, 0, 0))
    draw.text((3, 2), text, fill=(255, 255, 255), font=font)


def save_gif(path: str | Path, frames: Sequence[np.ndarray | torch.Tensor],
             duration_ms: int = 250, captions: Sequence[str] | None = None) -> Path:
    """Write (H, W, 3) uint8 frames of one size as an animated GIF that loops forever;
    ``captions``: one text per frame, drawn along its top edge."""
    if not frames:
        raise ValueError(f"{path}: no frames to write")
    arrays = [to_uint8_image(f, f"{path} frame {i}") for i, f in enumerate(frames)]
    for i, a in enumerate(arrays):
        if a.shape != arrays[0].shape:
            raise ValueError(f"{path}: frame {i} has shape {a.shape}, frame 0 {arrays[0].shape}")
    if captions is not None and len(captions) != len(arrays):
        raise ValueError(f"{path}: {len(captions)} captions for {len(arrays)} frames")
    images = [Image.fromarray(a) for a in arrays]
    for image, text in zip(images, captions or [], strict=False):
        _caption(image, text)
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:],
                   duration=max(10, int(duration_ms)), loop=0, disposal=1)
    return atomic_write_bytes(path, buf.getvalue())
