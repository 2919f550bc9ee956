"""claver: language-action video learning on CLIP (CLAVER and ActionCLIP).

The public names are imported lazily so that ``import claver`` stays cheap.
"""

from __future__ import annotations

from claver.lazy import lazy_attributes

__version__ = "0.1.0"

_LAZY = {
    "tokenize": "claver.text.tokenizer",
    "create_model": "claver.models.factory",
    "load_model": "claver.models.factory",
    "list_models": "claver.models.factory",
    "kronecker_mask": "claver.models.kronecker",
    "read_video": "claver.data.decode",
    "probe_video": "claver.data.decode",
    "VideoReader": "claver.data.decode",
    "DecodeLimits": "claver.data.decode",
    "predict": "claver.zeroshot",
    "predict_windows": "claver.zeroshot",
    "encode_video": "claver.zeroshot",
    "encode_text": "claver.zeroshot",
    "Predictor": "claver.zeroshot",
    "load_pretrained": "claver.pretrained",
    "index": "claver.search",
    "Index": "claver.search",
}

__all__ = ["__version__", *_LAZY]

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
