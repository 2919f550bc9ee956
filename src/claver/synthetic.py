"""A synthetic motion dataset (``claver demo``'s benchmark) and the recipe that trains on it.

Each class is a (shape, motion) pair: a ``square``, ``disc`` or ``triangle`` moving
left/right/up/down, rotating clockwise/anticlockwise, or growing/shrinking, drawn with numpy
(anti-aliased signed-distance shapes) over a textured background with static distractors,
and written as small h264 mp4 files with PyAV (every frame a keyframe, so the codec leaves
no trace of frame order).

Motions come in partners that are each other's time reversal (``left``/``right``,
``up``/``down``, ``cw``/``ccw``, ``grow``/``shrink``): trajectories are anchored (``right``
sweeps from near the left edge to near the right edge, ``left`` the reverse, start angles are
uniform over the shape's symmetry), so the *set* of frames of a clip has the same
distribution for both partners and only the order of frames tells them apart. An
order-blind model (ActionCLIP meanP) is at chance inside each pair; CLAVER's Kronecker
temporal attention is not.

Splits: ``train``/``val`` over :data:`DEFAULT_CLASSES`, and ``zero_shot`` over
:data:`DEFAULT_ZERO_SHOT`, (shape, motion) pairs never seen in training whose words all are
(e.g. squares move up/down only in the zero-shot split, but triangles move up/down in
training), so text can transfer. :func:`make_motion_dataset` writes the videos, the video
lists and label CSVs in claver's formats, the class descriptions and a manifest; it is
deterministic for a seed and cached. :func:`augment` applies flips and time reversal with the
labels swapped to match (:data:`HFLIP_PAIRS`, :data:`VFLIP_PAIRS`, :data:`REVERSE_PAIRS`).
:class:`claver.demo.DemoRecipe` is the training recipe measured on this data.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

GENERATOR_VERSION = 6
SHAPES = ("square", "disc", "triangle")
MOTIONS = ("left", "right", "up", "down", "cw", "ccw", "grow", "shrink")
AXES = {"left": "horizontal", "right": "horizontal", "up": "vertical", "down": "vertical",
        "cw": "rotation", "ccw": "rotation", "grow": "scale", "shrink": "scale"}
ROTATION_SYMMETRY = {"square": 90.0, "triangle": 120.0, "disc": 0.0}  # degrees; 0: invisible

# Label swaps that keep an augmented clip's label true (pairs of motions).
HFLIP_PAIRS = (("left", "right"), ("cw", "ccw"))  # mirror left-right
VFLIP_PAIRS = (("up", "down"), ("cw", "ccw"))  # mirror top-bottom
REVERSE_PAIRS = (("left", "right"), ("up", "down"), ("cw", "ccw"), ("grow", "shrink"))

# Words of a class name, and short descriptions ({shape} filled in). Every motion has the same
# number of descriptions, so all classes get the same number of text rows.
MOTION_PHRASES = {
    "left": "moving left", "right": "moving right", "up": "moving up", "down": "moving down",
    "cw": "rotating clockwise", "ccw": "rotating anticlockwise", "grow": "growing",
    "shrink": "shrinking",
}
DESCRIPTIONS = {
    "left": ("a {shape} slides from the right side to the left side.",
             "the {shape} travels leftwards across the picture."),
    "right": ("a {shape} slides from the left side to the right side.",
              "the {shape} travels rightwards across the picture."),
    "up": ("a {shape} slides from the bottom to the top.",
           "the {shape} travels upwards across the picture."),
    "down": ("a {shape} slides from the top to the bottom.",
             "the {shape} travels downwards across the picture."),
    "cw": ("a {shape} swings round clockwise.",
           "the {shape} turns like the hands of a clock."),
    "ccw": ("a {shape} swings round anticlockwise.",
            "the {shape} turns against the hands of a clock."),
    "grow": ("a {shape} gets bigger and bigger.",
             "the small {shape} expands until it is large."),
    "shrink": ("a {shape} gets smaller and smaller.",
               "the large {shape} contracts until it is small."),
}
TEMPLATES = ("{}", "a video of a {}.", "a {}.")


@dataclass(frozen=True, order=True)
class MotionClass:
    """One class: a shape doing a motion. ``name`` is e.g. ``"square moving left"``."""

    shape: str
    motion: str

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {self.shape!r}")
        if self.motion not in MOTIONS:
            raise ValueError(f"motion must be one of {MOTIONS}, got {self.motion!r}")
        if AXES[self.motion] == "rotation" and not ROTATION_SYMMETRY[self.shape]:
            raise ValueError(f"a {self.shape} rotating is invisible; pick another shape")

    @property
    def name(self) -> str:
        return f"{self.shape} {MOTION_PHRASES[self.motion]}"

    @property
    def axis(self) -> str:
        return AXES[self.motion]

    @property
    def descriptions(self) -> tuple[str, ...]:
        return tuple(d.format(shape=self.shape) for d in DESCRIPTIONS[self.motion])

    def text_rows(self) -> list[str]:
        """Templates applied to the name, then the descriptions (same count for every class)."""
        return [t.format(self.name) for t in TEMPLATES] + list(self.descriptions)

    def swapped(self, pairs: Iterable[tuple[str, str]]) -> MotionClass:
        table = {a: b for a, b in pairs} | {b: a for a, b in pairs}
        return MotionClass(self.shape, table.get(self.motion, self.motion))


ClassLike = MotionClass | tuple[str, str] | str


def motion_class(value: ClassLike) -> MotionClass:
    """A :class:`MotionClass` from itself, ``(shape, motion)`` or a name/``shape-motion``."""
    if isinstance(value, MotionClass):
        return value
    if isinstance(value, tuple):
        return MotionClass(*value)
    for c in (MotionClass(s, m) for s in SHAPES for m in MOTIONS
              if AXES[m] != "rotation" or ROTATION_SYMMETRY[s]):
        if value in (c.name, f"{c.shape}-{c.motion}"):
            return c
    raise ValueError(f"unknown class {value!r}; write 'square moving left' or 'square-left'")


def _pairs(units: Iterable[tuple[str, tuple[str, str]]]) -> tuple[MotionClass, ...]:
    return tuple(MotionClass(s, m) for s, pair in units for m in pair)


_H, _V, _S = ("left", "right"), ("up", "down"), ("grow", "shrink")
# A Latin square over shapes x {horizontal, vertical, scale}. Train/val: 12 classes, 6
# direction pairs; every shape and every motion appears in them...
DEFAULT_CLASSES = _pairs([("square", _H), ("square", _S), ("triangle", _H), ("triangle", _V),
                          ("disc", _V), ("disc", _S)])
# ...but these 6 (shape, motion) combinations only in the zero-shot split. Rotation
# (cw/ccw) is available but not in the defaults: a tiny from-scratch CLAVER stays at chance
# on its direction within the demo's budget (see claver.demo.DemoRecipe).
DEFAULT_ZERO_SHOT = _pairs([("square", _V), ("triangle", _S), ("disc", _H)])


def swap_table(classes: Sequence[ClassLike], pairs: Iterable[tuple[str, str]]) -> list[int]:
    """Label permutation for an augmentation: ``table[label]`` is the augmented label.

    Raises ValueError when a swapped class is not in ``classes`` (the split is not closed
    under the augmentation).
    """
    cs = [motion_class(c) for c in classes]
    index = {c: i for i, c in enumerate(cs)}
    pairs = tuple(pairs)
    out = []
    for c in cs:
        s = c.swapped(pairs)
        if s not in index:
            raise ValueError(f"{c.name!r} maps to {s.name!r}, which is not one of the classes")
        out.append(index[s])
    return out


def augment(video: Any, label: int, rng: np.random.Generator, *,
            classes: Sequence[ClassLike] = DEFAULT_CLASSES, hflip: bool = True,
            vflip: bool = True, reverse: bool = True) -> tuple[Any, int]:
    """Random flips / time reversal of one clip (T, C, H, W), with the label swapped to match.

    Each enabled operation is applied with probability 0.5: ``hflip`` (left<->right,
    cw<->ccw), ``vflip`` (up<->down, cw<->ccw), ``reverse`` (frame order; every partner pair).
    Works on torch tensors and numpy arrays.
    """
    ops = [(hflip, -1, HFLIP_PAIRS), (vflip, -2, VFLIP_PAIRS), (reverse, 0, REVERSE_PAIRS)]
    for enabled, dim, pairs in ops:
        if enabled and rng.random() < 0.5:
            video = video.flip(dim) if hasattr(video, "flip") and not isinstance(
                video, np.ndarray) else np.flip(video, dim)
            label = swap_table(classes, pairs)[label]
    return video, label


def augment_batch(videos: Any, labels: Any, generator: Any, *,
                  classes: Sequence[ClassLike] = DEFAULT_CLASSES, hflip: bool = True,
                  vflip: bool = True, reverse: bool = True) -> tuple[Any, Any]:
    """:func:`augment` for a torch batch (B, T, C, H, W) + labels (B,), each clip drawn apart.

    ``generator`` is a ``torch.Generator``; returns new tensors.
    """
    import torch

    videos, labels = videos.clone(), labels.clone()
    ops = [(hflip, -1, HFLIP_PAIRS), (vflip, -2, VFLIP_PAIRS), (reverse, 1, REVERSE_PAIRS)]
    for enabled, dim, pairs in ops:
        if not enabled:
            continue
        pick = torch.rand(len(labels), generator=generator) < 0.5
        table = torch.tensor(swap_table(classes, pairs), device=labels.device)
        videos[pick] = videos[pick].flip(dim)
        labels = torch.where(pick.to(labels.device), table[labels], labels)
    return videos, labels


# --------------------------------------------------------------------------- drawing


def _sdf(shape: str, dx: np.ndarray, dy: np.ndarray, r: np.ndarray, angle: np.ndarray
         ) -> np.ndarray:
    """Signed distance (pixels, < 0 inside) of a shape of equal-area radius ``r``."""
    if shape in ("disc", "dot"):
        return np.hypot(dx, dy) - r
    if shape == "ring":
        return np.abs(np.hypot(dx, dy) - r) - 0.3 * r
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.886 * r  # side^2 = pi r^2
    if shape == "plus":
        arm = np.minimum(np.maximum(np.abs(u) - r, np.abs(v) - 0.3 * r),
                         np.maximum(np.abs(v) - r, np.abs(u) - 0.3 * r))
        return arm
    if shape == "triangle":  # equilateral, same area as the disc: inradius 0.778 r
        d = [np.cos(k) * u + np.sin(k) * v for k in (-np.pi / 2, np.pi / 6, 5 * np.pi / 6)]
        return np.maximum(np.maximum(d[0], d[1]), d[2]) - 0.778 * r
    raise ValueError(f"unknown shape {shape!r}")


def _coverage(shape: str, size: int, cx: Any, cy: Any, r: Any, angle: Any) -> np.ndarray:
    """Anti-aliased coverage (N, S, S) in [0, 1] for N placements (arrays of length N)."""
    cx, cy, r, angle = (np.asarray(a, dtype=np.float64).reshape(-1, 1, 1)
                        for a in (cx, cy, r, angle))
    grid = np.arange(size) + 0.5
    d = _sdf(shape, grid[None, None, :] - cx, grid[None, :, None] - cy, r, angle)
    return np.clip(0.5 - d, 0.0, 1.0)


def _upsample(cells: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of a (g, g, C) grid to (size, size, C)."""
    g = cells.shape[0]
    pos = np.linspace(0, g - 1, size)
    lo = np.clip(np.floor(pos).astype(int), 0, g - 2)
    w = pos - lo
    m = np.zeros((size, g))
    m[np.arange(size), lo] = 1 - w
    m[np.arange(size), lo + 1] += w
    return np.einsum("yi,xj,ijc->yxc", m, m, cells)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114])


def _colour(rng: np.random.Generator, lum: float) -> np.ndarray:
    """A random colour of about luminance ``lum``."""
    c = np.clip(lum + rng.uniform(-0.25, 0.25, 3), 0, 1)
    return np.clip(c + (lum - _luminance(c)), 0, 1)


def _background(rng: np.random.Generator, size: int, lum: float) -> np.ndarray:
    """Textured background (S, S, 3) in [0, 1]: smooth colour blobs, a grating, grain."""
    bg = _colour(rng, lum) + _upsample(rng.uniform(-0.08, 0.08, (4, 4, 3)), size)
    y, x = np.mgrid[0:size, 0:size] + 0.5
    phi, freq = rng.uniform(0, np.pi), rng.uniform(0.1, 0.3)
    grating = np.sin(2 * np.pi * freq * (x * np.cos(phi) + y * np.sin(phi)) + rng.uniform(0, 7))
    bg += rng.uniform(0.0, 0.04) * grating[..., None]
    bg += rng.normal(0, 0.015, (size, size, 1))
    return bg


def _trajectory(motion: str, shape: str, rng: np.random.Generator, frames: int, size: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame centre x, y, radius and angle (pixels, radians) of the moving shape.

    Anchored: translations sweep from near one edge to near the other (>= ~0.5 patch of a
    32-pixel, patch-8 model per frame at 8 frames), sizes go from small to large, rotations
    spin the shape in place by 20-30 degrees per frame from an angle uniform over its
    symmetry (angles grow clockwise on screen: image y points down). Every motion's time
    reversal has the same distribution as its partner.
    """
    t = np.linspace(0.0, 1.0, frames)
    ones = np.ones(frames)
    sym = math.radians(ROTATION_SYMMETRY[shape] or 360.0)
    angle = rng.uniform(0, sym) * ones
    r = rng.uniform(0.16, 0.21) * size * ones
    cx = cy = None
    if AXES[motion] in ("horizontal", "vertical"):
        start = rng.uniform(0.06, 0.16) * size
        end = size - rng.uniform(0.06, 0.16) * size
        along = start + (end - start) * t
        if motion in ("left", "up"):
            along = along[::-1]
        across = rng.uniform(0.28, 0.72) * size * ones
        cx, cy = (along, across) if AXES[motion] == "horizontal" else (across, along)
    elif AXES[motion] == "rotation":  # spinning in place
        r = rng.uniform(0.22, 0.28) * size * ones
        turn = (1 if motion == "cw" else -1) * math.radians(rng.uniform(20.0, 30.0))
        angle = angle + turn * np.arange(frames)
    else:  # scale: geometric growth from small to large
        small, large = rng.uniform(0.08, 0.11) * size, rng.uniform(0.3, 0.36) * size
        r = small * (large / small) ** t
        if motion == "shrink":
            r = r[::-1]
    if cx is None:
        cx, cy = (rng.uniform(0.38, 0.62) * size * ones for _ in range(2))
    return cx, cy, r, angle


@dataclass
class Clip:
    """A rendered clip: ``frames`` uint8 (T, S, S, 3) and the moving shape's coverage
    ``mask`` float (T, S, S), plus its per-frame geometry (centre, radius, angle)."""

    frames: np.ndarray
    mask: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    radius: np.ndarray
    angle: np.ndarray


def render_clip(cls: ClassLike, rng: np.random.Generator, *, frames: int = 8, size: int = 32,
                clutter: bool = True) -> Clip:
    """Draw one clip of class ``cls``. ``clutter=False``: plain grey background, no
    distractors, no noise (for checking the geometry)."""
    c = motion_class(cls)
    cx, cy, r, angle = _trajectory(c.motion, c.shape, rng, frames, size)
    mask = _coverage(c.shape, size, cx, cy, r, angle)
    if not clutter:
        canvas = np.full((frames, size, size, 3), 0.5)
        col = np.array([1.0, 1.0, 1.0])
    else:
        # The subject is always the brightest thing in the picture (a tiny model learns to
        # find it quickly); background and distractors are dimmer and vary in colour.
        bg_lum = rng.uniform(0.12, 0.42)
        canvas = np.broadcast_to(_background(rng, size, bg_lum), (frames, size, size, 3)).copy()
        for _ in range(rng.integers(1, 3)):  # static distractors, smaller than the subject
            kind = ("ring", "plus", "dot")[rng.integers(3)]
            a = _coverage(kind, size, rng.uniform(0.1, 0.9) * size, rng.uniform(0.1, 0.9) * size,
                          rng.uniform(0.04, 0.07) * size, rng.uniform(0, np.pi))[0]
            d_lum = bg_lum + rng.choice([-1, 1]) * rng.uniform(0.12, 0.25)
            dcol = _colour(rng, float(np.clip(d_lum, 0.0, 0.65)))
            canvas = canvas * (1 - a[..., None]) + dcol * a[..., None]
        col = _colour(rng, rng.uniform(0.78, 0.95))
    canvas = canvas * (1 - mask[..., None]) + col * mask[..., None]
    if clutter:
        canvas += rng.normal(0, rng.uniform(0.0, 0.015), canvas.shape)
    out = np.clip(np.rint(canvas * 255), 0, 255).astype(np.uint8)
    return Clip(out, mask, cx, cy, r, angle)


def write_mp4(frames: np.ndarray, path: str | os.PathLike, fps: int = 8, crf: int = 12) -> None:
    """Encode uint8 (T, H, W, 3) frames (even H, W) as h264 mp4, every frame a keyframe."""
    import av

    out = av.open(os.fspath(path), mode="w", format="mp4")
    try:
        stream = out.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        stream.codec_context.time_base = Fraction(1, fps)
        stream.options = {"preset": "veryfast", "crf": str(crf),
                          "x264-params": "keyint=1:scenecut=0:threads=1"}
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    finally:
        out.close()


def text_rows(classes: Sequence[ClassLike]) -> list[list[str]]:
    """Text rows (A, C) for ``claver.tokenize``: templates on the class names, then the
    descriptions; ``rows[a][c]`` is row ``a`` of class ``c``."""
    per_class = [motion_class(c).text_rows() for c in classes]
    return [list(row) for row in zip(*per_class, strict=True)]


# --------------------------------------------------------------------------- the dataset

SPLITS = ("train", "val", "zero_shot")
MANIFEST = "manifest.json"
FORMAT = "claver-synthetic-motion"


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _make_videos(tasks: list[tuple]) -> int:
    """Worker: render and encode ``(root, rel, shape, motion, key, frames, size, fps, clutter)``
    tasks."""
    for root, rel, shape, motion, key, frames, size, fps, clutter in tasks:
        clip = render_clip(MotionClass(shape, motion), np.random.default_rng(key),
                           frames=frames, size=size, clutter=clutter)
        write_mp4(clip.frames, os.path.join(root, rel), fps=fps)
    return len(tasks)


def _pool_context() -> Any:
    """fork on Linux: workers start at once and need no ``if __name__ == "__main__"`` guard in
    the caller's script (they run numpy and PyAV only, never torch); spawn elsewhere."""
    import multiprocessing

    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _run_pool(fn: Callable[[list], Any], chunks: list[list], workers: int,
              on_done: Callable[[Any], None]) -> None:
    if workers <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            on_done(fn(chunk))
        return
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(workers, mp_context=_pool_context()) as pool:
        futures = [pool.submit(fn, chunk) for chunk in chunks]
        try:
            for future in as_completed(futures):
                on_done(future.result())
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _default_workers(workers: int | None) -> int:
    return max(1, min(os.cpu_count() or 1, 8) if workers is None else workers)


def _dataset_paths(root: Path) -> dict[str, Path]:
    return {"root": root, "manifest": root / MANIFEST, "labels": root / "labels.csv",
            "train": root / "train.txt", "val": root / "val.txt",
            "zero_shot_labels": root / "zero_shot_labels.csv",
            "zero_shot": root / "zero_shot.txt", "descriptions": root / "descriptions.json"}


def _is_complete(root: Path, params: dict[str, Any]) -> bool:
    """A finished dataset made with ``params`` (manifest matches, every listed file there)."""
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if manifest.get("format") != FORMAT or manifest.get("params") != params:
        return False
    if not all(p.is_file() for k, p in _dataset_paths(root).items() if k != "root"):
        return False
    for split, count in manifest.get("counts", {}).items():
        folder = root / "videos" / split
        if not folder.is_dir() or sum(1 for e in os.scandir(folder)
                                      if e.name.endswith(".mp4")) != count:
            return False
    return True


def _remove_stale_partials(root: Path) -> None:
    """Delete ``.<name>.partial-<pid>-*`` folders left by generators that died."""
    for entry in root.parent.glob(f".{root.name}.partial-*"):
        try:
            pid = int(entry.name.rsplit(".partial-", 1)[1].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
        except (ValueError, PermissionError, OSError):
            continue


def make_motion_dataset(
    out_dir: str | os.PathLike, *, classes: Sequence[ClassLike] = DEFAULT_CLASSES,
    zero_shot_classes: Sequence[ClassLike] = DEFAULT_ZERO_SHOT, train_per_class: int = 100,
    val_per_class: int = 30, zero_shot_per_class: int = 30, frames: int = 8, size: int = 32,
    fps: int = 8, seed: int = 0, clutter: bool = True, workers: int | None = None,
    log: Callable[[str], None] | None = _stderr,
) -> dict[str, Path]:
    """Generate (or find cached) the synthetic motion dataset in ``out_dir``.

    Writes ``videos/{train,val,zero_shot}/*.mp4`` (h264, ``size`` x ``size``, ``frames``
    frames at ``fps``), ``labels.csv`` + ``train.txt``/``val.txt`` (``classes``),
    ``zero_shot_labels.csv`` + ``zero_shot.txt`` (``zero_shot_classes``, which must not
    share a (shape, motion) with ``classes``), ``descriptions.json`` (class name -> text
    rows) and ``manifest.json``. Returns their paths (keys of :func:`_dataset_paths`).

    Deterministic for a seed (the number of ``workers`` does not matter). When ``out_dir``
    already holds a complete dataset with the same parameters nothing is generated. The
    dataset is built in a hidden sibling folder and renamed into place when complete, so an
    interrupted run never leaves a half dataset; an existing ``out_dir`` is replaced only if
    it is empty or a previous dataset (it has a manifest).
    """
    root = Path(out_dir).expanduser().absolute()
    train_cls = [motion_class(c) for c in classes]
    zs_cls = [motion_class(c) for c in zero_shot_classes]
    for name, cs in (("classes", train_cls), ("zero_shot_classes", zs_cls)):
        if len(set(cs)) != len(cs):
            raise ValueError(f"{name} lists a class twice")
    shared = set(train_cls) & set(zs_cls)
    if shared:
        raise ValueError(f"zero-shot classes also in training: {sorted(c.name for c in shared)}")
    if size % 2 or size < 8:
        raise ValueError(f"size must be even and >= 8 (h264 4:2:0), got {size}")
    if frames < 2:
        raise ValueError(f"frames must be >= 2, got {frames}")
    params = {"version": GENERATOR_VERSION, "classes": [c.name for c in train_cls],
              "zero_shot_classes": [c.name for c in zs_cls], "train_per_class": train_per_class,
              "val_per_class": val_per_class, "zero_shot_per_class": zero_shot_per_class,
              "frames": frames, "size": size, "fps": fps, "seed": seed, "clutter": clutter}
    paths = _dataset_paths(root)
    if _is_complete(root, params):
        if log:
            log(f"synthetic motion dataset: cached in {root}")
        return paths
    if root.exists() and any(root.iterdir()) and not (root / MANIFEST).is_file():
        raise FileExistsError(f"{root} exists and is not a claver synthetic dataset; "
                              "choose an empty or new folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(root)
    tmp = root.parent / f".{root.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    start = time.perf_counter()
    try:
        _generate(tmp, params, train_cls, zs_cls, _default_workers(workers), log)
        manifest = {"format": FORMAT, "params": params,
                    "counts": {"train": train_per_class * len(train_cls),
                               "val": val_per_class * len(train_cls),
                               "zero_shot": zero_shot_per_class * len(zs_cls)},
                    "seconds": round(time.perf_counter() - start, 2)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        if _is_complete(root, params):  # another process finished the same dataset first
            shutil.rmtree(tmp, ignore_errors=True)
            return paths
        old = None
        if root.exists():
            old = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(root, old)
        os.replace(tmp, root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if log:
        log(f"synthetic motion dataset: {sum(manifest['counts'].values())} videos in "
            f"{manifest['seconds']:.1f}s -> {root}")
    return paths


def _generate(tmp: Path, params: dict[str, Any], train_cls: list[MotionClass],
              zs_cls: list[MotionClass], workers: int, log: Callable[[str], None] | None
              ) -> None:
    from claver.data.sources import VideoEntry, write_labels, write_video_list

    counts = {"train": params["train_per_class"], "val": params["val_per_class"],
              "zero_shot": params["zero_shot_per_class"]}
    tasks, lists = [], {}
    for split_id, split in enumerate(SPLITS):
        cs = zs_cls if split == "zero_shot" else train_cls
        (tmp / "videos" / split).mkdir(parents=True, exist_ok=True)
        entries = []
        for label, c in enumerate(cs):
            for i in range(counts[split]):
                rel = f"videos/{split}/{c.shape}_{c.motion}_{i:04d}.mp4"
                key = [params["seed"], split_id, SHAPES.index(c.shape), MOTIONS.index(c.motion), i]
                tasks.append((str(tmp), rel, c.shape, c.motion, key, params["frames"],
                              params["size"], params["fps"], params["clutter"]))
                entries.append(VideoEntry(rel, (label,)))
        lists[split] = entries
    total, done, shown = len(tasks), 0, -1
    start = time.perf_counter()
    if log:
        log(f"synthetic motion dataset: generating {total} videos with {workers} worker(s)")

    def on_done(n: int) -> None:
        nonlocal done, shown
        done += n
        if log and (done * 10 // max(total, 1) > shown or done == total):
            shown = done * 10 // max(total, 1)
            log(f"  {done}/{total} videos ({time.perf_counter() - start:.1f}s)")

    chunk = max(1, min(64, total // (4 * workers) or 1))
    _run_pool(_make_videos, [tasks[i : i + chunk] for i in range(0, total, chunk)], workers,
              on_done)
    write_labels([c.name for c in train_cls], tmp / "labels.csv")
    write_labels([c.name for c in zs_cls], tmp / "zero_shot_labels.csv")
    for split in SPLITS:
        write_video_list(lists[split], tmp / f"{split}.txt")
    descriptions = {c.name: c.text_rows() for c in [*train_cls, *zs_cls]}
    (tmp / "descriptions.json").write_text(json.dumps(descriptions, indent=1) + "\n",
                                          encoding="utf-8")


# --------------------------------------------------------------------------- loading


def _decode_file(path: str) -> np.ndarray:
    """Every frame of one of our mp4s: uint8 (T, H, W, 3), decoded in order (PyAV)."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])


def _decode_chunk(task: tuple[list[str], int | None]) -> np.ndarray:
    from claver.data.sampling import segment_indices

    paths, num_frames = task
    clips = [_decode_file(p) for p in paths]
    if num_frames is not None:
        clips = [c[segment_indices(len(c), num_frames, train=False)] for c in clips]
    return np.stack(clips)


def load_split(paths: dict[str, Path], split: str, *, num_frames: int | None = None,
               size: int | None = None, workers: int | None = None) -> tuple[Any, Any]:
    """Decode a split once into memory: uint8 videos (N, T, 3, S, S) and int64 labels (N,).

    ``num_frames``: TSN segment centres (default: every frame); ``size``: resize frames
    (antialiased) to ``size`` x ``size``.
    """
    import torch

    from claver.data.sources import read_video_list
    from claver.data.transforms import resize

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    entries = read_video_list(paths[split], root=paths["root"])
    files = [e.path for e in entries]
    workers = _default_workers(workers)
    chunk = max(1, min(128, len(files) // (4 * workers) or 1))
    chunks = [(files[i : i + chunk], num_frames) for i in range(0, len(files), chunk)]
    if workers <= 1 or len(chunks) <= 1:
        parts = [_decode_chunk(c) for c in chunks]
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=_pool_context()) as pool:
            parts = list(pool.map(_decode_chunk, chunks))  # in order
    video = torch.from_numpy(np.concatenate(parts)).permute(0, 1, 4, 2, 3).contiguous()
    if size is not None:
        video = resize(video, size)
    labels = torch.tensor([e.label for e in entries], dtype=torch.long)
    return video, labels


def direction_pairs(classes: Sequence[ClassLike]) -> list[tuple[int, int]]:
    """Index pairs of classes that differ only in direction (time-reversal partners)."""
    cs = [motion_class(c) for c in classes]
    index = {c: i for i, c in enumerate(cs)}
    out = []
    for i, c in enumerate(cs):
        j = index.get(c.swapped(REVERSE_PAIRS))
        if j is not None and i < j:
            out.append((i, j))
    return out


def pair_accuracy(probs: Any, labels: Any, classes: Sequence[ClassLike]) -> dict[str, float]:
    """Accuracy inside each direction pair (chance 0.5): for the videos of a pair, is the true
    class scored above its partner? ``probs`` (N, C) scores, ``labels`` (N,) class ids; keys
    are ``"square moving left / right"``-style names."""
    p, y = np.asarray(probs), np.asarray(labels)
    names = [motion_class(c).name for c in classes]
    out = {}
    for i, j in direction_pairs(classes):
        m = (y == i) | (y == j)
        if m.any():
            pick = np.where(p[m, i] >= p[m, j], i, j)
            partner = names[j].split(" ", 1)[1] if " " in names[j] else names[j]
            out[f"{names[i]} / {partner}"] = float((pick == y[m]).mean())
    return out
