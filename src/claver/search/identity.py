"""Which model made an index: its weights, architecture and preprocessing, as a JSON dict.

Two identities are the *same model* when the sha256 of the weights (every tensor of the
state dict: name, dtype, shape and bytes, in name order) and of the architecture config are
equal: a query embedded by another model lives in another space, so the search is refused.
The preprocessing (frames, crop, short side, mean/std) is recorded too; updating an index
needs it unchanged as well, since it shapes every video embedding.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

__all__ = ["describe_identity", "model_identity", "preprocessing_of", "same_model",
           "same_preprocessing", "state_dict_sha256"]

_PREPROCESSING = ("frames", "image_size", "short_side", "mean", "std")


def state_dict_sha256(model: torch.nn.Module) -> str:
    """sha256 over every tensor of ``model.state_dict()`` in name order: name, dtype,
    shape, then the raw bytes (so the same weights give the same hash on any device)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_identity(model: torch.nn.Module, preprocess: Any, spec: str | None = None
                   ) -> dict[str, Any]:
    """The identity recorded in an index header. ``spec``: how to load the model again
    (named weights or a checkpoint path; None for a model object)."""
    from claver.weights.formats import describe

    config = model.config
    config_json = json.dumps(config.to_dict(), sort_keys=True)
    return {"spec": spec, "architecture": describe(config),
            "weights_sha256": state_dict_sha256(model),
            "config_sha256": hashlib.sha256(config_json.encode()).hexdigest(),
            **preprocessing_of(preprocess)}


def preprocessing_of(preprocess: Any) -> dict[str, Any]:
    """The preprocessing fields of an identity, from a :class:`claver.inputs.Preprocess`."""
    return {"frames": preprocess.num_frames, "image_size": preprocess.image_size,
            "short_side": preprocess.short_side,
            "mean": [round(float(x), 8) for x in preprocess.mean],
            "std": [round(float(x), 8) for x in preprocess.std]}


def same_model(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Same weights and architecture (text embedded by one matches videos of the other)."""
    return (a.get("weights_sha256"), a.get("config_sha256")) == (
        b.get("weights_sha256"), b.get("config_sha256"))


def same_preprocessing(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in _PREPROCESSING)


def describe_identity(identity: dict[str, Any]) -> str:
    """One line: ``NAME (ARCH, weights sha256 0123456789ab, 8 frames 224 px)``."""
    name = identity.get("spec") or "a model object"
    weights = str(identity.get("weights_sha256") or "?")[:12]
    config = str(identity.get("config_sha256") or "?")[:8]
    return (f"{name} ({identity.get('architecture')}, weights sha256 {weights}, config "
            f"{config}, {identity.get('frames')} frames {identity.get('image_size')} px)")
