"""Build models by name, load any supported checkpoint, save our self-describing format."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from claver.fileio import short_repr
from claver.models.clip import CLIP
from claver.models.config import (
    BACKBONES,
    OPENAI_NAMES,
    ModelConfig,
    check_size,
    get_config,
    model_names,
)
from claver.weights.formats import Checkpoint, CheckpointError, describe, read_checkpoint

# Parameters a CLIP-only checkpoint cannot provide: initialised fresh when it is loaded into a
# video model.
NEW_PARTS = ("visual.temporal_embedding", "visual.transformer_t.", "fusion.")


def build_model(config: ModelConfig, *, max_params: int | float | None = None) -> CLIP:
    """A randomly initialised model for ``config`` (CLIP, CLAVER or ActionCLIP).

    Refuses (``ModelConfigError``) a config of more than ``max_params`` parameters (default
    ``$CLAVER_MAX_PARAMS`` or 2e9), counted before anything is allocated.
    """
    check_size(config, max_params)
    return _construct(config)


def _construct(config: ModelConfig) -> CLIP:
    if config.arch == "claver":
        from claver.models.claver import CLAVER

        return CLAVER(config)
    if config.arch == "actionclip":
        from claver.models.actionclip import ActionCLIP

        return ActionCLIP(config)
    return CLIP(config)


def list_models() -> list[str]:
    """Every model name :func:`create_model` accepts."""
    return model_names()


def _interpolate_rows(table: torch.Tensor, rows: int) -> torch.Tensor:
    """Linear interpolation of a (N, D) table to (rows, D) along N."""
    x = table.t()[None].float()  # (1, D, N)
    return F.interpolate(x, size=rows, mode="linear", align_corners=True)[0].t().to(table.dtype)


def adapt_frames(sd: dict[str, torch.Tensor], config: ModelConfig, source: str) -> None:
    """Fit frame-indexed tables of ``sd`` to ``config.num_frames`` (in place), warning."""
    t = config.num_frames
    key = "visual.temporal_embedding"
    if key in sd and sd[key].shape[1] != t:
        warnings.warn(f"{source}: temporal embedding has {sd[key].shape[1]} frames, the model "
                      f"{t}; interpolating it linearly", stacklevel=3)
        sd[key] = _interpolate_rows(sd[key][0], t)[None]
    key = "fusion.frame_position_embeddings.weight"
    if key in sd and sd[key].shape[0] != t:
        rows = sd[key].shape[0]
        if rows == config.text.context_length and rows > t:
            sd[key] = sd[key][:t]  # the original ActionCLIP table has 77 rows; frames use the first
        else:
            warnings.warn(f"{source}: frame position table has {rows} rows, the model {t} frames;"
                          " interpolating it linearly", stacklevel=3)
            sd[key] = _interpolate_rows(sd[key], t)
    key = "fusion.pos_embed"
    if key in sd and sd[key].shape[1] != t + 1:
        warnings.warn(f"{source}: fusion position embedding is for {sd[key].shape[1] - 1} frames, "
                      f"the model {t}; interpolating it linearly", stacklevel=3)
        table = sd[key][0]
        sd[key] = torch.cat([table[:1], _interpolate_rows(table[1:], t)])[None]


def _fmt_keys(keys: list[str], limit: int = 8) -> str:
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _meta_shapes(config: ModelConfig) -> dict[str, torch.Size]:
    """Parameter shapes of the model ``config`` describes, built on the meta device (no
    memory is allocated for the values)."""
    with torch.device("meta"):
        model = _construct(config)
    return {k: v.shape for k, v in model.state_dict().items()}


_FIT_FIX = ("Use claver.load_model(path) to build the architecture the checkpoint describes, or "
            "pass matching options (model name, num_frames, fusion, mask).")


def _check_fit(expected: Mapping[str, torch.Size], sd: Mapping[str, torch.Tensor],
               ckpt: Checkpoint, config: ModelConfig, allow_new_parts: bool,
               fix: str = _FIT_FIX) -> list[str]:
    """The keys initialised fresh; CheckpointError when ``sd`` does not fit ``expected``."""
    missing = [k for k in expected if k not in sd]
    fresh = [k for k in missing if allow_new_parts and k.startswith(NEW_PARTS)]
    missing = [k for k in missing if k not in fresh]
    unexpected = [k for k in sd if k not in expected]
    mismatched = [f"{k} {tuple(sd[k].shape)} vs model {tuple(expected[k])}"
                  for k in sd if k in expected and sd[k].shape != expected[k]]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"missing {len(missing)} key(s): {_fmt_keys(missing)}")
        if unexpected:
            problems.append(f"unexpected {len(unexpected)} key(s): {_fmt_keys(unexpected)}")
        if mismatched:
            problems.append(f"{len(mismatched)} shape mismatch(es): {_fmt_keys(mismatched, 4)}")
        raise CheckpointError(
            f"{ckpt.source} ({ckpt.format} format, looks like {describe(ckpt.config)}) does not "
            f"fit the requested {describe(config)}: " + "; ".join(problems) + ". " + fix)
    return fresh


def _copy_in(model: CLIP, sd: Mapping[str, torch.Tensor]) -> None:
    dtype = model.dtype
    model.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v
                           for k, v in sd.items()}, strict=False)


def load_weights(model: CLIP, ckpt: Checkpoint, *, allow_new_parts: bool = False) -> list[str]:
    """Load ``ckpt`` into ``model`` strictly; returns the keys initialised fresh.

    ``allow_new_parts``: a CLIP-only checkpoint may leave the temporal / fusion parameters
    (:data:`NEW_PARTS`) at their initialisation. Anything else missing, unexpected or of the
    wrong shape raises :class:`CheckpointError` listing the keys.
    """
    sd = dict(ckpt.state_dict)
    adapt_frames(sd, model.config, ckpt.source)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    fresh = _check_fit(expected, sd, ckpt, model.config, allow_new_parts)
    _copy_in(model, sd)
    return fresh


def _build_loaded(ckpt: Checkpoint, config: ModelConfig, max_params: int | float | None,
                  source: str, fix: str = _FIT_FIX) -> CLIP:
    """``config``'s model with ``ckpt``'s weights; size and fit are checked before the model
    is allocated, so a small file describing a huge model costs nothing."""
    check_size(config, max_params, source)
    sd = dict(ckpt.state_dict)
    adapt_frames(sd, config, ckpt.source)
    allow_new_parts = ckpt.config.arch == "clip"
    _check_fit(_meta_shapes(config), sd, ckpt, config, allow_new_parts, fix)
    model = _construct(config)
    _copy_in(model, sd)
    return model


def _warn_notes(ckpt: Checkpoint, overrides: dict[str, Any]) -> None:
    for field_name, note in ckpt.notes.items():
        given = field_name in overrides or (
            field_name == "heads" and ("vision" in overrides or "text" in overrides))
        if not given:
            warnings.warn(f"{ckpt.source}: {note}", stacklevel=3)


def _backbone_of(config: ModelConfig) -> str | None:
    return next((name for name, (e, v, t) in BACKBONES.items()
                 if (e, v, t) == (config.embed_dim, config.vision, config.text)), None)


class NoOpenAIWeights(ValueError):
    """``pretrained="openai"`` for a model whose backbone OpenAI never released."""


def openai_weights(config: ModelConfig, cache_dir: str | Path | None = None) -> Path:
    """Path to OpenAI's CLIP weights for ``config``'s backbone (downloaded and verified)."""
    from claver.weights.download import OPENAI_CLIP_URLS, download, openai_sha256

    backbone = _backbone_of(config)
    name = next((n for n, b in OPENAI_NAMES.items() if b == backbone), None)
    if name is None:
        raise NoOpenAIWeights(f"pretrained='openai' needs an OpenAI backbone "
                              f"({list(OPENAI_NAMES)}); {describe(config)} has none")
    url = OPENAI_CLIP_URLS[name]
    return download(url, openai_sha256(url), cache_dir=cache_dir)


# ModelConfig fields a run may set on top of a checkpoint's recorded architecture: the frame
# count (the temporal embedding is interpolated), the mask variant and the input
# normalisation. Every other field is the architecture itself.
RUN_FIELDS = ("num_frames", "mask", "mean", "std")


def _flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = list(value) if isinstance(value, tuple) else value
    return out


def config_differences(expected: ModelConfig, found: ModelConfig,
                       ignore: tuple[str, ...] = RUN_FIELDS) -> list[str]:
    """``"field: expected vs found"`` for every architecture field that differs (nested
    fields dotted, e.g. ``vision.heads: 1 vs 4``), ``ignore`` left out."""
    a, b = _flat(expected.to_dict()), _flat(found.to_dict())
    return [f"{k}: {a.get(k)} vs {b.get(k)}" for k in a if k.split(".")[0] not in ignore
            and a.get(k) != b.get(k)]


def matching_preset(config: ModelConfig) -> str | None:
    """The model name whose preset has ``config``'s architecture, if any."""
    return next((n for n in list_models() if "/" not in n
                 and not config_differences(get_config(n), config)), None)


def _check_preset(name: str, config: ModelConfig, ckpt: Checkpoint) -> None:
    """A checkpoint that records its architecture (our formats) must agree with the preset
    it is loaded under; shapes can match while heads or layers differ (silently wrong)."""
    if ckpt.format != "claver" or (ckpt.config.arch == "clip" and config.arch != "clip"):
        return  # foreign formats infer their config; a CLIP checkpoint under a video model
    diffs = config_differences(config, ckpt.config)
    if diffs:
        preset = matching_preset(ckpt.config)
        use = (f"use {preset!r} (MODEL.ARCH={preset})" if preset else
               "load it with claver.load_model(path) (claver test/predict --model PATH)")
        raise CheckpointError(
            f"{ckpt.source} records an architecture that differs from {name!r} ({name!r} vs "
            f"the checkpoint: {'; '.join(diffs)}): {use}")


def create_model(name: str, *, pretrained: str | Path | None = None,
                 cache_dir: str | Path | None = None, max_params: int | float | None = None,
                 **overrides: Any) -> CLIP:
    """Build a named model, optionally with weights.

    ``name``: e.g. ``claver-vit-b16``, ``actionclip-vit-b32``, ``clip-vit-l14``, ``ViT-B/32``,
    ``claver-tiny`` (see :func:`list_models`). ``overrides``: :class:`ModelConfig` fields
    (``num_frames=16``, ``mask="kmct"``, ``fusion="Transf"``). ``pretrained``: ``"openai"``
    (OpenAI CLIP weights, downloaded once and verified; temporal/fusion parts initialised
    fresh) or a path to any supported checkpoint. Every option is validated and the
    parameter count checked against ``max_params`` (default ``$CLAVER_MAX_PARAMS`` or 2e9)
    before anything is downloaded or built. A checkpoint in our format records its
    architecture: when it differs from ``name``'s (e.g. 4 heads where the preset has 1;
    ``num_frames``, ``mask``, ``mean``/``std`` may differ) the load is refused with the list
    of differing fields.
    """
    config = get_config(name, **overrides)
    check_size(config, max_params, f"model {name!r}")
    if pretrained is None:
        return _construct(config)
    # fetch/read weights first and check they fit: fail fast, before building
    path = openai_weights(config, cache_dir) if str(pretrained) == "openai" else pretrained
    ckpt = read_checkpoint(path)
    if "conv1d_layout" not in overrides and config.fusion == ckpt.config.fusion:
        # how the checkpoint's Conv1D head reads its input is part of what it computes
        config = config.replace(conv1d_layout=ckpt.config.conv1d_layout)
    _check_preset(name, config, ckpt)
    return _build_loaded(ckpt, config, max_params, f"model {name!r}")


def load_model(path: str | Path, *, max_params: int | float | None = None,
               **overrides: Any) -> CLIP:
    """Load any supported checkpoint, building the architecture it describes.

    ``overrides`` change the config read from the checkpoint: ``num_frames=16``
    (interpolates the temporal embedding, with a warning), ``arch="claver"`` to put a CLIP
    checkpoint under a CLAVER model (temporal parts initialised fresh), ``mask="kmct"``.
    The config is validated when the file is read; the model it describes must stay under
    ``max_params`` parameters (default ``$CLAVER_MAX_PARAMS`` or 2e9) and the file must hold
    its weights, both checked before the model is allocated.
    """
    ckpt = read_checkpoint(path)
    _warn_notes(ckpt, overrides)
    try:
        config = ckpt.config.replace(**overrides)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot apply options {short_repr(overrides)}: "
                              f"{e}") from None
    fix = (f"Drop or change the options {short_repr(overrides)}." if overrides else
           "The file does not hold the weights its own model config describes: it is damaged "
           "or was not written by claver; re-create it with `claver convert` from the "
           "original weights.")
    return _build_loaded(ckpt, config, max_params, f"{path}: the model config", fix)


def save_model(model: CLIP, path: str | Path) -> Path:
    """Write ``model`` as our self-describing safetensors file (weights + config JSON)."""
    from safetensors.torch import save_file

    from claver import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"format": "claver", "config": json.dumps(model.config.to_dict()),
            "claver_version": __version__}
    tmp = path.with_name(path.name + ".tmp")
    save_file(sd, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


__all__ = ["NoOpenAIWeights", "build_model", "config_differences", "create_model",
           "list_models", "load_model", "load_weights", "save_model", "CheckpointError"]
