"""Small image writers and colour maps for visualisations (PNG, animated GIF), no Pillow.

Images are uint8 arrays or tensors of shape (H, W, 3), RGB. :func:`write_png` writes an
8-bit RGB PNG (zlib from the standard library); :func:`write_gif` an animated GIF89a that
loops forever, with a fixed 252-colour palette (6 x 7 x 6 levels of R, G, B) and LZW codes
written by :func:`lzw_encode`. Fixed palettes are coarse but deterministic, which is what
tests and side-by-side comparisons want.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = ["colorize", "lzw_encode", "overlay", "quantize", "to_uint8_image", "write_gif",
           "write_png"]

# Control points of the heat-map colour scale (value -> RGB in [0, 1]): dark blue through
# cyan, green and yellow to dark red.
_HEAT_STOPS = (
    (0.00, (0.05, 0.03, 0.35)),
    (0.25, (0.00, 0.45, 0.95)),
    (0.50, (0.15, 0.85, 0.55)),
    (0.75, (1.00, 0.80, 0.00)),
    (1.00, (0.70, 0.00, 0.00)),
)
_LEVELS = (6, 7, 6)  # palette levels of R, G, B (6 * 7 * 6 = 252 colours)


def to_uint8_image(image: np.ndarray | torch.Tensor, name: str = "image") -> np.ndarray:
    """Check and convert an (H, W, 3) uint8 image to a C-contiguous numpy array."""
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"{name}: expected a uint8 RGB image of shape (H, W, 3), got "
                         f"{array.dtype} {tuple(array.shape)}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{name}: empty image {tuple(array.shape)}")
    return np.ascontiguousarray(array)


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def write_png(path: str | Path, image: np.ndarray | torch.Tensor) -> Path:
    """Write an (H, W, 3) uint8 RGB image as a PNG file (filter 0 on every row)."""
    array = to_uint8_image(image, str(path))
    h, w, _ = array.shape
    rows = np.concatenate([np.zeros((h, 1), np.uint8), array.reshape(h, w * 3)], axis=1)
    png = (b"\x89PNG\r\n\x1a\n"
           + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
           + _chunk(b"IEND", b""))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path


def palette() -> np.ndarray:
    """The fixed GIF palette: (256, 3) uint8; entries 252..255 are black (unused)."""
    r, g, b = (np.round(np.arange(n) * 255 / (n - 1)).astype(np.uint8) for n in _LEVELS)
    grid = np.stack(np.meshgrid(r, g, b, indexing="ij"), -1).reshape(-1, 3)
    return np.concatenate([grid, np.zeros((256 - len(grid), 3), np.uint8)])


def quantize(image: np.ndarray) -> np.ndarray:
    """Palette indices (H, W) uint8 of an (H, W, 3) uint8 image (nearest level per channel)."""
    levels = np.array(_LEVELS)
    q = np.rint(image.astype(np.float32) * (levels - 1) / 255).astype(np.int64)
    return (q[..., 0] * levels[1] * levels[2] + q[..., 1] * levels[2] + q[..., 2]).astype(np.uint8)


def lzw_encode(indices: bytes, min_code_size: int = 8) -> bytes:
    """GIF's variable-width LZW code stream (LSB-first bit packing) of palette indices.

    Codes start ``min_code_size + 1`` bits wide; a decoder widens them when its next free
    code reaches a power of two, one entry behind the encoder, so the width of the ``j``-th
    code after a clear is ``bit_length(eoi + j)``. The table is reset (clear code) before it
    reaches GIF's 4096-entry limit.
    """
    clear, eoi = 1 << min_code_size, (1 << min_code_size) + 1
    out = bytearray()
    acc = nbits = 0

    def emit(code: int, width: int) -> None:
        nonlocal acc, nbits
        acc |= code << nbits
        nbits += width
        while nbits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8

    def width_of(j: int) -> int:
        return max(min_code_size + 1, (eoi + j).bit_length())

    table: dict[tuple[int, int], int] = {}
    next_code, j = eoi + 1, 0
    emit(clear, min_code_size + 1)
    prefix = -1
    for value in indices:
        if prefix < 0:
            prefix = value
            continue
        code = table.get((prefix, value))
        if code is not None:
            prefix = code
            continue
        emit(prefix, width_of(j))
        j += 1
        table[(prefix, value)] = next_code
        next_code += 1
        prefix = value
        if next_code >= 4000:  # reset well before the 12-bit limit
            emit(clear, width_of(j))
            table.clear()
            next_code, j = eoi + 1, 0
    if prefix >= 0:
        emit(prefix, width_of(j))
        j += 1
    emit(eoi, width_of(j))
    if nbits:
        out.append(acc & 0xFF)
    return bytes(out)


def _sub_blocks(data: bytes) -> bytes:
    parts = [bytes([len(data[i:i + 255])]) + data[i:i + 255] for i in range(0, len(data), 255)]
    return b"".join(parts) + b"\x00"


def write_gif(path: str | Path, frames: Sequence[np.ndarray | torch.Tensor],
              duration_ms: int = 250) -> Path:
    """Write (H, W, 3) uint8 frames of one size as an animated GIF that loops forever."""
    if not frames:
        raise ValueError(f"{path}: no frames to write")
    arrays = [to_uint8_image(f, f"{path} frame {i}") for i, f in enumerate(frames)]
    h, w, _ = arrays[0].shape
    for i, a in enumerate(arrays):
        if a.shape != arrays[0].shape:
            raise ValueError(f"{path}: frame {i} has shape {a.shape}, frame 0 {arrays[0].shape}")
    if w > 65535 or h > 65535:
        raise ValueError(f"{path}: {w}x{h} is too large for a GIF")
    delay = max(1, round(duration_ms / 10))
    blob = bytearray(b"GIF89a" + struct.pack("<HHBBB", w, h, 0xF7, 0, 0))
    blob += palette().tobytes()
    blob += b"\x21\xff\x0bNETSCAPE2.0\x03\x01" + struct.pack("<H", 0) + b"\x00"  # loop forever
    for a in arrays:
        blob += b"\x21\xf9\x04\x00" + struct.pack("<H", delay) + b"\x00\x00"
        blob += b"\x2c" + struct.pack("<HHHHB", 0, 0, w, h, 0)
        blob += b"\x08" + _sub_blocks(lzw_encode(quantize(a).tobytes(), 8))
    blob += b"\x3b"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(blob))
    return path


def colorize(values: torch.Tensor) -> torch.Tensor:
    """Heat-map colours of values in [0, 1]: (...,) float -> (..., 3) uint8."""
    v = values.float().clamp(0, 1)
    xs = torch.tensor([s[0] for s in _HEAT_STOPS])
    cs = torch.tensor([s[1] for s in _HEAT_STOPS])
    k = torch.bucketize(v, xs[1:-1])  # segment index 0..len-2
    t = ((v - xs[k]) / (xs[k + 1] - xs[k]))[..., None]
    rgb = cs[k] * (1 - t) + cs[k + 1] * t
    return (rgb * 255).round().clamp(0, 255).to(torch.uint8)


def overlay(frame: torch.Tensor, heat: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Blend an (H, W, 3) uint8 frame with the colours of an (H, W) heat-map in [0, 1]."""
    colours = colorize(heat).float()
    return (frame.float() * (1 - alpha) + colours * alpha).round().clamp(0, 255).to(torch.uint8)
