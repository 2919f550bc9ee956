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
from claver.data.video_source import DecodeLimits, VideoInfo

ON_ERROR = ("skip", "raise")
# What a bad video may raise while being opened, decoded or transformed.
READ_ERRORS = (FileNotFoundError, IsADirectoryError, PermissionError, VideoDecodeError, OSError,
               EOFError)


class LoaderTimeoutError(RuntimeError):
    """No batch came from the DataLoader workers within the loader's ``timeout``."""


class VideoLoadError(RuntimeError):
    """A video could not be loaded and the policy is ``on_error="raise"``."""

    def __init__(self, message: str) -> None:
        # A DataLoader worker's error comes back as VideoLoadError("Caught VideoLoadError in
        # DataLoader worker process 0.\nOriginal Traceback ...: <message>"): keep <message>
        marker = f"{type(self).__name__}: "
        if message.startswith("Caught ") and marker in message:
            message = message.rsplit(marker, 1)[1].strip()
        super().__init__(message)


class LoadFailure(str):
    """One failed load, ``"<video>: <reason>"`` (a ``str``, so reports and JSON take it as
    text), with the parts as ``.video`` and ``.reason``."""

    video: str
    reason: str

    def __new__(cls, video: str, reason: str) -> LoadFailure:
        self = super().__new__(cls, f"{video}: {reason}")
        self.video, self.reason = video, reason
        return self

    def __reduce__(self) -> tuple:  # DataLoader workers pickle it
        return (LoadFailure, (self.video, self.reason))


class VideoDataset(Dataset):
    """Videos of a source (``FolderSource``, ``TarSource`` ...) as model-ready tensors.

    ``sampler`` maps (frame count, rng) to indices (T,) or (clips, T); ``transform`` maps
    uint8 frames (T, H, W, 3) and a ``torch.Generator`` to float (T, 3, S, S) or
    (crops, T, 3, S, S). ``on_error``: ``"skip"`` (training: replace with another video;
    evaluation, ``train=False``: mark the sample invalid) or ``"raise"``.

    ``short_side``: decode frames with this short side (give the size the transform resizes
    to first: its resize is then a no-op and a 4K video costs what a small one does).
    ``limits``: :class:`~claver.data.video_source.DecodeLimits` for every reader (None: the
    reader's defaults).
    """

    def __init__(self, source: Any, sampler: FrameSampler,
                 transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor], *,
                 num_classes: int | None = None, train: bool = True, on_error: str = "skip",
                 backend: str = "pyav", short_side: int | None = None,
                 limits: DecodeLimits | None = None, seed: int = 0,
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
        self.limits = limits
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

    def open_reader(self, index: int) -> VideoReader:
        """The reader of video ``index``, with this dataset's backend, short side and limits."""
        return VideoReader(self.source.open(index), self.backend, short_side=self.short_side,
                           limits=self.limits)

    def generators(self, index: int, attempt: int = 0, epoch: int | None = None
                   ) -> tuple[np.random.Generator, torch.Generator]:
        """The random streams of one load: numpy for frame sampling, torch for the transform;
        a pure function of ``(seed, epoch, index, attempt)`` (``epoch``: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng([self.seed, epoch, index, attempt])
        return rng, torch.Generator().manual_seed(int(rng.integers(2**62)))

    def read(self, index: int, rng: np.random.Generator
             ) -> tuple[torch.Tensor, np.ndarray, VideoInfo]:
        """Open video ``index``, sample indices with ``rng`` and decode them: uint8 frames
        (V*T, h, w, 3), the indices (T,) or (V, T) and the video's info (raises on a bad
        video). This is the whole read of :meth:`load`; ``claver data check`` calls it too."""
        with self.open_reader(index) as reader:  # (opening refuses a video with no frames)
            info = reader.info
            indices = np.asarray(self.sampler(info.num_frames, rng))
            frames = reader.get_frames(indices.reshape(-1).tolist())
        return frames, indices, info

    def load(self, index: int, attempt: int = 0) -> torch.Tensor:
        """Decode, sample and transform one video (raises on a bad video)."""
        rng, gen = self.generators(index, attempt)
        frames, indices, _ = self.read(index, rng)
        if indices.ndim == 1:
            return self.transform(frames, gen)
        views = [self.transform(clip, gen) for clip in frames.split(indices.shape[1])]
        # each view is (T, 3, S, S) or (crops, T, 3, S, S): flatten to (clips*crops, T, ...)
        return torch.cat([v if v.dim() == 5 else v[None] for v in views])

    def _failure(self, index: int, err: BaseException) -> LoadFailure:
        return LoadFailure(self.source.describe(index), f"{type(err).__name__}: {err}")

    def __getitem__(self, index: int) -> dict[str, Any]:
        failures: list[LoadFailure] = []
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


class _ReportTimeout:
    """Iterator over a DataLoader's batches that turns torch's bare "DataLoader timed out"
    into a :class:`LoaderTimeoutError` saying what to do."""

    def __init__(self, batches: Iterator[Any], timeout: float, setting: str) -> None:
        self._batches, self._timeout, self._setting = batches, timeout, setting

    def __iter__(self) -> _ReportTimeout:
        return self

    def __len__(self) -> int:
        return len(self._batches)  # type: ignore[arg-type]

    def __next__(self) -> Any:
        try:
            return next(self._batches)
        except RuntimeError as err:
            if not str(err).startswith("DataLoader timed out"):
                raise
            raise LoaderTimeoutError(
                f"no batch came from the DataLoader workers within {self._timeout:g} s "
                f"({self._setting}): a worker is stuck, most likely on a video that hangs the "
                "decoder. Find it with `claver data check` (it reads the frames training "
                "reads) and fix or drop it; if batches are only slow, raise "
                f"{self._setting} (0 waits forever)") from err


class VideoDataLoader(DataLoader):
    """A ``DataLoader`` whose worker ``timeout`` error names the setting that controls it
    (``timeout_setting``, e.g. ``"DATA.LOADER_TIMEOUT"``) and how to find the bad file."""

    def __init__(self, *args: Any, timeout_setting: str = "timeout", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_setting = timeout_setting

    def __iter__(self) -> Any:
        batches = super().__iter__()
        if self.timeout > 0:
            return _ReportTimeout(batches, self.timeout, self.timeout_setting)
        return batches


def _check_timeout(timeout: float) -> float:
    if not (math.isfinite(timeout) and timeout >= 0):
        raise ValueError(f"loader timeout must be a finite number of seconds >= 0 (0: wait "
                         f"forever), got {timeout!r}")
    return float(timeout)


def build_train_loader(dataset: VideoDataset, batch_size: int, *, num_workers: int = 2,
                       seed: int = 0, drop_last: bool = True, timeout: float = 600.0,
                       timeout_setting: str = "timeout") -> VideoDataLoader:
    """Shuffled loader; under ``torch.distributed`` each rank reads its own shard
    (``DistributedSampler``). Call ``loader.sampler.set_epoch(e)`` and
    ``dataset.set_epoch(e)`` every epoch (the training engine does).

    ``timeout``: seconds to wait for a batch from the workers before raising
    :class:`LoaderTimeoutError` (only with ``num_workers > 0``; 0 waits forever)."""
    from torch.utils.data import DistributedSampler

    timeout = _check_timeout(timeout)
    world, rank = _world()
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True,
                                 seed=seed, drop_last=drop_last)
    return VideoDataLoader(dataset, batch_size=batch_size, sampler=sampler,
                           num_workers=num_workers, collate_fn=collate_videos,
                           drop_last=drop_last, worker_init_fn=_worker_init,
                           persistent_workers=num_workers > 0,
                           pin_memory=torch.cuda.is_available(),
                           timeout=timeout if num_workers > 0 else 0.0,
                           timeout_setting=timeout_setting)


def loader_with_sampler(loader: DataLoader, sampler: Sampler[int]) -> VideoDataLoader:
    """A fresh loader with ``loader``'s dataset, batching, workers and timeout but another
    ``sampler`` (the training engine's mid-epoch resume)."""
    return VideoDataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler,
                           num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                           drop_last=loader.drop_last, worker_init_fn=loader.worker_init_fn,
                           pin_memory=loader.pin_memory, timeout=loader.timeout,
                           timeout_setting=getattr(loader, "timeout_setting", "timeout"))


def build_eval_loader(dataset: VideoDataset, batch_size: int, *, num_workers: int = 2,
                      timeout: float = 600.0, timeout_setting: str = "timeout"
                      ) -> VideoDataLoader:
    """Deterministic loader that scores every video exactly once across ranks
    (no ``drop_last``, no padding); ``timeout`` as in :func:`build_train_loader`."""
    timeout = _check_timeout(timeout)
    world, rank = _world()
    return VideoDataLoader(dataset, batch_size=batch_size,
                           sampler=EvalShardSampler(len(dataset), world, rank),
                           num_workers=num_workers, collate_fn=collate_videos,
                           drop_last=False, worker_init_fn=_worker_init,
                           pin_memory=torch.cuda.is_available(),
                           timeout=timeout if num_workers > 0 else 0.0,
                           timeout_setting=timeout_setting)
