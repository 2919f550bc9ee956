"""Text rows for training and evaluation: templates + interpretive descriptions.

CLAVER matches a video against a (R, C, 77) tensor of token rows: R = P + A rows, P filled
from templates (``"a video of {}."``) and A from per-class descriptions, C classes. Row
``r`` holds one text per class; training uses K random rows per step, evaluation averages
the per-row class probabilities over all R rows.

Classes have unequal numbers of descriptions. Row ``P + a`` holds each class's ``a``-th
description; a class with fewer than A descriptions fills its remaining rows by
re-sampling its **own** descriptions (a shuffled pass over them, then another, ...) — never
another class's text. The draws are seeded, so the rows are the same on every run and
every rank. Each class draws from its own generator (seeded with ``(seed, class id)``), so
adding descriptions to one class never changes another class's rows.

Typical use in a training loop::

    rows = TextRows.from_files(class_names, ["descriptions.jsonl"], templates="claver")
    gen = torch.Generator().manual_seed(0)
    text = rows.sample_rows(5, gen).to(device)   # (5, C, 77) for this step
    logits = model(video, text)                  # (B, 5, C)
    ...
    probs = mean_row_probabilities(model(video, rows.tokens.to(device)))  # eval: (B, C)
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence

import torch

from claver.text.prompts import fill_templates, get_templates
from claver.text.tokenizer import DEFAULT_CONTEXT_LENGTH, tokenize

__all__ = [
    "TextRows",
    "build_text_rows",
    "description_rows",
    "mean_row_probabilities",
    "pad_descriptions",
    "sample_row_indices",
    "sample_rows",
    "tokenize_text_rows",
]

Generator = torch.Generator | int | None


def _as_lists(descriptions: Sequence[Sequence[str]] | Mapping[int, Sequence[str]] | None,
              num_classes: int) -> list[list[str]]:
    if descriptions is None:
        return [[] for _ in range(num_classes)]
    if isinstance(descriptions, Mapping):
        extra = sorted(k for k in descriptions if not 0 <= k < num_classes)
        if extra:
            raise ValueError(f"descriptions given for class ids {extra[:10]} outside "
                             f"0..{num_classes - 1}; use the matching label file")
        return [list(descriptions.get(c, ())) for c in range(num_classes)]
    if len(descriptions) != num_classes:
        raise ValueError(f"descriptions_by_class has {len(descriptions)} entries for "
                         f"{num_classes} classes; give one list per class (empty lists allowed "
                         "only when no description rows are wanted)")
    lists = []
    for c, texts in enumerate(descriptions):
        if isinstance(texts, str):
            raise TypeError(f"descriptions of class {c} must be a list of strings, got the "
                            f"string {texts[:40]!r}")
        lists.append(list(texts))
    return lists


def pad_descriptions(texts: Sequence[str], rows: int, rng: random.Random) -> list[str]:
    """``rows`` texts from one class's ``texts``: all of them in order, then re-sampled ones.

    Fewer than ``rows``: shuffled passes over ``texts`` fill the rest (each text is reused
    as evenly as possible). More: a seeded subset of ``rows``, kept in the given order.
    """
    if rows <= len(texts):
        keep = sorted(rng.sample(range(len(texts)), rows)) if rows < len(texts) else None
        return list(texts) if keep is None else [texts[i] for i in keep]
    out = list(texts)
    while len(out) < rows:
        order = list(range(len(texts)))
        rng.shuffle(order)
        out += [texts[i] for i in order[: rows - len(out)]]
    return out


def build_text_rows(
    class_names: Sequence[str],
    templates: str | Sequence[str],
    descriptions_by_class: Sequence[Sequence[str]] | Mapping[int, Sequence[str]] | None = None,
    *,
    rows: int | None = None,
    rng: random.Random | int | None = None,
) -> list[list[str]]:
    """Texts of the P + A rows: ``result[r][c]`` is row ``r``'s text for class ``c``.

    Args:
        class_names: C names in class-id order.
        templates: a template set name (``claver``, ``actionclip``, ``name``, ``video``) or a
            list of templates holding ``{}`` (see :mod:`claver.text.prompts`); P rows.
        descriptions_by_class: per class, its descriptions (list of C lists, or a mapping
            class id -> list); None for templates only.
        rows: A, the number of description rows; default: the largest count of any class.
            Classes with fewer are padded with their own descriptions, classes with more
            keep a seeded subset of A.
        rng: ``random.Random`` (used as it is), or an int seed (default 0): class ``c`` then
            draws from ``random.Random(f"{seed}/{c}")``.

    Raises:
        ValueError: a class has no description while A > 0 (padding it with another class's
            text would teach the model wrong matches).
    """
    template_rows = fill_templates(get_templates(templates), class_names)
    lists = _as_lists(descriptions_by_class, len(class_names))
    for c, texts in enumerate(lists):
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"class {c} ({class_names[c]!r}) has an empty or non-string "
                                 f"description {text!r:.60}; remove it")
    count = max((len(t) for t in lists), default=0) if rows is None else rows
    if count < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    if count == 0:
        return template_rows
    empty = [c for c, texts in enumerate(lists) if not texts]
    if empty:
        shown = ", ".join(f"{c} ({class_names[c]!r})" for c in empty[:5])
        raise ValueError(
            f"{len(empty)} classes have no descriptions ({shown}{' ...' if len(empty) > 5 else ''}"
            "); their rows cannot be filled without another class's text. Generate "
            "descriptions for them (claver prompts generate resumes), or use templates only")
    per_class = []
    for c, texts in enumerate(lists):
        generator = rng if isinstance(rng, random.Random) else random.Random(f"{rng or 0}/{c}")
        per_class.append(pad_descriptions(texts, count, generator))
    description_rows = [[per_class[c][a] for c in range(len(class_names))] for a in range(count)]
    return template_rows + description_rows


def description_rows(files: Sequence[str | os.PathLike], class_names: Sequence[str], *,
                     rows: int | None = None, seed: int = 0,
                     context_length: int = DEFAULT_CONTEXT_LENGTH) -> list[list[str]]:
    """Only the A description rows (A lists of C texts) from description files (JSONL or
    CLAVER CSV; the config's ``DATA.DESCRIPTIONS``), padded as in :func:`build_text_rows`.

    Texts longer than ``context_length`` tokens are shortened on loading (with a warning).
    """
    from claver.prompts.formats import descriptions_by_class, load_descriptions

    records = load_descriptions(files, class_names, context_length=context_length)
    grouped = descriptions_by_class(records, len(class_names))
    return build_text_rows(class_names, (), grouped, rows=rows, rng=seed)


def tokenize_text_rows(text_rows: Sequence[Sequence[str]],
                       context_length: int = DEFAULT_CONTEXT_LENGTH,
                       truncate: bool = False) -> torch.Tensor:
    """Token tensor ``(R, C, context_length)`` (LongTensor) of rows of equal length C."""
    if not text_rows:
        raise ValueError("no text rows to tokenize")
    width = len(text_rows[0])
    if any(len(row) != width for row in text_rows):
        raise ValueError(f"text rows must all hold {width} texts (one per class), got "
                         f"{sorted({len(row) for row in text_rows})}")
    flat = [text for row in text_rows for text in row]
    tokens = tokenize(flat, context_length=context_length, truncate=truncate)
    return tokens.view(len(text_rows), width, context_length)


def _generator(rng: Generator) -> torch.Generator | None:
    if isinstance(rng, int) and not isinstance(rng, bool):
        return torch.Generator().manual_seed(rng)
    return rng


def sample_row_indices(num_rows: int, k: int, rng: Generator = None) -> torch.Tensor:
    """``k`` distinct row indices in ``[0, num_rows)`` (LongTensor (k,)), drawn uniformly.

    ``rng``: a CPU ``torch.Generator`` (save its state with the checkpoint to resume the
    same draws), an int seed, or None for torch's global generator.
    """
    if not 1 <= k <= num_rows:
        raise ValueError(f"cannot draw {k} text rows from {num_rows}; use 1 <= K <= {num_rows} "
                         "(templates + description rows)")
    return torch.randperm(num_rows, generator=_generator(rng))[:k]


def sample_rows(tokens: torch.Tensor, k: int, rng: Generator = None) -> torch.Tensor:
    """``k`` random distinct rows of ``tokens`` (R, C, L) -> (k, C, L), on its device."""
    index = sample_row_indices(tokens.shape[0], k, rng).to(tokens.device)
    return tokens.index_select(0, index)


def mean_row_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Evaluation scores: softmax over classes per row, averaged over rows; (B, R, C) -> (B, C)."""
    if logits.dim() != 3:
        raise ValueError(f"expected logits (B, R, C), got shape {tuple(logits.shape)}")
    return logits.float().softmax(dim=-1).mean(dim=1)


class TextRows:
    """The (R, C, L) token rows of one label set, with the texts they came from.

    Attributes: ``texts`` (R lists of C strings), ``tokens`` (LongTensor (R, C, L)),
    ``num_templates`` (P), ``num_descriptions`` (A), ``num_rows`` (R = P + A),
    ``num_classes`` (C).
    """

    def __init__(self, class_names: Sequence[str], templates: str | Sequence[str] = "claver",
                 descriptions_by_class: Sequence[Sequence[str]] | Mapping[int, Sequence[str]]
                 | None = None, *, rows: int | None = None, seed: int = 0,
                 context_length: int = DEFAULT_CONTEXT_LENGTH) -> None:
        self.class_names = list(class_names)
        self.num_templates = len(get_templates(templates))
        self.texts = build_text_rows(class_names, templates, descriptions_by_class, rows=rows,
                                     rng=seed)
        self.tokens = tokenize_text_rows(self.texts, context_length)
        self.num_rows = len(self.texts)
        self.num_descriptions = self.num_rows - self.num_templates
        self.num_classes = len(self.class_names)

    @classmethod
    def from_files(cls, class_names: Sequence[str], files: Sequence[str | os.PathLike],
                   templates: str | Sequence[str] = "claver", *, rows: int | None = None,
                   seed: int = 0, context_length: int = DEFAULT_CONTEXT_LENGTH) -> TextRows:
        """Rows from description files (JSONL or CLAVER CSV; the config's
        ``DATA.DESCRIPTIONS``), checked against ``class_names``."""
        from claver.prompts.formats import descriptions_by_class, load_descriptions

        records = load_descriptions(files, class_names, context_length=context_length)
        grouped = descriptions_by_class(records, len(class_names)) if files else None
        return cls(class_names, templates, grouped, rows=rows, seed=seed,
                   context_length=context_length)

    def sample_rows(self, k: int, rng: Generator = None) -> torch.Tensor:
        """``k`` random distinct rows for one training step: LongTensor (k, C, L)."""
        return sample_rows(self.tokens, k, rng)

    def __repr__(self) -> str:
        return (f"TextRows({self.num_classes} classes, {self.num_templates} template rows + "
                f"{self.num_descriptions} description rows)")
