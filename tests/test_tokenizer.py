"""Parity of claver's CLIP tokenizer with OpenAI's SimpleTokenizer (the ``oracle_tokenizer``)."""

from __future__ import annotations

import random

import pytest
import torch

import claver
from claver.text.tokenizer import (
    TextTooLongError,
    Tokenizer,
    count_tokens,
    get_tokenizer,
    tokenize,
)

SOT, EOT = 49406, 49407

WORDS = (
    "a the of video person is playing doing dancing riding bike horse swimming running man "
    "woman child dog ball guitar piano violin cello drums jumping throwing catching kicking "
    "cooking eating drinking reading writing laughing crying talking archery abseiling "
    "bungee juggling skateboarding snowboarding surfing kayaking rock climbing wrestling "
    "boxing karate yoga stretching push ups squat lunge hammer throw javelin pole vault "
    "somersault cartwheel handstand breakdancing salsa tango zumba knitting ironing washing "
    "dishes brushing teeth hair shaving beard applying makeup photographed quickly slowly "
    "internationalization antidisestablishmentarianism supercalifragilistic xylophone zzz"
).split()

# fmt: off
ACTION_LABELS = [
    "playing guitar", "Yo-Yo", "tai chi", "playing cello", "Apply Eye Makeup", "PlayingDaf",
    "Pommel Horse", "BaseballPitch", "Skijet", "YoYo", "jumping jacks", "T'ai chi",
    "blowing out candles", "bending back", "drop kicking", "dunking basketball",
    "getting a haircut", "making a cake", "passing American football (in game)",
    "playing ice hockey", "shooting goal (soccer)", "massaging person's head", "Parkour",
    "PushUps", "Rock Climbing Indoor", "sword_exercise", "ride_horse", "clap", "hand_wave",
    "smile", "[something] into [something]", "Pretending to pick up",
    "Moving something and something so they collide with each other",
]

UNICODE_BITS = [
    "café", "naïve", "résumé", "Ångström", "Straße", "ß", "İstanbul", "ﬁnance", "Ⅻ",
    "日本語", "中文字符", "한국어", "ひらがな", "カタカナ", "漢字テスト", "🎸", "👍🏽",
    "\U0001f938\u200d\u2640\ufe0f", "\U0001f3f3\ufe0f\u200d\U0001f308", "\u2764\ufe0f",
    "😀😃😄", "Привет", "мир", "ЁЖИК", "مرحبا", "العربية", "שלום", "Ελληνικά", "हिन्दी",
    "ไทย", "e\u0301", "a\u0308o\u0308", "x\u0301\u0327", "\u0301", "zero\u200bwidth",
    "joi\u200dner", "no\u200cjoin", "\ufeffbom", "soft\u00adhyphen", "nb\u00a0sp",
    "em\u2003space", "line\u2028sep", "ideo\u3000space", "ＦＵＬＬＷＩＤＴＨ", "①②③",
    "٣٤٥", "½", "²³", "\u00b5", "\u2126", "\u212a", "ſ", "'ſ", "ǅ", "ﬀ", "\u00e9\u0301",
    "ℌ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𝟙𝟚", "\U00020000", "control\x07bell", "esc\x1b[0m", "unit\x1fsep",
    "fs\x1c", "tab\there", "cr\rlf\n", "vt\x0bff\x0c", "next\x85line", "replacement\ufffd",
]

HTML_BITS = [
    "&amp;", "&#39;", "&lt;b&gt;", "&amp;amp;", "&amp;lt;i&amp;gt;", "&quot;quoted&quot;",
    "&#x27;hex&#x27;", "&nbsp;", "&copy; 2024", "&eacute;t&eacute;", "&#8217;", "&hellip;",
    "&amp;amp;amp;", "&bogus;", "&#0;", "&#xD800;", "&#1114112;", "&lt;|endoftext|&gt;", "AT&T",
    "fish & chips", "&", "&;", "&#;", "&amp",
]

MOJIBAKE_SOURCES = [
    "café", "naïve", "résumé", "crème brûlée", "Straße", "“quoted”", "it’s", "—dash—", "señor",
    "über", "déjà vu", "piñata", "Ægir", "€100", "…", "Zoë",
]

PUNCT_BITS = [
    "!!!", "???", "...", "!?!?", "--", "---", "***", "@#$%^&*()", "(((nested)))", "[brackets]",
    "{braces}", "<angle>", "a/b\\c", "_under_score_", "~tilde~", "`backtick`", '"dq"', "'sq'",
    "¡hola!", "¿qué?", "«guillemets»", "„low“", "·•°", "§¶†‡", "©®™", "←→↑↓", "∑∫√∞", "♪♫",
    "<|startoftext|>", "<|endoftext|>", "<|endoftext|", "|startoftext|>", "</w>", "<w>",
]

NUMBER_BITS = [
    "0", "7", "42", "1234567890", "3.14159", "-273.15", "1e10", "1,000,000", "12:30", "2024-01-31",
    "v2.0.1", "#1", "100%", "$9.99", "0x1F", "1st", "2nd", "3rd", "4th", "90s", "x264",
]

CONTRACTIONS = [
    "it's", "don't", "we're", "they've", "I'm", "we'll", "she'd", "IT'S", "DON'T", "O'Neill",
    "rock'n'roll", "'tis", "y'all", "ma'am", "it’s", "won’t", "'s", "'t", "'re", "'ve", "'m",
    "'ll", "'d", "''", "'", "s'", "it''s",
]

WHITESPACE = [
    " ", "  ", "\t", "\n", "\r\n", " \t \n ", "\u00a0", "\u2003", "\u3000", "\x1c",
]
# fmt: on


def _mojibake(rng: random.Random) -> str:
    word = rng.choice(MOJIBAKE_SOURCES)
    codec = rng.choice(["latin-1", "cp1252"])
    return word.encode("utf-8").decode(codec, errors="ignore")


def _random_piece(rng: random.Random) -> str:
    kind = rng.randrange(9)
    if kind == 0:
        return rng.choice(ACTION_LABELS)
    if kind == 1:
        return rng.choice(UNICODE_BITS)
    if kind == 2:
        return rng.choice(HTML_BITS)
    if kind == 3:
        return _mojibake(rng)
    if kind == 4:
        return rng.choice(PUNCT_BITS)
    if kind == 5:
        return rng.choice(NUMBER_BITS)
    if kind == 6:
        return rng.choice(CONTRACTIONS)
    word = rng.choice(WORDS)
    if kind == 7:
        style = rng.randrange(4)
        return [word, word.upper(), word.capitalize(), word[::-1]][style]
    return "".join(chr(rng.randrange(0x20, 0x250)) for _ in range(rng.randint(1, 6)))


def _sentence(rng: random.Random, n_pieces: int) -> str:
    parts: list[str] = []
    for _ in range(n_pieces):
        parts.append(_random_piece(rng))
        parts.append(rng.choice(WHITESPACE) if rng.random() < 0.3 else " ")
    if rng.random() < 0.2:  # glue some pieces together without spaces
        return "".join(parts[::2])
    return "".join(parts)


def _build_corpus(total: int = 2400, seed: int = 20240531) -> list[str]:
    rng = random.Random(seed)
    corpus: list[str] = ["", " ", "\t\n  \r", "a", "A", "!", "&amp;", "a video of dancing."]
    corpus += ACTION_LABELS + UNICODE_BITS + HTML_BITS + PUNCT_BITS + NUMBER_BITS + CONTRACTIONS
    corpus += [_mojibake(rng) for _ in range(40)]
    corpus += [f"a video of a person {label}." for label in ACTION_LABELS]
    corpus += ["  leading and trailing  ", "multiple     spaces", "tabs\t\tand\nnewlines\n\n"]
    # Long texts: well over 77 tokens.
    for _ in range(40):
        corpus.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(80, 200))))
    for _ in range(20):
        corpus.append(_sentence(rng, rng.randint(60, 120)))
    corpus.append("word " * 300)
    corpus.append("x" * 500)
    corpus.append("🎸" * 100)
    while len(corpus) < total:
        roll = rng.random()
        if roll < 0.35:
            corpus.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 14))))
        else:
            corpus.append(_sentence(rng, rng.randint(1, 12)))
    return corpus


CORPUS = _build_corpus()


def _oracle_row(oracle, text: str, context_length: int = 77) -> list[int]:
    """The oracle's row as clip.tokenize builds it, with truncate=True."""
    ids = [SOT, *oracle.encode(text), EOT]
    if len(ids) > context_length:
        ids = ids[:context_length]
        ids[-1] = EOT
    return ids + [0] * (context_length - len(ids))


@pytest.fixture(scope="module")
def oracle_ids(oracle_tokenizer) -> list[list[int]]:
    return [oracle_tokenizer.encode(text) for text in CORPUS]


def test_corpus_is_large_and_varied(oracle_ids) -> None:
    assert len(CORPUS) >= 2000
    assert len(set(CORPUS)) > 1500
    lengths = [len(ids) + 2 for ids in oracle_ids]
    assert sum(n > 77 for n in lengths) >= 50
    assert sum(n == 2 for n in lengths) >= 2  # empty / whitespace-only texts
    assert any(not text.isascii() for text in CORPUS)


def test_vocabulary_matches_oracle(oracle_tokenizer) -> None:
    tok = Tokenizer()
    assert tok.encoder == oracle_tokenizer.encoder
    assert tok.vocab_size == 49408
    assert (tok.sot_token, tok.eot_token) == (SOT, EOT)
    assert tok.decoder[SOT] == "<|startoftext|>" and tok.decoder[EOT] == "<|endoftext|>"


def test_encode_matches_oracle(oracle_ids) -> None:
    tok = get_tokenizer()
    mismatches = [
        (text, ours, theirs)
        for text, theirs in zip(CORPUS, oracle_ids, strict=True)
        if (ours := tok.encode(text)) != theirs
    ]
    assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[:3]!r}"


def test_fresh_tokenizer_matches_cached_singleton() -> None:
    fresh, shared = Tokenizer(cache_size=0), get_tokenizer()
    for text in CORPUS[::7]:
        assert fresh.encode(text) == shared.encode(text), text


def test_tokenize_truncated_matches_oracle(oracle_tokenizer) -> None:
    expected = torch.tensor([_oracle_row(oracle_tokenizer, text) for text in CORPUS])
    got = tokenize(CORPUS, truncate=True)
    assert got.dtype == torch.long and got.shape == (len(CORPUS), 77)
    assert torch.equal(got, expected)


def test_tokenize_fitting_texts_match_oracle(oracle_tokenizer, oracle_ids) -> None:
    fitting = [text for text, ids in zip(CORPUS, oracle_ids, strict=True) if len(ids) + 2 <= 77]
    assert len(fitting) > 1500
    expected = torch.tensor([_oracle_row(oracle_tokenizer, text) for text in fitting])
    assert torch.equal(tokenize(fitting), expected)
    assert torch.equal(tokenize(fitting, truncate=True), expected)


@pytest.mark.parametrize("context_length", [2, 3, 16, 128])
def test_other_context_lengths_match_oracle(oracle_tokenizer, context_length: int) -> None:
    texts = CORPUS[::11]
    expected = torch.tensor([_oracle_row(oracle_tokenizer, t, context_length) for t in texts])
    got = tokenize(texts, context_length=context_length, truncate=True)
    assert torch.equal(got, expected)


def test_count_tokens_matches_oracle(oracle_ids) -> None:
    for text, ids in zip(CORPUS[::3], oracle_ids[::3], strict=True):
        assert count_tokens(text) == len(ids) + 2
    assert count_tokens("") == 2


def test_batch_rows_equal_single_rows() -> None:
    texts = CORPUS[::13]
    batch = tokenize(texts, truncate=True)
    for row, text in zip(batch, texts, strict=True):
        assert torch.equal(row, tokenize(text, truncate=True)[0])
    assert torch.equal(tokenize(tuple(texts), truncate=True), batch)
    assert tokenize("playing guitar").shape == (1, 77)
    assert tokenize([]).shape == (0, 77)


def test_decode_matches_oracle(oracle_tokenizer, oracle_ids) -> None:
    tok = get_tokenizer()
    for ids in oracle_ids:
        theirs = oracle_tokenizer.decode(ids)
        # Ours drops the space that the oracle leaves after the last word.
        assert tok.decode(ids) == theirs.removesuffix(" ")
    # Ids with the special tokens decode like the oracle too.
    ids = [SOT, *oracle_ids[7], EOT]
    assert tok.decode(ids) == oracle_tokenizer.decode(ids)


def test_decode_skips_specials_and_padding() -> None:
    tok = get_tokenizer()
    text = "A Video of a person Playing Guitar!"
    row = tokenize(text)[0]
    assert tok.decode(row, skip_special_tokens=True) == "a video of a person playing guitar !"
    assert tok.decode([]) == ""
    assert tok.decode(torch.tensor([SOT, EOT])) == "<|startoftext|><|endoftext|>"


def test_decode_round_trip() -> None:
    tok = get_tokenizer()
    for text in CORPUS[::5]:
        ids = tok.encode(text)
        if text.isascii():
            assert tok.encode(tok.decode(ids)) == ids, text
    assert tok.decode(tok.encode("Hello,   World")) == "hello , world"
    assert tok.decode(tok.encode("don't stop")) == "don 't stop"


def test_literal_special_tokens_in_text_are_specials(oracle_tokenizer) -> None:
    text = "before <|endoftext|> after <|startoftext|>"
    ids = get_tokenizer().encode(text)
    assert ids == oracle_tokenizer.encode(text)
    assert EOT in ids and SOT in ids


def test_too_long_error_names_text_and_count() -> None:
    text = "The quick brown fox jumps over the lazy dog " * 20
    n_tokens = count_tokens(text)
    assert n_tokens > 77
    with pytest.raises(TextTooLongError) as info:
        tokenize(["short", text])
    message = str(info.value)
    assert repr(text[:40]) in message
    assert str(n_tokens) in message and "77" in message
    assert "truncate=True" in message
    assert isinstance(info.value, ValueError)
    with pytest.raises(TextTooLongError, match="context_length=10"):
        tokenize("one two three four five six seven eight nine", context_length=10)


def test_truncate_keeps_eot_last() -> None:
    text = " ".join(["dancing"] * 200)
    full = [SOT, *get_tokenizer().encode(text), EOT]
    row = tokenize(text, truncate=True)[0]
    assert row.shape == (77,)
    assert row[-1].item() == EOT
    assert row[:76].tolist() == full[:76]
    assert (row != 0).all()
    # Exactly 77 tokens fits without truncation.
    exact = " ".join(["dancing"] * 75)
    assert count_tokens(exact) == 77
    assert torch.equal(tokenize(exact), tokenize(exact, truncate=True))


@pytest.mark.parametrize(
    ("texts", "kwargs", "error", "needle"),
    [
        (123, {}, TypeError, "123"),
        (None, {}, TypeError, "None"),
        (b"bytes", {}, TypeError, "bytes"),
        (["ok", 5], {}, TypeError, "item 1"),
        ([None], {}, TypeError, "None"),
        ("ok", {"context_length": 1}, ValueError, "1"),
        ("ok", {"context_length": 0}, ValueError, "0"),
        ("ok", {"context_length": -5}, ValueError, "-5"),
        ("ok", {"context_length": "77"}, TypeError, "'77'"),
        ("ok", {"context_length": 7.5}, TypeError, "7.5"),
        ("ok", {"context_length": True}, TypeError, "True"),
    ],
)
def test_bad_inputs_raise(texts, kwargs, error, needle) -> None:
    with pytest.raises(error) as info:
        tokenize(texts, **kwargs)
    assert needle in str(info.value)


def test_bad_encode_decode_inputs_raise() -> None:
    tok = get_tokenizer()
    with pytest.raises(TypeError, match="int"):
        tok.encode(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="49408"):
        tok.decode([49408])
    with pytest.raises(ValueError, match="-1"):
        tok.decode([-1])


def test_singleton_and_package_export() -> None:
    assert get_tokenizer() is get_tokenizer()
    assert claver.tokenize is tokenize
