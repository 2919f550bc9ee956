"""Text rows for training/eval: templates + descriptions, padding rules, sampling."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch

from claver.prompts.formats import Description, write_descriptions
from claver.prompts.rows import (
    TextRows,
    build_text_rows,
    description_rows,
    mean_row_probabilities,
    pad_descriptions,
    sample_row_indices,
    sample_rows,
    tokenize_text_rows,
)
from claver.text.prompts import CLAVER_TEMPLATES
from claver.text.tokenizer import tokenize

NAMES = ["abseiling", "bowling", "juggling"]
DESCS = [[f"abseil {i}" for i in range(5)], ["bowl 0", "bowl 1"], ["juggle 0"]]


def test_templates_only():
    rows = build_text_rows(NAMES, "claver")
    assert len(rows) == 16 and rows[1] == ["a video of abseiling.", "a video of bowling.",
                                           "a video of juggling."]
    assert build_text_rows(NAMES, ["{}"], [[], [], []]) == [NAMES]


def test_padding_uses_only_each_class_own_descriptions():
    rows = build_text_rows(NAMES, ["a video of {}."], DESCS, rng=7)
    assert len(rows) == 1 + 5
    columns = [[row[c] for row in rows[1:]] for c in range(3)]
    assert columns[0] == DESCS[0]  # the class with most descriptions keeps them in order
    assert columns[1][:2] == DESCS[1] and set(columns[1]) == set(DESCS[1])
    assert Counter(columns[1]) in (Counter({"bowl 0": 3, "bowl 1": 2}),
                                   Counter({"bowl 0": 2, "bowl 1": 3}))  # reused evenly
    assert columns[2] == ["juggle 0"] * 5
    assert rows == build_text_rows(NAMES, ["a video of {}."], DESCS, rng=7)  # deterministic


def test_one_class_padding_does_not_depend_on_other_classes():
    more = [DESCS[0] + ["abseil 5", "abseil 6"], DESCS[1], DESCS[2]]
    a = build_text_rows(NAMES, ["{}"], DESCS, rows=6, rng=3)
    b = build_text_rows(NAMES, ["{}"], more, rows=6, rng=3)
    assert [row[1] for row in a] == [row[1] for row in b]


def test_rows_fewer_than_available_keeps_a_seeded_ordered_subset():
    rows = build_text_rows(NAMES, ["{}"], DESCS, rows=2, rng=0)
    column = [row[0] for row in rows[1:]]
    assert len(column) == 2 and column == sorted(column) and set(column) <= set(DESCS[0])
    assert [row[1] for row in rows[1:]] == DESCS[1]
    assert pad_descriptions(["x", "y"], 5, random.Random(1))[:2] == ["x", "y"]


def test_mapping_input_and_errors():
    rows = build_text_rows(NAMES, ["{}"], {0: ["a"], 1: ["b"], 2: ["c", "d"]}, rng=0)
    assert rows[1] == ["a", "b", "c"] and rows[2][:2] == ["a", "b"]
    with pytest.raises(ValueError, match=r"1 classes have no descriptions \(1 \('bowling'\)"):
        build_text_rows(NAMES, ["{}"], [["a"], [], ["c"]])
    with pytest.raises(ValueError, match="outside 0..2"):
        build_text_rows(NAMES, ["{}"], {5: ["x"]})
    with pytest.raises(ValueError, match="2 entries for 3 classes"):
        build_text_rows(NAMES, ["{}"], [["a"], ["b"]])
    with pytest.raises(TypeError, match="list of strings"):
        build_text_rows(NAMES, ["{}"], ["a", "b", "c"])


def test_tokenized_rows_and_sampling():
    text_rows = build_text_rows(NAMES, "claver", DESCS, rng=0)
    tokens = tokenize_text_rows(text_rows)
    assert tokens.shape == (16 + 5, 3, 77) and tokens.dtype == torch.long
    assert torch.equal(tokens[17, 1], tokenize(text_rows[17][1])[0])
    picked = sample_rows(tokens, 5, torch.Generator().manual_seed(0))
    assert picked.shape == (5, 3, 77)
    again = sample_rows(tokens, 5, torch.Generator().manual_seed(0))
    assert torch.equal(picked, again)
    index = sample_row_indices(21, 5, 0)
    assert len(set(index.tolist())) == 5 and torch.equal(index, sample_row_indices(21, 5, 0))
    with pytest.raises(ValueError, match="cannot draw 22 text rows from 21"):
        sample_rows(tokens, 22)


def test_mean_row_probabilities():
    logits = torch.randn(2, 4, 3)
    probs = mean_row_probabilities(logits)
    assert probs.shape == (2, 3) and torch.allclose(probs.sum(-1), torch.ones(2))
    assert torch.allclose(probs, logits.softmax(-1).mean(1))


def test_text_rows_from_files(tmp_path):
    jsonl = write_descriptions([Description(c, n, "body", f"{n} with arms {i}.")
                                for c, n in enumerate(NAMES) for i in range(c + 1)],
                               tmp_path / "d.jsonl")
    csv_path = tmp_path / "extra_scene.csv"
    csv_path.write_text("id;name\n0;A cliff.\n")
    rows = TextRows.from_files(NAMES, [jsonl, csv_path], templates="claver", seed=1)
    assert rows.num_templates == len(CLAVER_TEMPLATES) and rows.num_descriptions == 3
    assert rows.tokens.shape == (19, 3, 77) and rows.num_classes == 3
    assert [rows.texts[r][0] for r in (16, 17)] == ["abseiling with arms 0.", "A cliff."]
    assert rows.sample_rows(5, torch.Generator().manual_seed(0)).shape == (5, 3, 77)
    assert "3 description rows" in repr(rows)
    only = description_rows([jsonl, csv_path], NAMES, seed=1)  # what the engine calls
    assert only == rows.texts[16:]
    plain = TextRows.from_files(NAMES, [], templates="actionclip")
    assert plain.num_rows == 16 and plain.num_descriptions == 0
