"""claver: language-action video learning on CLIP (CLAVER and ActionCLIP).

The public names are imported lazily so that ``import claver`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "tokenize": "claver.text.tokenizer",
    "create_model": "claver.models.factory",
    "load_model": "claver.models.factory",
    "list_models": "claver.models.factory",
    "kronecker_mask": "claver.models.kronecker",
    "read_video": "claver.data.decode",
    "probe_video": "claver.data.decode",
    "predict": "claver.zeroshot",
    "predict_windows": "claver.zeroshot",
    "encode_video": "claver.zeroshot",
    "encode_text": "claver.zeroshot",
    "Predictor": "claver.zeroshot",
    "load_pretrained": "claver.pretrained",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'claver' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
