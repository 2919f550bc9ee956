"""From a run config to model, datasets, loaders and text rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from claver.data.dataset import VideoDataset, build_eval_loader, build_train_loader
from claver.data.sampling import FrameSampler
from claver.data.sources import FolderSource, TarSource, read_labels
from claver.data.transforms import build_eval_transform, build_train_transform
from claver.data.video_source import DecodeLimits
from claver.engine.config import Config, ConfigError
from claver.models.config import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
from claver.models.factory import NoOpenAIWeights, create_model
from claver.text.tokenizer import tokenize

NORMS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "clip": (CLIP_MEAN, CLIP_STD)}

# Fallback templates when the prompts package is unavailable: the first of each paper's list.
_DEFAULT_TEMPLATES = {"claver": ["a video of {}."], "actionclip": ["a photo of action {}"]}


def build_model(cfg: Config) -> Any:
    """The model the config asks for (pretrained weights loaded when given)."""
    mean, std = NORMS[cfg.DATA.NORM]
    m = cfg.MODEL
    try:
        model = create_model(m.ARCH, pretrained=m.PRETRAINED or None,
                                    num_frames=cfg.DATA.NUM_FRAMES, mask=m.MASK,
                                    fusion=m.FUSION, mean=mean, std=std)
    except NoOpenAIWeights:
        raise ConfigError(
            f"MODEL.PRETRAINED=openai but MODEL.ARCH={m.ARCH} has no OpenAI CLIP backbone: set "
            "MODEL.PRETRAINED= (empty: random initialisation) or MODEL.PRETRAINED=PATH (a "
            "checkpoint), or pick an OpenAI-backbone MODEL.ARCH such as claver-vit-b16"
        ) from None
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


def _source(cfg: Config, list_file: str, num_classes: int, root: str = "",
            key: str = "DATA.VAL_FILE") -> Any:
    """The videos of ``list_file`` (named ``key`` in messages), checked before any decoding:
    an empty list, and a folder list none of whose videos exist (a wrong DATA.ROOT), are
    one-line :class:`ConfigError` s naming the key and the fix."""
    if not list_file:
        raise ConfigError(f"{key} is empty: set it to a 'path label' video list")
    if cfg.DATA.TAR:
        source = TarSource(cfg.DATA.TAR, list_file, num_classes=num_classes)
    else:
        root = cfg.DATA.ROOT or root or str(Path(list_file).parent)
        source = FolderSource(root, list_file, num_classes=num_classes)
    if len(source) == 0:
        raise ConfigError(f"{key} {list_file} lists no videos (the file is empty or holds only "
                          "blank/comment lines): give 'path label' lines")
    missing = source.missing() if isinstance(source, FolderSource) else []
    if missing and len(missing) == len(source):
        first = Path(source.root) / missing[0].path
        where = "DATA.ROOT" if cfg.DATA.ROOT else f"the folder of {key}"
        raise ConfigError(
            f"none of the {len(source)} videos listed in {list_file} exists under {source.root} "
            f"({where}; e.g. {first}): set DATA.ROOT (`claver data check`: --root) to the "
            "folder the listed paths are relative to")
    return source


def few_shot_list(list_file: str, k: int, seed: int, out_dir: str | Path) -> Path:
    """A K-shot subset of ``list_file`` (K videos per class, drawn with ``seed``), written as
    ``few_shot_k{K}_seed{seed}.txt`` in ``out_dir`` (the manifest of what was trained on).
    A class with fewer than K videos is an error (a "K-shot" run would silently train on
    fewer)."""
    import random

    from claver.data.sources import read_video_list, write_video_list

    entries = read_video_list(list_file)
    by_class: dict[int, list] = {}
    for e in entries:
        by_class.setdefault(e.labels[0], []).append(e)
    short = {c: len(v) for c, v in sorted(by_class.items()) if len(v) < k}
    if short:
        shown = ", ".join(f"class {c}: {n}" for c, n in list(short.items())[:5])
        more = f" and {len(short) - 5} more" if len(short) > 5 else ""
        raise ConfigError(
            f"DATA.FEW_SHOT_K={k} but {len(short)} class(es) of {list_file} have fewer videos "
            f"({shown}{more}); lower DATA.FEW_SHOT_K to {min(short.values())} or less")
    rng = random.Random(seed)
    chosen = [e for c in sorted(by_class) for e in
              sorted(rng.sample(by_class[c], min(k, len(by_class[c]))), key=lambda e: e.line)]
    return write_video_list(chosen, Path(out_dir) / f"few_shot_k{k}_seed{seed}.txt")


def decode_limits(cfg: Config) -> DecodeLimits:
    """What one video may cost (DATA.MAX_PIXELS, DATA.DECODE_TIMEOUT, DATA.MAX_PACKETS)."""
    d = cfg.DATA
    return DecodeLimits(max_pixels=d.MAX_PIXELS, timeout=d.DECODE_TIMEOUT or None,
                        max_packets=d.MAX_PACKETS)


def decode_short_side(transform: Any) -> int | None:
    """The short side ``transform`` resizes its input to first; decoding to it makes that
    resize a no-op (training and one-view evaluation: ``256 * S // 224``; three crops:
    ``S``). None (decode at full size) when the transform resizes without antialiasing:
    FFmpeg's scaler always filters, so only the transform can reproduce that resize."""
    if not getattr(transform, "antialias", True):
        return None
    return int(getattr(transform, "resize_to", transform.size))


def train_sampler(cfg: Config) -> FrameSampler:
    d = cfg.DATA
    return FrameSampler(d.NUM_FRAMES, mode=d.FRAME_MODE, frame_interval=d.FRAME_INTERVAL,
                        train=True, keep_tail=d.KEEP_TAIL_FRAMES)


def eval_sampler(cfg: Config, protocol: Any = None) -> FrameSampler:
    """Frame indices of ``protocol``'s clips (TEST, the default, or VAL)."""
    d = cfg.DATA
    return FrameSampler(d.NUM_FRAMES, mode=d.FRAME_MODE, frame_interval=d.FRAME_INTERVAL,
                        num_clips=(protocol or cfg.TEST).NUM_CLIPS,
                        test_rule=d.CLIP_TEST_RULE)  # type: ignore[arg-type]


def train_dataset(cfg: Config, num_classes: int, list_file: str | None = None) -> VideoDataset:
    """The training dataset of DATA.TRAIN_FILE (its K-shot subset with DATA.FEW_SHOT_K), or
    of ``list_file`` as given (``claver data check``)."""
    d, t = cfg.DATA, cfg.TRAIN
    root, key = str(Path(d.TRAIN_FILE).parent), "DATA.TRAIN_FILE"
    if list_file is None:
        list_file = d.TRAIN_FILE
        if d.FEW_SHOT_K > 0:
            list_file = str(few_shot_list(d.TRAIN_FILE, d.FEW_SHOT_K, cfg.SEED, cfg.OUTPUT))
    else:
        root, key = str(Path(list_file).parent), "the list"
    mean, std = NORMS[d.NORM]
    randaugment = None
    if t.RANDAUGMENT:  # [N, M]
        from claver.data.randaugment import RandAugment

        randaugment = RandAugment(*t.RANDAUGMENT)
    transform = build_train_transform(d.INPUT_SIZE, mean=mean, std=std, flip=t.FLIP,
                                      color_jitter=t.COLOR_JITTER, grayscale=t.GRAYSCALE,
                                      antialias=d.ANTIALIAS,
                                      color_jitter_mode=t.COLOR_JITTER_MODE,  # type: ignore
                                      randaugment=randaugment, num_fixed_crops=t.FIXED_CROPS)
    source = _source(cfg, list_file, num_classes, root=root, key=key)
    return VideoDataset(source, train_sampler(cfg), transform, num_classes=num_classes,
                        train=True, on_error=d.ON_ERROR, backend=d.BACKEND,
                        short_side=decode_short_side(transform), limits=decode_limits(cfg),
                        seed=cfg.SEED)


def eval_dataset(cfg: Config, num_classes: int, list_file: str | None = None,
                 protocol: Any = None) -> VideoDataset:
    """The videos of ``list_file`` (default DATA.VAL_FILE) with the views of ``protocol``:
    ``cfg.TEST`` (the default; ``claver test``) or ``cfg.VAL`` (validation in training)."""
    d, views = cfg.DATA, protocol or cfg.TEST
    mean, std = NORMS[d.NORM]
    transform = build_eval_transform(d.INPUT_SIZE, mean=mean, std=std, crops=views.NUM_CROPS,
                                     antialias=d.ANTIALIAS)
    key = "the list" if list_file else "DATA.VAL_FILE"
    return VideoDataset(_source(cfg, list_file or d.VAL_FILE, num_classes, key=key),
                        eval_sampler(cfg, views),
                        transform, num_classes=num_classes, train=False, on_error=d.ON_ERROR,
                        backend=d.BACKEND, short_side=decode_short_side(transform),
                        limits=decode_limits(cfg), seed=cfg.SEED)


def _loader_timeout(cfg: Config) -> float:
    d = cfg.DATA
    if (d.NUM_WORKERS > 0 and d.LOADER_TIMEOUT and d.DECODE_TIMEOUT
            and d.LOADER_TIMEOUT <= d.DECODE_TIMEOUT):
        raise ConfigError(
            f"DATA.LOADER_TIMEOUT ({d.LOADER_TIMEOUT:g} s) must be longer than "
            f"DATA.DECODE_TIMEOUT ({d.DECODE_TIMEOUT:g} s), or a slow video would stop the run "
            "instead of being skipped; e.g. DATA.LOADER_TIMEOUT=600, or 0 to wait forever")
    return d.LOADER_TIMEOUT


def train_loader(cfg: Config, dataset: VideoDataset) -> Any:
    return build_train_loader(dataset, cfg.TRAIN.BATCH_SIZE, num_workers=cfg.DATA.NUM_WORKERS,
                              seed=cfg.SEED, timeout=_loader_timeout(cfg),
                              timeout_setting="DATA.LOADER_TIMEOUT")


def eval_loader(cfg: Config, dataset: VideoDataset, protocol: Any = None) -> Any:
    return build_eval_loader(dataset, (protocol or cfg.TEST).BATCH_SIZE,
                             num_workers=cfg.DATA.NUM_WORKERS, timeout=_loader_timeout(cfg),
                             timeout_setting="DATA.LOADER_TIMEOUT")


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
    return tokenize(flat, truncate=True).view(len(rows), len(rows[0]), -1)


def check_lists(cfg: Config, list_files: list[str] | None = None) -> list[str]:
    """The lists ``claver data check`` reads: ``list_files``, else DATA.TRAIN_FILE and
    DATA.VAL_FILE (whichever are set, each once)."""
    lists = list_files or [f for f in (cfg.DATA.TRAIN_FILE, cfg.DATA.VAL_FILE) if f]
    if not lists:
        raise ConfigError("nothing to check: give a LIST, or a --config with DATA.TRAIN_FILE "
                          "and/or DATA.VAL_FILE")
    return list(dict.fromkeys(lists))


def check_data(cfg: Config, list_files: list[str] | None = None, *, draws: int = 3,
               full: bool = False, workers: int = 4, progress: bool = True,
               log: Any = print) -> int:
    """``claver data check``: read every video of the lists as this config's training and
    evaluation would (:mod:`claver.data.check`); returns 0 when all are readable, else 1."""
    from claver.data.check import check_dataset, describe_reads, format_report

    names = class_names(cfg)
    lists = check_lists(cfg, list_files)
    clean = True
    for list_file in lists:
        views = eval_dataset(cfg, len(names), list_file)
        train = train_dataset(cfg, len(names), list_file) if draws else None
        if len(lists) > 1:
            log(f"== {list_file}")
        log(describe_reads(views, train, draws, full))
        report = check_dataset(views, names, train=train, draws=draws, full=full,
                               workers=workers, progress=progress)
        log(format_report(report))
        clean = clean and report.ok
    return 0 if clean else 1
