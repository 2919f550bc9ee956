"""``claver demo``: build a model, generate a motion clip, classify it against label words.

Everything runs on the CPU with nothing to download: a tiny CLAVER with random weights (so
its probabilities carry no knowledge yet), a clip generated in memory, the Kronecker mask it
uses, and a save/load round trip through our checkpoint format. Training on a synthetic
dataset arrives with ``claver train``.
"""

from __future__ import annotations

import time

import torch

CLASSES = ("moving left", "moving right", "moving up", "moving down")
_DIRS = ((-1, 0), (1, 0), (0, -1), (0, 1))  # (dx, dy) per class


def motion_clips(n: int, frames: int = 8, size: int = 32, seed: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` clips (n, T, 3, S, S) in [0, 1] of a square moving in one of four directions.

    Start position, colour, square size, speed and background noise are random, so a single
    frame says nothing about the class: only the order of frames does.
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(len(CLASSES), (n,), generator=g)
    video = torch.rand(n, frames, 3, size, size, generator=g) * 0.3
    for i in range(n):
        side = int(torch.randint(5, 9, (1,), generator=g))
        speed = float(torch.empty(1).uniform_(2.0, 3.0, generator=g))
        dx, dy = _DIRS[int(labels[i])]
        travel = speed * (frames - 1)
        x0, y0 = (_start(d, size - side, travel, g) for d in (dx, dy))
        colour = torch.rand(3, 1, 1, generator=g) * 0.6 + 0.4
        for t in range(frames):
            x = round(x0 + dx * speed * t)
            y = round(y0 + dy * speed * t)
            video[i, t, :, y : y + side, x : x + side] = colour
    return video, labels


def _start(direction: int, room: int, travel: float, g: torch.Generator) -> float:
    """A start coordinate that keeps the whole path in [0, room]."""
    lo = travel if direction < 0 else 0.0
    hi = room - (travel if direction > 0 else 0.0)
    return lo + float(torch.rand(1, generator=g)) * (hi - lo)



def mask_picture(num_frames: int, tokens_per_frame: int, mode: str) -> str:
    """The Kronecker mask as text: '#' may attend, '.' blocked; rows are query tokens."""
    from claver.models.kronecker import kronecker_mask

    m = kronecker_mask(num_frames, tokens_per_frame, mode)
    lines = []
    for i, row in enumerate(m.tolist()):
        cells = "".join("#" if a else "." for a in row)
        blocks = " ".join(cells[j : j + tokens_per_frame]
                          for j in range(0, len(cells), tokens_per_frame))
        lines.append(f"  f{i // tokens_per_frame}t{i % tokens_per_frame}  {blocks}")
    return "\n".join(lines)


def run_demo(model_name: str = "claver-tiny", num_frames: int = 8, seed: int = 0,
             template: str = "a video of a square {}.", log=print) -> dict[str, float]:
    """Run the demo; returns the label probabilities it printed."""
    import tempfile
    from pathlib import Path

    import claver
    from claver.models.factory import load_model, save_model
    from claver.weights.formats import describe

    torch.manual_seed(seed)
    start = time.perf_counter()
    model = claver.create_model(model_name, num_frames=num_frames).eval()
    cfg = model.config
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model   {describe(cfg)}: {n_params / 1e6:.2f}M parameters (random init, seed {seed})")
    size = cfg.vision.image_size
    clips, labels = motion_clips(1, num_frames, size, seed=seed)
    log(f"video   generated: a square {CLASSES[int(labels[0])]}, {num_frames} frames "
        f"{size}x{size}")
    if cfg.arch == "claver":
        log(f"mask    {cfg.mask} pattern for 3 frames x 3 tokens ('#' may attend):")
        log(mask_picture(3, 3, cfg.mask))
    mean = torch.tensor(cfg.mean).view(1, 1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 1, 3, 1, 1)
    video = (clips - mean) / std
    text = claver.tokenize([template.format(c) for c in CLASSES])
    with torch.no_grad():
        logits = model(video, text)
    probs = logits.softmax(-1)[0]
    log(f"labels  template {template!r}; probabilities (random weights: not meaningful yet):")
    for c, p in sorted(zip(CLASSES, probs.tolist(), strict=True), key=lambda x: -x[1]):
        log(f"  {p:6.1%}  {c}")
    with tempfile.TemporaryDirectory() as tmp:
        path = save_model(model, Path(tmp) / "demo.safetensors")
        with torch.no_grad():
            again = load_model(path).eval()(video, text)
        same = torch.equal(again, logits)
        log(f"check   saved and reloaded {path.name} ({path.stat().st_size / 1e6:.1f} MB): "
            f"identical logits: {'yes' if same else 'NO'}")
    log(f"done in {time.perf_counter() - start:.1f}s")
    if not same:
        raise RuntimeError("reloaded model gave different logits")
    return dict(zip(CLASSES, probs.tolist(), strict=True))
