"""CLIP's byte-level BPE tokenizer, on the bundled ``bpe_simple_vocab_16e6.txt.gz``.

Our own implementation of the tokenizer CLIP's text tower was trained with; it yields the
same ids as OpenAI's reference (checked against it in ``tests/test_tokenizer.py``).

Pipeline for one text: clean (``ftfy.fix_text``, HTML-unescape twice, strip, collapse
whitespace runs to one space, lowercase) -> split into pre-tokens with CLIP's regex ->
map each pre-token's UTF-8 bytes to printable characters -> BPE merges, the last symbol
of a pre-token carrying the end-of-word marker ``</w>`` -> vocabulary ids.

Vocabulary (49,408 ids): 256 byte symbols, the same 256 with ``</w>``, 48,894 merges,
then ``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407).

``tokenize(texts)`` returns a ``LongTensor`` of shape ``(N, context_length)``: each row is
``[sot] + encode(text) + [eot]`` followed by zeros.
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.resources
import itertools
import os
import threading
from collections.abc import Iterable, Sequence

import ftfy
import regex
import torch

__all__ = [
    "TextTooLongError",
    "Tokenizer",
    "count_tokens",
    "get_tokenizer",
    "tokenize",
]

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
SOT_TEXT = "<|startoftext|>"
EOT_TEXT = "<|endoftext|>"
END_OF_WORD = "</w>"
# CLIP uses the first 49152 - 256 - 2 merge rules of the file (line 0 is a version header).
NUM_MERGES = 49152 - 256 - 2
DEFAULT_CONTEXT_LENGTH = 77

# Special tokens, English contractions, letter runs, single digits, runs of anything else
# that is not whitespace. IGNORECASE matters even on lowercased text (e.g. "'ſ" folds to "'s").
_PRETOKEN_RE = regex.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d"
    r"|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+",
    regex.IGNORECASE,
)
_WHITESPACE_RE = regex.compile(r"\s+")


class TextTooLongError(ValueError):
    """A text needs more tokens (start/end-of-text included) than the context length."""


def _printable_bytes() -> list[int]:
    """Bytes that stand for themselves: visible ASCII and visible Latin-1 (not soft hyphen)."""
    return [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]


def byte_symbols() -> list[str]:
    """Symbol (one character) for each byte value 0..255.

    Printable bytes map to the character with the same code point; the remaining 68 bytes
    (controls, space, NBSP, soft hyphen, ...) map, in increasing byte order, to the code
    points 256, 257, ... so that no symbol is whitespace or a control character.
    """
    printable = set(_printable_bytes())
    table: list[str] = []
    shifted = 0
    for value in range(256):
        if value in printable:
            table.append(chr(value))
        else:
            table.append(chr(256 + shifted))
            shifted += 1
    return table


def clean_text(text: str) -> str:
    """CLIP's text normalisation: ftfy, double HTML unescape, whitespace collapse, lowercase."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _WHITESPACE_RE.sub(" ", text).strip().lower()


def _read_merges(path: str | os.PathLike[str] | None) -> list[tuple[str, str]]:
    if path is None:
        raw = importlib.resources.files("claver.text").joinpath(VOCAB_FILE).read_bytes()
    else:
        with open(path, "rb") as fh:
            raw = fh.read()
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    rules = lines[1 : 1 + NUM_MERGES]
    if len(rules) != NUM_MERGES:
        raise ValueError(
            f"BPE file {path or VOCAB_FILE!r} holds {len(rules)} merge rules, expected {NUM_MERGES}"
        )
    merges: list[tuple[str, str]] = []
    for number, line in enumerate(rules, start=2):
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(
                f"BPE file {path or VOCAB_FILE!r}: line {number} is not a pair: {line!r}"
            )
        merges.append((parts[0], parts[1]))
    return merges


class Tokenizer:
    """CLIP byte-level BPE tokenizer.

    Args:
        bpe_path: gzipped merges file; ``None`` uses the copy bundled with ``claver.text``.
        cache_size: number of distinct pre-tokens whose BPE result is memoised.
    """

    def __init__(
        self, bpe_path: str | os.PathLike[str] | None = None, cache_size: int = 1 << 16
    ) -> None:
        symbols = byte_symbols()
        self._byte_to_symbol = symbols
        self._symbol_to_byte = {sym: value for value, sym in enumerate(symbols)}
        # Base symbols are ordered printable bytes first, then the shifted ones.
        printable = _printable_bytes()
        others = sorted(set(range(256)) - set(printable))
        base = [symbols[value] for value in printable + others]

        merges = _read_merges(bpe_path)
        vocab = base + [sym + END_OF_WORD for sym in base] + [a + b for a, b in merges]
        vocab += [SOT_TEXT, EOT_TEXT]
        self.encoder: dict[str, int] = {token: index for index, token in enumerate(vocab)}
        self.decoder: list[str] = vocab
        if len(self.encoder) != len(vocab):
            raise ValueError("BPE vocabulary contains duplicate tokens")
        self._ranks: dict[tuple[str, str], int] = {pair: rank for rank, pair in enumerate(merges)}
        self._specials = {SOT_TEXT: self.encoder[SOT_TEXT], EOT_TEXT: self.encoder[EOT_TEXT]}
        self._pretoken_ids = functools.lru_cache(maxsize=cache_size)(self._pretoken_ids_uncached)

    @property
    def sot_token(self) -> int:
        """Id of ``<|startoftext|>`` (49406)."""
        return self._specials[SOT_TEXT]

    @property
    def eot_token(self) -> int:
        """Id of ``<|endoftext|>`` (49407)."""
        return self._specials[EOT_TEXT]

    @property
    def vocab_size(self) -> int:
        """Number of ids (49408)."""
        return len(self.decoder)

    def _merge(self, symbols: list[str]) -> list[str]:
        """Apply merge rules, lowest rank first, until no adjacent pair has a rule."""
        ranks = self._ranks
        while len(symbols) > 1:
            best: tuple[str, str] | None = None
            best_rank = len(ranks)
            for pair in itertools.pairwise(symbols):
                rank = ranks.get(pair)
                if rank is not None and rank < best_rank:
                    best, best_rank = pair, rank
            if best is None:
                break
            left, right = best
            merged: list[str] = []
            i, n = 0, len(symbols)
            while i < n:
                if i + 1 < n and symbols[i] == left and symbols[i + 1] == right:
                    merged.append(left + right)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return symbols

    def _pretoken_ids_uncached(self, pretoken: str) -> tuple[int, ...]:
        special = self._specials.get(pretoken)
        if special is not None:
            return (special,)
        symbols = [self._byte_to_symbol[value] for value in pretoken.encode("utf-8")]
        symbols[-1] += END_OF_WORD
        return tuple(self.encoder[sym] for sym in self._merge(symbols))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` after cleaning, without start/end-of-text."""
        if not isinstance(text, str):
            raise TypeError(f"encode() expects a str, got {type(text).__name__}: {text!r:.80}")
        ids: list[int] = []
        for pretoken in _PRETOKEN_RE.findall(clean_text(text)):
            ids.extend(self._pretoken_ids(pretoken))
        return ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text for ``ids``: each end-of-word marker becomes a space (a final one is dropped).

        With ``skip_special_tokens``, start-of-text ids are dropped and decoding stops at the
        first end-of-text id, so a padded row of :func:`tokenize` gives back its text.
        Invalid UTF-8 is replaced with U+FFFD.
        """
        pieces: list[str] = []
        for item in ids:
            index = int(item)
            if not 0 <= index < len(self.decoder):
                raise ValueError(
                    f"token id {index} is outside the vocabulary [0, {self.vocab_size})"
                )
            if skip_special_tokens:
                if index == self.eot_token:
                    break
                if index == self.sot_token:
                    continue
            pieces.append(self.decoder[index])
        joined = "".join(pieces)
        if joined.endswith(END_OF_WORD):
            joined = joined[: -len(END_OF_WORD)]
        # Every character (the markers and special tokens are printable ASCII) is one byte.
        raw = bytes(self._symbol_to_byte[ch] for ch in joined)
        return raw.decode("utf-8", errors="replace").replace(END_OF_WORD, " ")

    def count_tokens(self, text: str) -> int:
        """Length of ``text``'s row before padding: ``len(encode(text)) + 2``."""
        return len(self.encode(text)) + 2


_INSTANCE: Tokenizer | None = None
_INSTANCE_LOCK = threading.Lock()


def get_tokenizer() -> Tokenizer:
    """The process-wide :class:`Tokenizer` on the bundled vocabulary (built on first use)."""
    global _INSTANCE
    if _INSTANCE is None:
        with _INSTANCE_LOCK:
            if _INSTANCE is None:
                _INSTANCE = Tokenizer()
    return _INSTANCE


def count_tokens(text: str) -> int:
    """Tokens ``text`` occupies in a row, start- and end-of-text included."""
    return get_tokenizer().count_tokens(text)


def _preview(text: str, limit: int = 40) -> str:
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def tokenize(
    texts: str | Sequence[str],
    context_length: int = DEFAULT_CONTEXT_LENGTH,
    truncate: bool = False,
) -> torch.Tensor:
    """Token rows for CLIP's text tower.

    Args:
        texts: one string or a sequence of strings (N of them; a single string gives N = 1).
        context_length: row length C (CLIP: 77); at least 2.
        truncate: cut rows that are too long to C tokens, the last one being end-of-text.
            Otherwise a too-long text raises :class:`TextTooLongError`.

    Returns:
        ``LongTensor`` (N, C): ``[sot] + encode(text) + [eot]`` then zero padding.
    """
    if isinstance(texts, str):
        batch: Sequence[str] = [texts]
    elif isinstance(texts, Sequence) and not isinstance(texts, (bytes, bytearray)):
        batch = texts
        for index, item in enumerate(batch):
            if not isinstance(item, str):
                raise TypeError(
                    f"tokenize() expects str items, item {index} is "
                    f"{type(item).__name__}: {item!r:.80}"
                )
    else:
        raise TypeError(
            f"tokenize() expects a str or a sequence of str, got {type(texts).__name__}: "
            f"{texts!r:.80}"
        )
    if isinstance(context_length, bool) or not isinstance(context_length, int):
        raise TypeError(f"context_length must be an int, got {context_length!r}")
    if context_length < 2:
        raise ValueError(
            f"context_length must be at least 2 (start- and end-of-text), got {context_length}"
        )

    tok = get_tokenizer()
    result = torch.zeros(len(batch), context_length, dtype=torch.long)
    for row, text in enumerate(batch):
        ids = [tok.sot_token, *tok.encode(text), tok.eot_token]
        if len(ids) > context_length:
            if not truncate:
                where = f"text {row} " if len(batch) > 1 else "text "
                raise TextTooLongError(
                    f"{where}{_preview(text)} has {len(ids)} tokens (start/end-of-text "
                    f"included), more than context_length={context_length}; shorten it or "
                    "pass truncate=True"
                )
            ids = ids[:context_length]
            ids[-1] = tok.eot_token
        result[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return result
