"""Turn raw LLM output into one clean description that fits CLIP's text context.

:func:`process_output` is the whole pipeline for one generation:

1. :func:`clean_output`: drop the prompt echo, reasoning blocks and special tokens, an
   ``Action: ...`` echo and answer labels, a chatty preamble ("Sure! Here is ...:"), keep
   only the first answer (up to a blank line or the next ``Action:`` item), strip markdown
   bullets (list items joined with commas), bold and surrounding quotes, collapse whitespace;
   a generation cut by the token limit is trimmed back to its last complete sentence or
   clause.
2. :func:`rejection_reason`: ``empty``, ``too short`` or ``refusal`` (such outputs are
   regenerated; duplicates are found later, after step 3, within a class and across
   classes, by comparing :func:`dedup_key`).
3. :func:`fit_to_context`: shorten to at most 77 CLIP tokens (counted with
   :func:`claver.text.tokenizer.count_tokens`, start/end-of-text included) at a sentence
   boundary, else a clause boundary (``, ; :`` or a dash), else a word boundary.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from claver.text.tokenizer import DEFAULT_CONTEXT_LENGTH, count_tokens

__all__ = [
    "Processed",
    "clean_output",
    "dedup_key",
    "fit_to_context",
    "process_output",
    "rejection_reason",
]

_THINK_RE = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)
_SPECIAL_RE = re.compile(
    r"<\|[A-Za-z0-9_]+\|>|</s>|<eos>|<end_of_turn>|<\|im_end\|>|\[/?INST\]", re.IGNORECASE)
_LABEL_RE = re.compile(r"^\s*(?:answer|description|descriptions|response|output|a)\s*[:=]>?\s*",
                       re.IGNORECASE)
_ITEM_RE = re.compile(r"^\s*(?:action|q|question|input)\s*:", re.IGNORECASE)
_ARROW_ITEM_RE = re.compile(r"^[^\n=]{1,80}=>")
_PREAMBLE_RE = re.compile(
    r"^\s*(?:here(?:'s| is| are| you go| it is)|below is|the following|this is (?:a|the|my))\b",
    re.IGNORECASE)
_INTERJECTION_RE = re.compile(
    r"^(?:sure|certainly|of course|okay|ok|absolutely|great)(?:[!.,]\s+|[!.,]?\s*$)",
    re.IGNORECASE)
_BULLET_RE = re.compile(r"^\s*(?:[-*\u2022]+|\d+[.)])\s+")
_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019", "`": "`"}
_REFUSAL_RE = re.compile(
    r"\b(?:i'?m sorry|i am sorry|sorry, (?:but )?i|i apologi[sz]e|i can(?:no|')t|i cannot"
    r"|i(?:'m| am) (?:unable|not able)|i (?:will not|won'?t)|as an ai\b|language model"
    r"|(?:cannot|can'?t|unable to) (?:help|assist|provide|comply|fulfil)"
    r"|i do(?:n'?t| not) (?:know|understand))",
    re.IGNORECASE)
_SENTENCE_END_RE = re.compile(r"[.!?][\"')\]\u201d\u2019]*(?=\s|$)")
_CLAUSE_END_RE = re.compile(r"[,;:](?=\s)|(?=\s[-\u2013\u2014]\s)")
_TRAILING_JUNK = " \t,;:-\u2013\u2014"


@dataclass(frozen=True)
class Processed:
    """One processed generation: the text to keep, or why it was rejected."""

    text: str
    reason: str | None = None  # None = accepted; else "empty", "too short", "refusal"
    shortened: bool = False


def _strip_quotes(text: str) -> str:
    text = text.strip()
    while len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
        text = text[1:-1].strip()
    return text


def _trim_incomplete(text: str) -> str:
    """A generation cut by the token limit: keep up to its last sentence or clause end."""
    if re.search(r"[.!?][\"')\]]*$", text):
        return text
    ends = [m.end() for m in _SENTENCE_END_RE.finditer(text)]
    if ends:
        return text[: ends[-1]]
    clauses = [m.start() for m in re.finditer(r"[,;:](?=\s)", text)]
    if clauses:
        return text[: clauses[-1]] + "."
    return text


def _first_line(line: str, action: str | None, more: bool) -> str:
    """The first line of an answer with echoes, labels and preambles removed ('' to skip)."""
    if not line or (_ITEM_RE.match(line) and not _LABEL_RE.match(line)):
        return ""  # blank, or an "Action: <class>" echo
    if action:
        lowered, name = line.lower(), action.lower()
        if lowered.rstrip(" :=>").strip() == name:
            return ""  # the bare class name echoed
        if lowered.startswith(name) and line[len(name):].lstrip().startswith(("=>", ":")):
            line = line[len(name):].lstrip().removeprefix("=>").removeprefix(":").strip()
    line = _INTERJECTION_RE.sub("", _LABEL_RE.sub("", line, count=1).strip(), count=1)
    short = len(line.split()) <= 12
    if more and ((_PREAMBLE_RE.match(line) and (line.endswith(":") or short))
                 or (line.endswith(":") and short)):
        return ""  # "Sure! Here is a description:" or a "Body parts:" title before the answer
    return line


def clean_output(raw: str, *, action: str | None = None, prompt: str | None = None,
                 truncated: bool = False) -> str:
    """The first answer in ``raw``, as one line (see the module docstring).

    ``action``: the class name (an echoed ``<action> =>`` or ``Action: <action>`` is
    dropped); ``prompt``: the prompt sent (an echo of it is dropped); ``truncated``: the
    generation stopped at the token limit, so a trailing partial sentence is removed.
    """
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    if prompt and text.lstrip().startswith(prompt.strip()):
        text = text.lstrip()[len(prompt.strip()):]
    text = _THINK_RE.sub("", text)
    special = _SPECIAL_RE.search(text)
    if special:
        text = text[: special.start()]
    lines = [line.strip() for line in text.split("\n")]
    # Leading blank lines, an echo of the query and preambles go; then one paragraph stays.
    kept: list[str] = []
    for index, line in enumerate(lines):
        if not kept:
            more = any(lines[index + 1 :])
            first = _first_line(line, action, more)
            if first:
                kept.append(first)
            continue
        if not line or _ITEM_RE.match(line) or _ARROW_ITEM_RE.match(line):
            break
        kept.append(line)
    text = ""
    for line in kept:
        bullet = _BULLET_RE.match(line)
        line = line[bullet.end():] if bullet else line
        if bullet and text and not re.search(r"[.!?,;:]$", text):
            text += ","  # list items become a comma-separated sentence
        text = f"{text} {line}" if text else line
    text = text.replace("**", "").replace("__", "")
    text = _strip_quotes(" ".join(text.split()))
    if kept and _BULLET_RE.match(kept[-1]) and text and not re.search(r"[.!?]$", text):
        text += "."
    if truncated:
        text = _trim_incomplete(text)
    return text


def rejection_reason(text: str, *, min_words: int = 2) -> str | None:
    """``"empty"``, ``"too short"`` (fewer than ``min_words`` words), ``"refusal"`` or None."""
    if not text.strip():
        return "empty"
    if len(re.findall(r"\w+", text)) < min_words:
        return "too short"
    if _REFUSAL_RE.search(text[:200]):
        return "refusal"
    return None


def dedup_key(text: str) -> str:
    """Comparison key for duplicates: the words only, case-folded (``"Hands, on the ROPE!"``
    and ``"hands on the rope"`` are equal); punctuation, underscores and spacing are ignored and
    Unicode compatibility forms (full-width letters, ligatures) are unified."""
    return " ".join(re.findall(r"[^\W_]+", unicodedata.normalize("NFKC", text).casefold()))


def _finish(prefix: str) -> str:
    """A cut-off prefix made into a sentence: trailing separators dropped, full stop added."""
    prefix = prefix.rstrip(_TRAILING_JUNK)
    if prefix and not re.search(r"[.!?][\"')\]\u201d\u2019]*$", prefix):
        prefix += "."
    return prefix


def fit_to_context(text: str, context_length: int = DEFAULT_CONTEXT_LENGTH) -> tuple[str, bool]:
    """``(text, shortened)``: ``text`` cut so that it takes at most ``context_length`` tokens.

    Cuts at the last sentence end that fits if that keeps at least half the budget, else
    at the last clause boundary (``, ; :`` or a spaced dash) or sentence end that fits, else
    after the last whole word that fits (then a full stop is added). Tokens are counted with
    CLIP's tokenizer, start- and end-of-text included.
    """
    if count_tokens(text) <= context_length:
        return text, False

    def fits(candidate: str) -> bool:
        return bool(candidate) and count_tokens(candidate) <= context_length

    sentences = [_finish(text[: m.end()]) for m in _SENTENCE_END_RE.finditer(text)]
    good = [s for s in sentences if fits(s)]
    if good and count_tokens(good[-1]) >= context_length // 2:
        return good[-1], True
    clause_cuts = [m.start() for m in _CLAUSE_END_RE.finditer(text)]
    clauses = [_finish(text[:cut]) for cut in clause_cuts] + sentences
    good = sorted((c for c in clauses if fits(c)), key=len)
    if good:
        return good[-1], True
    words = text.split()
    low, high = 0, len(words)  # invariant: words[:low] fits (0 words trivially)
    while low < high:
        mid = (low + high + 1) // 2
        if fits(_finish(" ".join(words[:mid]))):
            low = mid
        else:
            high = mid - 1
    if low > 0:
        return _finish(" ".join(words[:low])), True
    low, high = 0, len(text)  # one enormous word: cut characters
    while low < high:
        mid = (low + high + 1) // 2
        if fits(text[:mid]):
            low = mid
        else:
            high = mid - 1
    return text[:low], True


def process_output(raw: str, *, action: str | None = None, prompt: str | None = None,
                   truncated: bool = False, context_length: int = DEFAULT_CONTEXT_LENGTH,
                   min_words: int = 2) -> Processed:
    """Clean, validate and fit one generation (see the module docstring)."""
    text = clean_output(raw, action=action, prompt=prompt, truncated=truncated)
    reason = rejection_reason(text, min_words=min_words)
    if reason is not None:
        return Processed(text, reason)
    text, shortened = fit_to_context(text, context_length)
    return Processed(text, None, shortened)
