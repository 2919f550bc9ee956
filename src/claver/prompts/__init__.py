"""Interpretive prompts: LLM-written action descriptions, generated, checked and used.

- :mod:`~claver.prompts.generate`: ``generate_descriptions`` (resumable, cached).
- :mod:`~claver.prompts.backends`: ``OpenAIBackend`` (any OpenAI-compatible server);
  :mod:`~claver.prompts.hf_backend`: ``HFBackend`` (local transformers causal LM).
- :mod:`~claver.prompts.fewshot`: the prompts of the four kinds, overridable from a file.
- :mod:`~claver.prompts.postprocess`: cleaning, rejection, fitting into 77 CLIP tokens.
- :mod:`~claver.prompts.formats`: our JSONL and CLAVER-style CSV import.
- :mod:`~claver.prompts.check`: coverage / length / duplicate report.
- :mod:`~claver.prompts.rows`: text rows (templates + descriptions) for training and eval.

Names are imported lazily (``transformers`` and ``torch`` only load when used).
"""

from __future__ import annotations

from claver.lazy import lazy_attributes

_LAZY = {
    "generate_descriptions": "claver.prompts.generate",
    "GenerationReport": "claver.prompts.generate",
    "OpenAIBackend": "claver.prompts.backends",
    "SamplingParams": "claver.prompts.backends",
    "BackendError": "claver.prompts.backends",
    "HFBackend": "claver.prompts.hf_backend",
    "KINDS": "claver.prompts.fewshot",
    "PromptSpec": "claver.prompts.fewshot",
    "resolve_prompts": "claver.prompts.fewshot",
    "process_output": "claver.prompts.postprocess",
    "fit_to_context": "claver.prompts.postprocess",
    "Description": "claver.prompts.formats",
    "read_descriptions": "claver.prompts.formats",
    "write_descriptions": "claver.prompts.formats",
    "read_claver_csv": "claver.prompts.formats",
    "load_descriptions": "claver.prompts.formats",
    "descriptions_by_class": "claver.prompts.formats",
    "check_descriptions": "claver.prompts.check",
    "TextRows": "claver.prompts.rows",
    "build_text_rows": "claver.prompts.rows",
    "description_rows": "claver.prompts.rows",
    "tokenize_text_rows": "claver.prompts.rows",
    "sample_rows": "claver.prompts.rows",
    "mean_row_probabilities": "claver.prompts.rows",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
