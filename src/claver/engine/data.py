"""From a run config to model, datasets, loaders and text rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import claver
from claver.data.dataset import VideoDataset, build_eval_loader, build_train_loader
from claver.data.sampling import FrameSampler
from claver.data.sources import FolderSource, TarSource, read_labels
from claver.data.transforms import build_eval_transform, build_train_transform
from claver.engine.config import Config, ConfigError
from claver.models.config import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD

NORMS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "clip": (CLIP_MEAN, CLIP_STD)}

# Fallback templates when the prompts package is unavailable: the first of each paper's list.
_DEFAULT_TEMPLATES = {"claver": ["a video of {}."], "actionclip": ["a photo of action {}"]}


def build_model(cfg: Config) -> Any:
    """The model the config asks for (pretrained weights loaded when given)."""
    mean, std = NORMS[cfg.DATA.NORM]
    m = cfg.MODEL
    try:
        model = claver.create_model(m.ARCH, pretrained=m.PRETRAINED or None,
                                    num_frames=cfg.DATA.NUM_FRAMES, mask=m.MASK,
                                    fusion=m.FUSION, mean=mean, std=std)
    except ValueError as e:
        raise ConfigError(f"MODEL.ARCH {m.ARCH!r}: {e}") from e
    size = model.config.vision.image_size
    if cfg.DATA.INPUT_SIZE != size:
        raise ConfigError(f"DATA.INPUT_SIZE is {cfg.DATA.INPUT_SIZE} but {m.ARCH} takes "
                          f"{size}x{size} frames; set DATA.INPUT_SIZE {size}")
    if m.GRAD_CHECKPOINTING:
        model.set_grad_checkpointing(True)
    if m.FIX_TEXT:
        for name, p in model.named_parameters():
            if not name.startswith(("visual.", "fusion.")) and name != "logit_scale":
                p.requires_grad_(False)
    return model


def class_names(cfg: Config) -> list[str]:
    if not cfg.DATA.LABEL_LIST:
        raise ConfigError("DATA.LABEL_LIST is empty: give the id,name label CSV")
    return read_labels(cfg.DATA.LABEL_LIST)


def _source(cfg: Config, list_file: str, num_classes: int, root: str = "") -> Any:
    if not list_file:
        raise ConfigError("a data list is empty: set DATA.TRAIN_FILE / DATA.VAL_FILE")
    if cfg.DATA.TAR:
        return TarSource(cfg.DATA.TAR, list_file, num_classes=num_classes)
    root = cfg.DATA.ROOT or root or str(Path(list_file).parent)
    return FolderSource(root, list_file, num_classes=num_classes)


def few_shot_list(list_file: str, k: int, seed: int, out_dir: str | Path) -> Path:
    """A K-shot subset of ``list_file`` (K videos per class, drawn with ``seed``), written as
    ``few_shot_k{K}_seed{seed}.txt`` in ``out_dir`` (the manifest of what was trained on).
    Classes with fewer than K videos keep all of theirs."""
    import random

    from claver.data.sources import read_video_list, write_video_list

    entries = read_video_list(list_file)
    by_class: dict[int, list] = {}
    for e in entries:
        by_class.setdefault(e.labels[0], []).append(e)
    rng = random.Random(seed)
    chosen = [e for c in sorted(by_class) for e in
              sorted(rng.sample(by_class[c], min(k, len(by_class[c]))), key=lambda e: e.line)]
    return write_video_list(chosen, Path(out_dir) / f"few_shot_k{k}_seed{seed}.txt")


def train_dataset(cfg: Config, num_classes: int) -> VideoDataset:
    d, t = cfg.DATA, cfg.TRAIN
    list_file = d.TRAIN_FILE
    if d.FEW_SHOT_K > 0:
        list_file = str(few_shot_list(d.TRAIN_FILE, d.FEW_SHOT_K, cfg.SEED, cfg.OUTPUT))
    mean, std = NORMS[d.NORM]
    transform = build_train_transform(d.INPUT_SIZE, mean=mean, std=std, flip=t.FLIP,
                                      color_jitter=t.COLOR_JITTER, grayscale=t.GRAYSCALE)
    sampler = FrameSampler(d.NUM_FRAMES, mode=d.FRAME_MODE, frame_interval=d.FRAME_INTERVAL,
                           train=True)
    source = _source(cfg, list_file, num_classes, root=str(Path(d.TRAIN_FILE).parent))
    return VideoDataset(source, sampler, transform, num_classes=num_classes, train=True,
                        on_error=d.ON_ERROR, backend=d.BACKEND, seed=cfg.SEED)


def eval_dataset(cfg: Config, num_classes: int, list_file: str | None = None) -> VideoDataset:
    d = cfg.DATA
    mean, std = NORMS[d.NORM]
    transform = build_eval_transform(d.INPUT_SIZE, mean=mean, std=std, crops=cfg.TEST.NUM_CROPS)
    sampler = FrameSampler(d.NUM_FRAMES, mode=d.FRAME_MODE, frame_interval=d.FRAME_INTERVAL,
                           num_clips=cfg.TEST.NUM_CLIPS)
    return VideoDataset(_source(cfg, list_file or d.VAL_FILE, num_classes), sampler, transform,
                        num_classes=num_classes, train=False, on_error=d.ON_ERROR,
                        backend=d.BACKEND, seed=cfg.SEED)


def train_loader(cfg: Config, dataset: VideoDataset) -> Any:
    return build_train_loader(dataset, cfg.TRAIN.BATCH_SIZE, num_workers=cfg.DATA.NUM_WORKERS,
                              seed=cfg.SEED)


def eval_loader(cfg: Config, dataset: VideoDataset) -> Any:
    return build_eval_loader(dataset, cfg.TEST.BATCH_SIZE, num_workers=cfg.DATA.NUM_WORKERS)


def templates(cfg: Config) -> list[str]:
    if cfg.DATA.TEMPLATES == "none":
        return ["{}"]
    try:
        from claver.text import prompts
    except ImportError:
        return _DEFAULT_TEMPLATES[cfg.DATA.TEMPLATES]
    return list(getattr(prompts, f"{cfg.DATA.TEMPLATES.upper()}_TEMPLATES"))


def text_rows(cfg: Config, names: list[str]) -> list[list[str]]:
    """Rows of class texts, (R, C): one row per template, then the interpretive
    descriptions (``DATA.DESCRIPTIONS``), classes with fewer descriptions padded with
    their own."""
    rows = [[t.format(n) for n in names] for t in templates(cfg)]
    if cfg.DATA.DESCRIPTIONS:
        from claver.prompts.rows import description_rows

        rows += description_rows(cfg.DATA.DESCRIPTIONS, names, seed=cfg.SEED)
    return rows


def tokenize_rows(rows: list[list[str]]) -> torch.Tensor:
    """(R, C) strings -> tokens (R, C, 77); descriptions too long for CLIP are truncated."""
    flat = [text for row in rows for text in row]
    return claver.tokenize(flat, truncate=True).view(len(rows), len(rows[0]), -1)
