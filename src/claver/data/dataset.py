"""Video datasets and loaders: decode -> sample -> transform, with an explicit bad-input policy.

``VideoDataset[i]`` returns ``{"video", "label", "index", "valid", "failures"}``:

- ``video``: float (T, 3, S, S), or (V, T, 3, S, S) for V views (clips × crops) at test time;
- ``label``: int64 class id, or a float multi-hot (C,) vector for multi-label lists;
- ``valid``: False when the video could not be read in evaluation (the sample is a zero
  placeholder and must not be scored; its reason is in ``failures``);
- ``failures``: ``"<source>: <reason>"`` strings for every video that failed while producing
  this sample (training replaces a bad video with another one and reports it here, so the
  failure reaches the main process even from a DataLoader worker).

Randomness is a pure function of ``(seed, epoch, index, attempt)``: runs are reproducible
with any number of workers and resume exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from claver.data.decode import VideoDecodeError, VideoReader
from claver.data.sampling import FrameSampler

ON_ERROR = ("skip", "raise")
# What a bad video may raise while being opened, decoded or transformed.
READ_ERRORS = (FileNotFoundError, IsADirectoryError, PermissionError, VideoDecodeError, OSError,
               EOFError)


class VideoLoadError(RuntimeError):
    """A video could not be loaded and the policy is ``on_error="raise"``."""


class VideoDataset(Dataset):
    """Videos of a source (``FolderSource``, ``TarSource`` ...) as model-ready tensors.

    ``sampler`` maps (frame count, rng) to indices (T,) or (clips, T); ``transform`` maps
    uint8 frames (T, H, W, 3) and a ``torch.Generator`` to float (T, 3, S, S) or
    (crops, T, 3, S, S). ``on_error``: ``"skip"`` (training: replace with another video;
    evaluation, ``train=False``: mark the sample invalid) or ``"raise"``.
    """

    def __init__(self, source: Any, sampler: FrameSampler,
                 transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor], *,
                 num_classes: int | None = None, train: bool = True, on_error: str = "skip",
                 backend: str = "pyav", short_side: int | None = None, seed: int = 0,
                 max_retries: int = 10) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        if len(source) == 0:
            raise ValueError(f"{source!r} lists no videos")
        self.source = source
        self.sampler = sampler
        self.transform = transform
        self.train = train
        self.on_error = on_error
        self.backend = backend
        self.short_side = short_side
        self.seed = seed
        self.epoch = 0
        self.max_retries = max_retries
        entries = source.entries
        self.multi_label = any(len(e.labels) != 1 for e in entries)
        self.num_classes = num_classes or 1 + max(max(e.labels, default=0) for e in entries)

    def __len__(self) -> int:
        return len(self.source)

    def set_epoch(self, epoch: int) -> None:
        """Change the random draws (sampling, augmentation) for a new epoch."""
        self.epoch = epoch

    def label(self, index: int) -> torch.Tensor:
        labels = self.source.entries[index].labels
        if not self.multi_label:
            return torch.tensor(labels[0], dtype=torch.long)
        target = torch.zeros(self.num_classes)
        target[list(labels)] = 1.0
        return target

    def load(self, index: int, attempt: int = 0) -> torch.Tensor:
        """Decode, sample and transform one video (raises on a bad video)."""
        seed = [self.seed, self.epoch, index, attempt]
        rng = np.random.default_rng(seed)
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        with VideoReader(self.source.open(index), self.backend,
                         short_side=self.short_side) as reader:
            indices = np.asarray(self.sampler(reader.info.num_frames, rng))
            frames = reader.get_frames(indices.reshape(-1).tolist())
        if indices.ndim == 1:
            return self.transform(frames, gen)
        views = [self.transform(clip, gen) for clip in frames.split(indices.shape[1])]
        # each view is (T, 3, S, S) or (crops, T, 3, S, S): flatten to (clips*crops, T, ...)
        return torch.cat([v if v.dim() == 5 else v[None] for v in views])

    def _failure(self, index: int, err: BaseException) -> str:
        return f"{self.source.describe(index)}: {type(err).__name__}: {err}"

    def __getitem__(self, index: int) -> dict[str, Any]:
        failures: list[str] = []
        candidate = index
        for attempt in range(self.max_retries + 1):
            try:
                video = self.load(candidate, attempt)
                return {"video": video, "label": self.label(candidate), "index": candidate,
                        "valid": True, "failures": failures}
            except READ_ERRORS as err:
                if self.on_error == "raise":
                    raise VideoLoadError(self._failure(candidate, err)) from err
                failures.append(self._failure(candidate, err))
                if not self.train:
                    return {"video": None, "label": self.label(index), "index": index,
                            "valid": False, "failures": failures}
                # training: a deterministic replacement drawn from the whole dataset
                rng = np.random.default_rng([self.seed, self.epoch, index, attempt, 1])
                candidate = int(rng.integers(len(self)))
        raise VideoLoadError(
            f"{self.max_retries + 1} videos in a row failed to load (starting at index "
            f"{index}); the dataset looks broken: run `claver data check`. Last failures: "
            + "; ".join(failures[-3:]))


def collate_videos(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch samples; invalid ones get a zero video of the batch's shape (mask: ``valid``)."""
    shape = next((s["video"].shape for s in samples if s["video"] is not None), None)
    videos = [s["video"] if s["video"] is not None else torch.zeros(shape or (0,))
              for s in samples]
    return {
        "video": torch.stack(videos) if shape is not None else torch.zeros(len(samples), 0),
        "label": torch.stack([s["label"] for s in samples]),
        "index": torch.tensor([s["index"] for s in samples], dtype=torch.long),
        "valid": torch.tensor([s["valid"] for s in samples], dtype=torch.bool),
        "failures": [f for s in samples for f in s["failures"]],
    }


@dataclass
class LoadReport:
    """What happened to the listed videos: ``update`` it with every batch.

    Evaluation: ``listed`` / ``scored`` / ``skipped`` (with reasons) add up exactly.
    Training: ``failures`` counts videos that failed and were replaced.
    """

    listed: int
    scored: int = 0
    failures: list[str] = field(default_factory=list)

    def update(self, batch: dict[str, Any]) -> None:
        self.scored += int(batch["valid"].sum())
        self.failures.extend(batch["failures"])

    def summary(self, max_reasons: int = 20) -> str:
        lines = [f"videos listed {self.listed}, scored {self.scored}, "
                 f"skipped {self.listed - self.scored}"]
        lines += [f"  {reason}" for reason in self.failures[:max_reasons]]
        if len(self.failures) > max_reasons:
            lines.append(f"  ... and {len(self.failures) - max_reasons} more")
        return "\n".join(lines)


class EvalShardSampler(Sampler[int]):
    """Rank ``r`` of ``W`` gets indices r, r+W, r+2W ...: every video exactly once across
    ranks, with no padding and no duplicates (unlike ``DistributedSampler``)."""

    def __init__(self, length: int, num_replicas: int = 1, rank: int = 0) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.length, self.num_replicas, self.rank = length, num_replicas, rank

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.num_replicas))

    def __len__(self) -> int:
        return max(0, math.ceil((self.length - self.rank) / self.num_replicas))


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)  # one decode/transform thread per worker


def build_train_loader(dataset: VideoDataset, batch_size: int, *, num_workers: int = 2,
                       seed: int = 0, drop_last: bool = True) -> DataLoader:
    """Shuffled loader; under ``torch.distributed`` each rank reads its own shard
    (``DistributedSampler``). Call ``loader.sampler.set_epoch(e)`` and
    ``dataset.set_epoch(e)`` every epoch (the training engine does)."""
    from torch.utils.data import DistributedSampler

    world, rank = _world()
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True,
                                 seed=seed, drop_last=drop_last)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                      num_workers=num_workers, collate_fn=collate_videos, drop_last=drop_last,
                      worker_init_fn=_worker_init, persistent_workers=num_workers > 0,
                      pin_memory=torch.cuda.is_available())


def build_eval_loader(dataset: VideoDataset, batch_size: int, *,
                      num_workers: int = 2) -> DataLoader:
    """Deterministic loader that scores every video exactly once across ranks
    (no ``drop_last``, no padding)."""
    world, rank = _world()
    return DataLoader(dataset, batch_size=batch_size,
                      sampler=EvalShardSampler(len(dataset), world, rank),
                      num_workers=num_workers, collate_fn=collate_videos, drop_last=False,
                      worker_init_fn=_worker_init, pin_memory=torch.cuda.is_available())
