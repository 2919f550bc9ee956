"""Checkpoint formats: detection, key conversion to our layout, architecture inference.

Supported (auto-detected by :func:`read_checkpoint`):

=======================  ==============================================================
``claver``               ours: safetensors with ``format=claver`` and the model config
                         as JSON metadata (self-describing, exact)
``openai-clip``          OpenAI CLIP: TorchScript archive or a plain state dict ``.pt``
``claver-official``      official CLAVER: ``{'model': state_dict, 'config': yacs node}``
``actionclip-original``  ``{'model_state_dict', 'fusion_model_state_dict'}`` (``module.``
                         prefixes, fp16 weights, 77-row frame position table)
``actionclip-mmaction2`` ``{'state_dict'}`` with ``clip.`` / ``adapter.`` prefixes
``hf-clip``              Hugging Face ``CLIPModel`` safetensors (file or directory with
                         ``config.json``)
=======================  ==============================================================

Conversions are declarative key maps (``{}`` stands for a layer index) plus an explicit
set of ignored keys per format; everything else must match exactly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from claver.fileio import FileFormatError, parse_json, read_json, short_repr
from claver.models.config import (
    BACKBONES,
    ModelConfig,
    ModelConfigError,
    TextConfig,
    VisionConfig,
)
from claver.weights.safe_load import (
    CheckpointError,
    detect_container,
    load_pickle_checkpoint,
    load_torchscript_state_dict,
)

StateDict = dict[str, torch.Tensor]

FORMATS = ("claver", "openai-clip", "claver-official", "actionclip-original",
           "actionclip-mmaction2", "hf-clip")


@dataclass
class Checkpoint:
    """A checkpoint converted to our key layout, with the architecture it implies."""

    format: str
    state_dict: StateDict
    config: ModelConfig
    source: str
    notes: dict[str, str] = field(default_factory=dict)  # config field -> assumption made
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. epoch, foreign config


# --------------------------------------------------------------------------- key maps

def _rename(sd: Mapping[str, torch.Tensor], table: Mapping[str, str],
            ignore: tuple[str, ...] = ()) -> StateDict:
    """Rename keys with a template table; ``{}`` matches one integer layer index.

    Keys matching an ``ignore`` pattern (regex) are dropped; keys matching nothing are kept
    unchanged, so that strict loading reports them as unexpected.
    """
    out: StateDict = {}
    for key, value in sd.items():
        if any(re.fullmatch(p, key) for p in ignore):
            continue
        indices = re.findall(r"\.(\d+)(?=\.)", key)
        template = re.sub(r"\.(\d+)(?=\.)", ".{}", key)
        new = table.get(template)
        out[new.format(*indices) if new is not None else key] = value
    return out


def _strip_prefix(sd: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return dict(sd)


def _to_float(sd: Mapping[str, torch.Tensor]) -> StateDict:
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


_OPENAI_EXTRAS = ("input_resolution", "context_length", "vocab_size")

_HF_LAYER = {
    "self_attn.out_proj.weight": "attn.out_proj.weight",
    "self_attn.out_proj.bias": "attn.out_proj.bias",
    "layer_norm1.weight": "ln_1.weight", "layer_norm1.bias": "ln_1.bias",
    "mlp.fc1.weight": "mlp.c_fc.weight", "mlp.fc1.bias": "mlp.c_fc.bias",
    "mlp.fc2.weight": "mlp.c_proj.weight", "mlp.fc2.bias": "mlp.c_proj.bias",
    "layer_norm2.weight": "ln_2.weight", "layer_norm2.bias": "ln_2.bias",
}
HF_CLIP_KEYS: dict[str, str] = {
    "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
    "vision_model.embeddings.class_embedding": "visual.class_embedding",
    "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
    "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
    "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
    "vision_model.post_layernorm.weight": "visual.ln_post.weight",
    "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
    "logit_scale": "logit_scale",
    **{f"vision_model.encoder.layers.{{}}.{a}": f"visual.transformer.resblocks.{{}}.{b}"
       for a, b in _HF_LAYER.items()},
    **{f"text_model.encoder.layers.{{}}.{a}": f"transformer.resblocks.{{}}.{b}"
       for a, b in _HF_LAYER.items()},
}
HF_CLIP_IGNORE = (r".*position_ids",)

ACTIONCLIP_FUSION_KEYS: dict[str, str] = {
    "frame_position_embeddings.weight": "fusion.frame_position_embeddings.weight",
    "shift.weight": "fusion.shift.weight",
    "transformer.cls_token": "fusion.cls_token",
    "transformer.pos_embed": "fusion.pos_embed",
}
MMACTION2_KEYS: dict[str, str] = {
    "adapter.frame_position_embeddings.weight": "fusion.frame_position_embeddings.weight",
}


def _prefix_map(sd: Mapping[str, torch.Tensor], old: str, new: str) -> StateDict:
    return {(new + k[len(old):] if k.startswith(old) else k): v for k, v in sd.items()}


def convert_hf_clip(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """Hugging Face ``CLIPModel`` keys -> OpenAI layout (q/k/v fused, projections transposed)."""
    out = _rename(sd, HF_CLIP_KEYS, HF_CLIP_IGNORE)
    fused: StateDict = {}
    pattern = re.compile(r"(vision|text)_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\."
                         r"(weight|bias)")
    parts: dict[tuple[str, str, str], dict[str, torch.Tensor]] = {}
    for key in list(out):
        m = pattern.fullmatch(key)
        if m:
            tower, idx, qkv, kind = m.groups()
            parts.setdefault((tower, idx, kind), {})[qkv] = out.pop(key)
    for (tower, idx, kind), qkv in parts.items():
        if set(qkv) != {"q", "k", "v"}:
            raise CheckpointError(f"layer {idx} of the {tower} tower lacks some of q/k/v_proj")
        prefix = "visual.transformer" if tower == "vision" else "transformer"
        fused[f"{prefix}.resblocks.{idx}.attn.in_proj_{kind}"] = torch.cat(
            [qkv["q"], qkv["k"], qkv["v"]])
    out.update(fused)
    if "visual_projection.weight" in out:
        out["visual.proj"] = out.pop("visual_projection.weight").t().contiguous()
    if "text_projection.weight" in out:
        out["text_projection"] = out.pop("text_projection.weight").t().contiguous()
    if "visual.class_embedding" in out:
        out["visual.class_embedding"] = out["visual.class_embedding"].reshape(-1)
    return out


def convert_actionclip_fusion(fusion_sd: Mapping[str, torch.Tensor]) -> tuple[StateDict, str]:
    """Original ``fusion_model_state_dict`` -> ``fusion.*`` keys and the head type."""
    sd = _strip_prefix(fusion_sd, "module.")
    keys = set(sd)
    if any(k.startswith("transformer.transformer_enc.") for k in keys):
        fusion = "Transf_cls"
    elif any(k.startswith("transformer.resblocks.") for k in keys):
        fusion = "Transf"
    elif any(k.startswith("lstm_visual.") for k in keys):
        fusion = "LSTM"
    elif "shift.weight" in keys:
        fusion = "Conv1D"
    else:
        fusion = "meanP"
    ignore = () if fusion == "Transf" else (r"frame_position_embeddings\.weight",)
    out = _rename(sd, ACTIONCLIP_FUSION_KEYS, ignore)
    out = _prefix_map(out, "transformer.transformer_enc.", "fusion.transformer_enc.")
    out = _prefix_map(out, "transformer.resblocks.", "fusion.transformer.resblocks.")
    return _prefix_map(out, "lstm_visual.", "fusion.lstm_visual."), fusion


# ------------------------------------------------------------------ architecture inference

def _count_layers(sd: Mapping[str, torch.Tensor], prefix: str) -> int:
    idx = {int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return max(idx) + 1 if idx else 0


def infer_config(sd: Mapping[str, torch.Tensor], **fields: Any) -> ModelConfig:
    """Architecture of a state dict in our layout (heads = width // 64, as in every CLIP)."""
    try:
        conv = sd["visual.conv1.weight"]
        vw, patch = conv.shape[0], conv.shape[-1]
        grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        vision = VisionConfig(patch * grid, patch, vw,
                              _count_layers(sd, "visual.transformer.resblocks."),
                              max(1, vw // 64))
        tw = sd["ln_final.weight"].shape[0]
        text = TextConfig(sd["positional_embedding"].shape[0],
                          sd["token_embedding.weight"].shape[0], tw,
                          _count_layers(sd, "transformer.resblocks."), max(1, tw // 64))
        embed_dim = sd["visual.proj"].shape[1]
    except KeyError as e:
        raise CheckpointError(f"not a CLIP ViT state dict: missing key {e.args[0]!r}") from None
    if "visual.temporal_embedding" in sd:
        fields.setdefault("arch", "claver")
        fields.setdefault("num_frames", sd["visual.temporal_embedding"].shape[1])
        fields.setdefault("temporal_layers", _count_layers(sd, "visual.transformer_t.resblocks."))
    elif any(k.startswith("fusion.") for k in sd):
        fields.setdefault("arch", "actionclip")
        fields.setdefault("fusion_layers", _count_layers(sd, "fusion.transformer.resblocks.")
                          or _count_layers(sd, "fusion.transformer_enc.layers.") or 6)
    else:
        fields.setdefault("arch", "clip")
    return ModelConfig(embed_dim=embed_dim, vision=vision, text=text, **fields)


def describe(config: ModelConfig) -> str:
    """A short human name for an architecture, e.g. ``claver-vit-b16 (8 frames, kmt)``."""
    backbone = next((name for name, (e, v, t) in BACKBONES.items()
                     if (e, v, t) == (config.embed_dim, config.vision, config.text)), None)
    if backbone is None:
        v = config.vision
        backbone = (f"custom ViT (image {v.image_size}, patch {v.patch_size}, width {v.width}, "
                    f"{v.layers} layers; text width {config.text.width})")
    name = f"{config.arch}-{backbone}"
    if config.arch == "claver":
        return (f"{name} ({config.num_frames} frames, {config.num_temporal_layers} temporal "
                f"block(s), mask {config.mask})")
    if config.arch == "actionclip":
        return f"{name} (fusion {config.fusion}, {config.num_frames} frames)"
    return name


# ----------------------------------------------------------------------------- readers

def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(v, torch.Tensor) for v in obj.values())


def _read_safetensors(path: Path) -> Checkpoint:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)
    if meta.get("format") == "claver":
        config = _stored_config(meta.get("config"), path, "its 'config' metadata")
        return Checkpoint("claver", sd, config, str(path), extra={"metadata": meta})
    if any(k.startswith(("vision_model.", "text_model.")) for k in sd):
        hf_config = path.with_name("config.json")
        return _from_hf(sd, hf_config if hf_config.is_file() else None, path)
    if "visual.conv1.weight" in sd:
        return _from_clip_layout(sd, path, "openai-clip")
    raise CheckpointError(
        f"{path}: safetensors file with unrecognised keys (first: {sorted(sd)[:5]}); "
        f"supported formats: {', '.join(FORMATS)}")


def _stored_config(raw: Any, path: Path, where: str) -> ModelConfig:
    """Our stored model config (JSON text or a mapping), every field validated; errors are
    CheckpointErrors naming the file, the field, the value and the fix."""
    try:
        data = parse_json(raw, f"{path} ({where})") if isinstance(raw, str) else raw
        return ModelConfig.from_dict(data)
    except FileFormatError as e:
        raise CheckpointError(f"{e}; re-create the file with `claver convert` from the "
                              "original weights") from None
    except ModelConfigError as e:
        raise CheckpointError(f"{path}: {where}: {e}") from None


def _hf_heads(config_json: Path, weights: Path) -> dict[str, Any]:
    """Attention heads from the Hugging Face ``config.json`` beside ``weights`` (only what we
    use is checked: ``*_config.num_attention_heads`` and ``hidden_act``)."""
    fix = f"fix it, or remove it to read {weights.name} with heads = width / 64"
    try:
        hf = read_json(config_json, what="config.json")
    except FileFormatError as e:
        raise CheckpointError(f"{e} (the config.json beside {weights.name}); {fix}") from None
    if not isinstance(hf, dict):
        raise CheckpointError(f"{config_json}: expected a JSON object, got {short_repr(hf)}; "
                              f"{fix}")
    fields: dict[str, Any] = {}
    acts = set()
    for tower, key in (("vision", "vision_config"), ("text", "text_config")):
        sub = hf.get(key) or {}
        if not isinstance(sub, dict):
            raise CheckpointError(f"{config_json}: {key} must be a JSON object, got "
                                  f"{short_repr(sub)}; {fix}")
        heads = sub.get("num_attention_heads")
        if heads is not None:
            if not isinstance(heads, int) or isinstance(heads, bool) or heads < 1:
                raise CheckpointError(f"{config_json}: {key}.num_attention_heads must be a "
                                      f"positive whole number, got {short_repr(heads)}; {fix}")
            fields[tower] = {"heads": heads}
        act = sub.get("hidden_act", "quick_gelu")
        acts.add(act if isinstance(act, str) else short_repr(act))
    if acts != {"quick_gelu"}:
        raise CheckpointError(f"{config_json}: hidden_act {short_repr(sorted(acts))} is not CLIP's "
                              "quick_gelu; only OpenAI-style CLIP checkpoints are supported")
    return fields


def _inferred(sd: Mapping[str, torch.Tensor], path: Path, **fields: Any) -> ModelConfig:
    try:
        return infer_config(sd, **fields)
    except ModelConfigError as e:
        raise CheckpointError(f"{path}: the tensor shapes describe an unsupported model: "
                              f"{e}") from None


def _from_hf(sd: StateDict, config_json: Path | None, path: Path) -> Checkpoint:
    notes: dict[str, str] = {}
    fields: dict[str, Any] = {}
    if config_json is not None:  # checked first: its errors name it, not the weights
        fields = _hf_heads(config_json, path)
    else:
        notes["heads"] = "no config.json beside the weights: attention heads assumed width // 64"
    ours = convert_hf_clip(sd)
    cfg = _inferred(ours, path)
    if fields:
        try:
            cfg = cfg.replace(**fields)
        except ModelConfigError as e:
            raise CheckpointError(f"{config_json}: num_attention_heads do not fit the weights "
                                  f"in {path.name}: {e}") from None
    return Checkpoint("hf-clip", _to_float(ours), cfg, str(path), notes)


def _from_clip_layout(sd: Mapping[str, torch.Tensor], path: Path, fmt: str,
                      **fields: Any) -> Checkpoint:
    sd = _to_float({k: v for k, v in sd.items() if k not in _OPENAI_EXTRAS})
    return Checkpoint(fmt, sd, _inferred(sd, path, **fields), str(path))


def _find_mask_mode(node: Any) -> str | None:
    """Look for 'kmt'/'kmct' in a (possibly nested) foreign config node."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, str) and item.lower() in ("kmt", "kmct"):
            return item.lower()
    return None


def _from_pickle(obj: Any, path: Path) -> Checkpoint:
    if isinstance(obj, Mapping) and str(obj.get("format", "")).startswith("claver-train"):
        config = _stored_config(obj.get("model_config"), path, "its 'model_config' entry")
        return Checkpoint("claver", dict(obj["model"]), config, str(path),
                          extra={"epoch": obj.get("epoch"), "step": obj.get("step")})
    if isinstance(obj, Mapping) and "model_state_dict" in obj:
        clip = _strip_prefix(obj["model_state_dict"], "module.")
        fusion_sd, fusion = convert_actionclip_fusion(obj.get("fusion_model_state_dict") or {})
        sd = {**clip, **fusion_sd}
        fields: dict[str, Any] = {"arch": "actionclip", "fusion": fusion}
        if fusion == "Conv1D":  # trained with the original's (B, T, C) -> (B, C, T) view
            fields["conv1d_layout"] = "original"
        if "fusion.pos_embed" in sd:
            fields["num_frames"] = sd["fusion.pos_embed"].shape[1] - 1
        ckpt = _from_clip_layout(sd, path, "actionclip-original", **fields)
        if "fusion.pos_embed" not in sd:
            ckpt.notes["num_frames"] = ("the original ActionCLIP format does not record the number"
                                        " of frames: assuming 8 (pass num_frames=... to change)")
        ckpt.extra = {"epoch": obj.get("epoch")}
        return ckpt
    if isinstance(obj, Mapping) and "state_dict" in obj and any(
            k.startswith("clip.") for k in obj["state_dict"]):
        sd = _prefix_map(_rename(obj["state_dict"], MMACTION2_KEYS), "adapter.transformer.",
                         "fusion.transformer.")
        sd = {k[5:] if k.startswith("clip.") else k: v for k, v in sd.items()}
        fields = {"arch": "actionclip", "fusion": "Transf" if any(
            k.startswith("fusion.transformer.") for k in sd) else "meanP"}
        if "fusion.frame_position_embeddings.weight" in sd:
            fields["num_frames"] = sd["fusion.frame_position_embeddings.weight"].shape[0]
        return _from_clip_layout(sd, path, "actionclip-mmaction2", **fields)
    if isinstance(obj, Mapping) and _is_tensor_dict(obj.get("model")):
        sd = _strip_prefix(obj["model"], "module.")
        foreign = obj.get("config")
        mode = _find_mask_mode(foreign)
        fmt = "claver-official" if "visual.temporal_embedding" in sd else "openai-clip"
        ckpt = _from_clip_layout(sd, path, fmt, **({"mask": mode} if mode else {}))
        if mode is None and fmt == "claver-official":
            ckpt.notes["mask"] = ("the checkpoint does not say whether it was trained with KMT "
                                  "or KMCT: assuming kmt (pass mask='kmct' to change)")
        ckpt.extra = {"epoch": obj.get("epoch"), "config": foreign}
        return ckpt
    if _is_tensor_dict(obj):
        sd = _strip_prefix(obj, "module.")
        if "visual.conv1.weight" in sd:
            fmt = "claver-official" if "visual.temporal_embedding" in sd else "openai-clip"
            return _from_clip_layout(sd, path, fmt)
        if any(k.startswith(("vision_model.", "text_model.")) for k in sd):
            return _from_hf(sd, None, path)
    found = sorted(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
    raise CheckpointError(
        f"{path}: unsupported checkpoint format (found {found}); supported: "
        f"{', '.join(FORMATS)}. A CLIP ViT state dict, an official CLAVER or ActionCLIP "
        "checkpoint, or a Hugging Face CLIPModel is expected")


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read any supported checkpoint file (or HF directory) into our key layout."""
    path = Path(path)
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).is_file():
                return read_checkpoint(path / name)
        raise CheckpointError(f"{path} is a directory without model.safetensors or "
                              "pytorch_model.bin")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    kind = detect_container(path)
    if kind == "safetensors":
        try:
            return _read_safetensors(path)
        except CheckpointError:
            raise
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise CheckpointError(f"{path}: corrupt safetensors file ({e})") from e
    if kind == "torchscript":
        return _from_clip_layout(load_torchscript_state_dict(path), path, "openai-clip")
    if kind in ("torch-zip", "torch-legacy"):
        return _from_pickle(load_pickle_checkpoint(path), path)
    size = path.stat().st_size
    raise CheckpointError(
        f"{path}: not a checkpoint this library can read ({size} bytes, unknown container); "
        "expected a PyTorch .pt/.pth/.bin, a TorchScript archive or a .safetensors file")
