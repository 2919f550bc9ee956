"""Named weights: where each published checkpoint lives, its checksum, and how to feed it.

``claver models list`` prints this table; ``claver.predict(..., model=NAME)`` and
:func:`load_pretrained` download a file on first use into ``$CLAVER_CACHE`` (default
``~/.cache/claver``) through :func:`claver.weights.download.download` (sha256 verified,
atomic, resumable), trying the listed URLs in order. With ``CLAVER_OFFLINE=1`` nothing is
downloaded and a missing file raises an error naming the path to place it at.

Entries:

- ``openai-vit-*``: OpenAI's CLIP image/text towers (MIT). The sha256 is the URL path
  segment before the file name (OpenAI's own scheme). The second URL is the Azure blob
  storage behind OpenAI's CDN, used as a mirror by several projects; the checksum guards both.
  Loaded as ActionCLIP meanP: frame features averaged (no new parameters), i.e. zero-shot
  CLIP on videos. CLIP's own preprocessing: short side 224 (bicubic there, antialiased
  bilinear here), centre crop 224, CLIP mean/std.
- ``actionclip-*-k400``: ActionCLIP (Transf fusion, 6 layers) fine-tuned on Kinetics-400,
  ported from the original repository by mmaction2 (``projects/actionclip``); the models
  behind ActionCLIP's zero-shot demo. ``-mmaction2``: the same recipe trained by mmaction2.
  Preprocessing of mmaction2's test pipeline: short side 256, centre crop 224, CLIP mean/std.
  **mmaction2 publishes no sha256 for these files.** Their entries have ``sha256=None``:
  downloading one needs ``allow_unverified=True`` (``--allow-unverified``). The trained-by-
  mmaction2 files carry the first 8 hex digits of their sha256 in the file name (mmaction2's
  ``publish_model.py``); that prefix is checked after download. The files are read with
  ``torch.load(weights_only=True)`` and an allow-list, so an altered file cannot run code,
  but its weights are not verified.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from claver.models.config import ModelConfig, get_config
from claver.weights.download import (
    OPENAI_CLIP_URLS,
    DownloadError,
    default_cache_dir,
    download,
    download_unverified,
    openai_sha256,
)

__all__ = ["PRETRAINED", "PretrainedWeights", "default_model", "fetch", "get_pretrained",
           "list_pretrained", "load_pretrained", "resolve_model"]

_OPENAI_BLOB = "https://openaipublic.blob.core.windows.net/clip/models/"
_OPENAI_CDN = "https://openaipublic.azureedge.net/clip/models/"
_MMACTION = "https://download.openmmlab.com/mmaction/v1.0/projects/actionclip/"


@dataclass(frozen=True)
class PretrainedWeights:
    """One named checkpoint: where to get it, how to check it, how to build and feed it."""

    name: str
    architecture: str  # a create_model name, e.g. "actionclip-vit-b32"
    options: tuple[tuple[str, Any], ...]  # ModelConfig overrides (fusion, num_frames, ...)
    urls: tuple[str, ...]
    sha256: str | None  # None: no published checksum (needs allow_unverified)
    filename: str  # name in the cache directory
    short_side: int  # resize the short side to this before the centre crop
    license: str
    source: str
    sha256_prefix: str | None = None  # published prefix, checked after an unverified download
    notes: str = field(default="")

    @property
    def config(self) -> ModelConfig:
        return get_config(self.architecture, **dict(self.options))

    @property
    def verified(self) -> bool:
        return self.sha256 is not None

    def preprocess(self) -> Any:
        """The :class:`claver.inputs.Preprocess` these weights expect."""
        from claver.inputs import Preprocess

        cfg = self.config
        return Preprocess(cfg.num_frames, cfg.vision.image_size, self.short_side,
                          tuple(cfg.mean), tuple(cfg.std))

    def path(self, cache_dir: str | Path | None = None) -> Path:
        """Where the file is (or will be) in the cache."""
        root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        return root / self.filename

    def to_dict(self) -> dict[str, Any]:
        from claver.weights.formats import describe

        cfg = self.config
        return {"name": self.name, "architecture": describe(cfg), "model": self.architecture,
                "options": dict(self.options), "frames": cfg.num_frames,
                "image_size": cfg.vision.image_size, "short_side": self.short_side,
                "mean": list(cfg.mean), "std": list(cfg.std), "urls": list(self.urls),
                "sha256": self.sha256, "sha256_prefix": self.sha256_prefix,
                "verified": self.verified, "license": self.license, "source": self.source,
                "notes": self.notes, "filename": self.filename}


def _openai(name: str, openai_name: str, backbone: str) -> PretrainedWeights:
    url = OPENAI_CLIP_URLS[openai_name]
    tail = url[len(_OPENAI_CDN):]
    return PretrainedWeights(
        name=name, architecture=f"actionclip-{backbone}",
        options=(("fusion", "meanP"), ("num_frames", 8)), urls=(url, _OPENAI_BLOB + tail),
        sha256=openai_sha256(url), filename=url.rsplit("/", 1)[-1],
        short_side=336 if backbone.endswith("336") else 224, license="MIT (OpenAI CLIP)",
        source=f"OpenAI CLIP {openai_name}, github.com/openai/CLIP",
        notes="image-text CLIP; frame features averaged (ActionCLIP meanP, no new parameters)")


def _mmaction(name: str, backbone: str, frames: int, folder: str, file: str,
              prefix: str | None = None) -> PretrainedWeights:
    trained_here = prefix is not None
    return PretrainedWeights(
        name=name, architecture=f"actionclip-{backbone}",
        options=(("fusion", "Transf"), ("num_frames", frames)),
        urls=(f"{_MMACTION}{folder}/{file}",), sha256=None, sha256_prefix=prefix,
        filename=f"{name}.pth", short_side=256,
        license="Apache-2.0 (mmaction2)" if trained_here else "MIT (ActionCLIP)",
        source=("trained on Kinetics-400 by mmaction2 (projects/actionclip)" if trained_here
                else "ActionCLIP (github.com/sallymmx/ActionCLIP) Kinetics-400 weights, "
                     "ported by mmaction2 (projects/actionclip)"),
        notes="no published sha256: download with allow_unverified=True"
              + (f"; the file name's sha256 prefix {prefix} is checked" if prefix else ""))


_P32, _P16 = "actionclip_vit-base-p32-res224-clip-pre", "actionclip_vit-base-p16-res224-clip-pre"

PRETRAINED: dict[str, PretrainedWeights] = {w.name: w for w in (
    _openai("openai-vit-b32", "ViT-B/32", "vit-b32"),
    _openai("openai-vit-b16", "ViT-B/16", "vit-b16"),
    _openai("openai-vit-l14", "ViT-L/14", "vit-l14"),
    _openai("openai-vit-l14-336", "ViT-L/14@336px", "vit-l14-336"),
    _mmaction("actionclip-vit-b32-8f-k400", "vit-b32", 8, f"{_P32}_1x1x8_k400-rgb",
              "vit-b-32-8f.pth"),
    _mmaction("actionclip-vit-b16-8f-k400", "vit-b16", 8, f"{_P16}_1x1x8_k400-rgb",
              "vit-b-16-8f.pth"),
    _mmaction("actionclip-vit-b16-16f-k400", "vit-b16", 16, f"{_P16}_1x1x16_k400-rgb",
              "vit-b-16-16f.pth"),
    _mmaction("actionclip-vit-b16-32f-k400", "vit-b16", 32, f"{_P16}_1x1x32_k400-rgb",
              "vit-b-16-32f.pth"),
    _mmaction("actionclip-vit-b32-8f-k400-mmaction2", "vit-b32", 8,
              f"{_P32}_g8xb16_1x1x8_k400-rgb",
              f"{_P32}_g8xb16_1x1x8_k400-rgb_20230801-8535b794.pth", "8535b794"),
    _mmaction("actionclip-vit-b16-8f-k400-mmaction2", "vit-b16", 8,
              f"{_P16}_g8xb16_1x1x8_k400-rgb",
              f"{_P16}_g8xb16_1x1x8_k400-rgb_20230801-b307a0cd.pth", "b307a0cd"),
)}


def list_pretrained() -> list[PretrainedWeights]:
    """Every named weight, in table order."""
    return list(PRETRAINED.values())


def get_pretrained(name: str | PretrainedWeights) -> PretrainedWeights:
    """The entry called ``name`` (a clear error listing the names otherwise)."""
    if isinstance(name, PretrainedWeights):
        return name
    try:
        return PRETRAINED[name]
    except KeyError:
        raise ValueError(f"unknown weights {name!r}; named weights: {', '.join(PRETRAINED)} "
                         "(claver models list)") from None


def _offline(offline: bool | None) -> bool:
    if offline is not None:
        return offline
    return any(os.environ.get(k, "").strip().lower() in {"1", "true", "yes", "on"}
               for k in ("CLAVER_OFFLINE", "HF_HUB_OFFLINE"))


def fetch(name: str | PretrainedWeights, *, cache_dir: str | Path | None = None,
          offline: bool | None = None, allow_unverified: bool = False,
          progress: bool = True) -> Path:
    """Path of the weights file, downloading it on first use (see the module docstring)."""
    entry = get_pretrained(name)
    offline = _offline(offline)
    if entry.sha256 is None:
        return _fetch_unverified(entry, cache_dir, offline, allow_unverified, progress)
    errors = []
    for url in entry.urls:
        try:
            return download(url, entry.sha256, cache_dir=cache_dir, filename=entry.filename,
                            offline=offline, progress=progress)
        except DownloadError as e:
            if offline:
                more = f" Other source(s): {', '.join(entry.urls[1:])}." if entry.urls[1:] \
                    else ""
                raise DownloadError(f"{entry.name}: {e}{more}") from e
            errors.append(str(e))
    raise DownloadError(
        f"{entry.name}: every source failed: " + " | ".join(errors) + f" Without network "
        f"access, fetch one of these URLs elsewhere and place the file at exactly "
        f"{entry.path(cache_dir)} (sha256 {entry.sha256}); CLAVER_OFFLINE=1 skips the "
        "download attempts.")


def _fetch_unverified(entry: PretrainedWeights, cache_dir: str | Path | None, offline: bool,
                      allow_unverified: bool, progress: bool) -> Path:
    """A file without a published sha256: used if present, downloaded only when allowed."""
    target = entry.path(cache_dir)
    if target.is_file():
        return target
    url = entry.urls[0]
    if offline:
        raise DownloadError(
            f"{entry.name}: offline mode (CLAVER_OFFLINE or HF_HUB_OFFLINE) forbids downloading "
            f"and {target} does not exist. Fetch {url} on a machine with internet access and "
            f"place it at exactly {target} (no sha256 is published for this file"
            + (f"; its sha256 starts with {entry.sha256_prefix}" if entry.sha256_prefix else "")
            + ").")
    if not allow_unverified:
        raise DownloadError(
            f"{entry.name}: no sha256 is published for {url}, so the download cannot be "
            "verified. Pass allow_unverified=True (CLI: --allow-unverified) to download it "
            f"anyway, or download it yourself, check it, and place it at {target}.")
    return _download_unverified(entry, url, target, progress)


def _download_unverified(entry: PretrainedWeights, url: str, target: Path,
                         progress: bool) -> Path:
    path, digest = download_unverified(url, sha256_prefix=entry.sha256_prefix,
                                       cache_dir=target.parent, filename=target.name,
                                       progress=progress)
    warnings.warn(f"{entry.name}: downloaded {url} without a published checksum; its sha256 is "
                  f"{digest} (keep it to check copies of {path})", stacklevel=4)
    return path


def load_pretrained(name: str | PretrainedWeights, *, cache_dir: str | Path | None = None,
                    offline: bool | None = None, allow_unverified: bool = False,
                    progress: bool = True, **overrides: Any) -> Any:
    """The model for named weights, in eval mode, with ``model.preprocess`` set to the
    preprocessing the weights expect (used by :func:`claver.predict`)."""
    from claver.models.factory import create_model

    entry = get_pretrained(name)
    path = fetch(entry, cache_dir=cache_dir, offline=offline, allow_unverified=allow_unverified,
                 progress=progress)
    model = create_model(entry.architecture, pretrained=path,
                         **{**dict(entry.options), **overrides})
    pre = entry.preprocess()
    if "num_frames" in overrides:
        import dataclasses

        pre = dataclasses.replace(pre, num_frames=model.config.num_frames)
    model.preprocess = pre
    return model.eval()


# ------------------------------------------------------------- what ``model=...`` means

def default_model() -> str:
    """``$CLAVER_MODEL`` or ``openai-vit-b32`` (OpenAI CLIP ViT-B/32, frame-mean)."""
    return os.environ.get("CLAVER_MODEL") or "openai-vit-b32"


@functools.lru_cache(maxsize=2)
def _load_named(name: str, allow_unverified: bool, cache_dir: str | None) -> Any:
    return load_pretrained(name, allow_unverified=allow_unverified, cache_dir=cache_dir)


@functools.lru_cache(maxsize=2)
def _load_file(path: str, mtime_ns: int) -> Any:
    from claver.models.factory import load_model

    return load_model(path).eval()


def resolve_model(model: Any = None, *, allow_unverified: bool = False,
                  cache_dir: str | Path | None = None) -> Any:
    """A model object from an object, named weights (``claver models list``) or a checkpoint
    path; ``None``: :func:`default_model`. Loaded models are cached (the 2 most recent)."""
    import torch

    if model is None:
        model = default_model()
    if isinstance(model, torch.nn.Module):
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a model object, a weight name or a checkpoint path, got "
                        f"{type(model).__name__}")
    name = str(model)
    if name in PRETRAINED:
        return _load_named(name, allow_unverified, None if cache_dir is None else str(cache_dir))
    path = Path(name).expanduser()
    if path.exists():
        target = path / "model.safetensors" if path.is_dir() else path
        mtime = target.stat().st_mtime_ns if target.exists() else 0
        return _load_file(str(path.resolve()), mtime)
    from claver.models.factory import list_models

    if name in list_models():
        raise ValueError(f"{name!r} is an architecture with random weights, useless for "
                         f"prediction; use named weights ({', '.join(PRETRAINED)}), a checkpoint "
                         f"path, or pass claver.create_model({name!r}, ...) yourself")
    raise FileNotFoundError(f"model {name!r} is neither named weights ({', '.join(PRETRAINED)}; "
                            "see `claver models list`) nor an existing checkpoint file")


def cache_status(entry: PretrainedWeights, cache_dir: str | Path | None = None) -> str:
    """"cached", "cached (verified)" or "not downloaded"."""
    path = entry.path(cache_dir)
    if not path.is_file():
        return "not downloaded"
    side = path.with_name(path.name + ".sha256")
    try:
        recorded = json.loads(side.read_text()).get("sha256")
    except (OSError, ValueError):
        recorded = None
    if entry.sha256 is not None and recorded == entry.sha256:
        return "cached (verified)"
    return "cached"

