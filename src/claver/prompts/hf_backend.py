"""Local Hugging Face transformers causal LM as a description backend (``--hf-model``).

Needs ``transformers`` (``pip install "claver[hf]"``). Requests are generated in batches
with left padding; chat models get their chat template, base models the completion prompt.
Sampled outputs depend on the batch they are generated in (one seed per batch, the first
request's), so use ``--batch-size 1`` or ``--temperature 0`` when each description must be
reproducible on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from claver.prompts.backends import (
    BackendError,
    FatalBackendError,
    Generation,
    Request,
    SamplingParams,
)

__all__ = ["HFBackend", "resolve_device", "resolve_dtype"]

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
           "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise RuntimeError("the Hugging Face backend (--hf-model) needs transformers: "
                           "pip install 'claver[hf]'") from e
    return transformers


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA if present, else Apple MPS if present, else CPU; otherwise as given."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"--device {device!r} is not a torch device; use auto, cpu, cuda, "
                         "cuda:1 or mps") from e


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` -> bfloat16 on a GPU that supports it, float16 on other GPUs, else float32."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"--dtype {dtype!r} is not one of auto, {', '.join(sorted(_DTYPES))}")
    return _DTYPES[dtype]


class HFBackend:
    """A causal LM from the Hub or a local folder (or already-built model and tokenizer).

    Args:
        model: path or Hub id, or a ``PreTrainedModel``.
        tokenizer: needed when ``model`` is an object; loaded from ``model`` otherwise.
        device, dtype: see :func:`resolve_device`, :func:`resolve_dtype`.
        batch_size: requests per ``generate`` call.
        style: ``chat`` (the tokenizer's chat template), ``completions`` or ``auto`` (chat
            when the tokenizer has a chat template).
        model_name: recorded with each description (default: the path or id).
    """

    concurrency = 1

    def __init__(self, model: Any, tokenizer: Any = None, *, device: str = "auto",
                 dtype: str = "auto", batch_size: int = 8, style: str = "auto",
                 model_name: str | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
        if style not in ("auto", "chat", "completions"):
            raise ValueError(f"style must be auto, chat or completions, got {style!r}")
        self.device = resolve_device(device)
        self.batch_size = batch_size
        if isinstance(model, str):
            transformers = _transformers()
            torch_dtype = resolve_dtype(dtype, self.device)
            dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 \
                else "torch_dtype"
            try:
                tokenizer = tokenizer or transformers.AutoTokenizer.from_pretrained(model)
                loaded = transformers.AutoModelForCausalLM.from_pretrained(
                    model, **{dtype_key: torch_dtype})
            except OSError as e:
                raise FatalBackendError(
                    f"cannot load --hf-model {model!r}: {e}; give a local folder with "
                    "config.json, weights and tokenizer files, or a Hub id you can reach "
                    "(HF_HUB_OFFLINE=1 uses the local cache only)") from e
            self.model_name = model_name or model
            model = loaded
        else:
            if tokenizer is None:
                raise ValueError("pass the tokenizer together with a model object")
            if dtype != "auto":
                model = model.to(resolve_dtype(dtype, self.device))
            self.model_name = model_name or getattr(model.config, "_name_or_path", "") or \
                type(model).__name__
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ValueError("the tokenizer has neither a pad nor an eos token; set one")
            tokenizer.pad_token = tokenizer.eos_token
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if style == "chat" and not has_template:
            raise ValueError(f"{self.model_name} has no chat template; use --endpoint "
                             "completions (the few-shot text prompt)")
        self.style = ("chat" if has_template else "completions") if style == "auto" else style

    def _chat_text(self, messages: Sequence[dict[str, str]]) -> str:
        try:
            return self.tokenizer.apply_chat_template(list(messages), tokenize=False,
                                                      add_generation_prompt=True)
        except Exception:  # templates that refuse a system role (jinja TemplateError)
            if not messages or messages[0]["role"] != "system":
                raise
            merged = [dict(m) for m in messages[1:]]
            merged[0]["content"] = f"{messages[0]['content']}\n\n{merged[0]['content']}"
            return self.tokenizer.apply_chat_template(merged, tokenize=False,
                                                      add_generation_prompt=True)

    @torch.inference_mode()
    def generate(self, requests: Sequence[Request],
                 params: SamplingParams) -> list[Generation | BackendError]:
        """Generate all ``requests`` in one batch (left-padded); outputs in request order."""
        if not requests:
            return []
        chat = self.style == "chat"
        texts = [self._chat_text(r.messages) if chat else r.prompt for r in requests]
        encoded = self.tokenizer(texts, return_tensors="pt", padding=True,
                                 add_special_tokens=not chat).to(self.device)
        options: dict[str, Any] = {"max_new_tokens": params.max_tokens,
                                   "pad_token_id": self.tokenizer.pad_token_id}
        if params.temperature > 0:
            options.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            options.update(do_sample=False)
        seed = requests[0].seed
        if seed is not None:
            torch.manual_seed(seed)
        try:
            output = self.model.generate(**encoded, **options)
        except torch.cuda.OutOfMemoryError as e:  # type: ignore[attr-defined]
            raise FatalBackendError(f"out of GPU memory generating a batch of {len(texts)}; "
                                    "lower --batch-size or --max-tokens") from e
        new = output[:, encoded["input_ids"].shape[1]:].cpu()
        eos = self.tokenizer.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        results: list[Generation | BackendError] = []
        for row in new.tolist():
            ended = any(token in eos_ids for token in row)
            text = self.tokenizer.decode(row, skip_special_tokens=True)
            results.append(Generation(text, truncated=not ended and
                                      len(row) >= params.max_tokens))
        return results
