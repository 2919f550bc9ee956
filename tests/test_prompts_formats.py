"""Description files: JSONL, CLAVER-style CSV import (awkward cases), check and import CLI."""

from __future__ import annotations

import csv
import io
import json

import pytest

from claver.cli import main
from claver.data.annotations import AnnotationError
from claver.prompts.check import check_descriptions
from claver.prompts.formats import (
    Description,
    descriptions_by_class,
    infer_kind,
    load_descriptions,
    read_claver_csv,
    read_descriptions,
    write_descriptions,
)
from claver.text.tokenizer import count_tokens

NAMES = ["abseiling", "air drumming", "answering questions"]
LONG = ("Abseiling combines several actions to descend a vertical surface with a rope. "
        "Climbers secure themselves with a harness and use a descender device for a "
        "controlled descent, keeping the body straight, feet flat against the wall, "
        "regulating rope tension with the brake hand, and stepping down steadily until "
        "they reach the ground safely at the bottom of the cliff face, where they unclip "
        "the rope from the device and pull it down to coil it for the next descent.")


def write(tmp_path, name: str, data: str | bytes):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def texts(result) -> list[tuple[int, str]]:
    return [(d.class_id, d.text) for d in result.descriptions]


def test_jsonl_round_trip_and_errors(tmp_path):
    records = [Description(0, "abseiling", "body", "Hands on the rope.", sample=0, model="m"),
               Description(2, "answering questions", "scene", "Ünïcode, \"quoted\" text.")]
    path = write_descriptions(records, tmp_path / "d.jsonl")
    assert read_descriptions(path) == records
    first = json.loads(path.read_text().splitlines()[0])
    assert list(first)[:5] == ["class_id", "class_name", "kind", "text", "sample"]
    path.write_text(path.read_text() + '\n{"class_id": "1", "class_name": "x", "kind": "b", '
                    '"text": "t"}\n')
    with pytest.raises(AnnotationError, match=r"d.jsonl, line 4: class_id is not an integer"):
        read_descriptions(path)
    path.write_text('{"class_id": 1, "kind": "b", "text": "t"}\n')
    with pytest.raises(AnnotationError, match="missing key 'class_name'"):
        read_descriptions(path)


def test_csv_written_by_the_official_generator(tmp_path):
    """QUOTE_NONE with backslash escapes: commas, quotes, backslashes and line breaks."""
    rows = [(0, 'Gripping the rope, "sliding" down'), (0, "Back\\slash and\nnew line"),
            (1, "Drumming; in the air, wildly"), (2, "Listening,\r\nthinking, replying")]
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="\n")
    writer.writerow(["id", "name"])
    writer.writerows(rows)
    result = read_claver_csv(write(tmp_path, "k400_body.csv", buffer.getvalue()), NAMES)
    assert result.header == "id,name" and not result.warnings
    assert texts(result) == [(0, 'Gripping the rope, "sliding" down'),
                             (0, "Back\\slash and new line"),
                             (1, "Drumming; in the air, wildly"),
                             (2, "Listening, thinking, replying")]
    assert [d.sample for d in result.descriptions] == [0, 1, 0, 0]
    assert {d.kind for d in result.descriptions} == {"body"}
    assert result.descriptions[2].class_name == "air drumming"
    assert result.descriptions[0].source == "k400_body.csv:2"


def test_csv_semicolons_quotes_bom_crlf_blank_lines_no_header(tmp_path):
    data = ("\ufeff0;\"Rope, harness; descender\"\r\n"
            "\r\n"
            "0 ; plain text, with a comma\r\n"
            "# a comment line\r\n"
            "1;\"He said \"\"drum\"\" twice\"\r\n"
            '2,"escaped \\"quote\\" inside"\r\n'
            '2,"a quoted description\r\nover two lines"\r\n'
            "1,\"Jump\" is what they shout, then drum\r\n")
    result = read_claver_csv(write(tmp_path, "extra.csv", data), NAMES)
    assert result.header is None and not result.warnings
    assert texts(result) == [(0, "Rope, harness; descender"), (0, "plain text, with a comma"),
                             (1, 'He said "drum" twice'), (2, 'escaped "quote" inside'),
                             (2, "a quoted description over two lines"),
                             (1, '"Jump" is what they shout, then drum')]
    assert [d.source.split(":")[1] for d in result.descriptions] == ["1", "3", "5", "6", "7", "9"]
    assert {d.kind for d in result.descriptions} == {"imported"}


def test_csv_unequal_counts_and_long_descriptions_are_shortened(tmp_path):
    data = f"id,name\n0,{LONG.replace(',', chr(92) + ',')}\n0,Short one.\n0,Another.\n2,Only.\n"
    result = read_claver_csv(write(tmp_path, "scene.csv", data), NAMES)
    assert [d.class_id for d in result.descriptions] == [0, 0, 0, 2]
    assert result.descriptions[0].shortened and count_tokens(result.descriptions[0].text) <= 77
    assert any("longer than 77 CLIP tokens" in w and "line 2" in w for w in result.warnings)
    assert result.missing_classes == [1] and len(result.warnings) == 1
    raw = read_claver_csv(tmp_path / "scene.csv", NAMES, shorten=False)
    assert raw.descriptions[0].text == LONG and not raw.descriptions[0].shortened
    assert descriptions_by_class(result.descriptions, 3)[1] == []


@pytest.mark.parametrize("data,message", [
    ("id,name\n0,ok\nabc,not an id\n", r"line 3: expected 'id,description'"),
    ("id,name\n7,too far\n", r"line 2: class id outside 0..C-1 \(the label file has 3\)"),
    ('0,"never closed\n1,next\n', "no closing quote"),
    ("id,name\n\n", "no descriptions found"),
])
def test_csv_errors_name_file_line_and_fix(tmp_path, data, message):
    with pytest.raises(AnnotationError, match=message) as info:
        read_claver_csv(write(tmp_path, "bad.csv", data), NAMES)
    assert "bad.csv" in str(info.value) and "Fix:" in str(info.value)


def test_kind_from_file_name():
    assert infer_kind("kinetics_400_descriptions_ext.csv") == "decomposition"
    assert infer_kind("action_decomposition.csv") == "decomposition"
    assert infer_kind("k400_synonyms.csv") == "synonyms"
    assert infer_kind("notes.csv") == "imported"


def test_load_descriptions_mixes_formats_and_checks_labels(tmp_path):
    jsonl = write_descriptions([Description(1, "air drumming", "body", "Sticks in the air."),
                                Description(0, "abseiling", "body", LONG)], tmp_path / "a.jsonl")
    csv_path = write(tmp_path, "b_scene.csv", "id,name\n2,Office desk.\n")
    with pytest.warns(UserWarning, match="shortened"):
        records = load_descriptions([jsonl, csv_path], NAMES)
    assert [(r.class_id, r.kind) for r in records] == [(1, "body"), (0, "body"), (2, "scene")]
    assert count_tokens(records[1].text) <= 77 and records[1].shortened
    with pytest.raises(AnnotationError, match="line 1: class 1 is 'drumming'"):
        load_descriptions(jsonl, ["abseiling", "drumming", "x"])


def test_check_reports_coverage_lengths_and_duplicates():
    records = [Description(0, "abseiling", "body", "Hands on the rope."),
               Description(0, "abseiling", "body", "hands on the rope"),
               Description(0, "abseiling", "scene", "A cliff."),
               Description(1, "air drumming", "body", "A cliff."),
               Description(1, "air drumming", "scene", LONG)]
    result = check_descriptions(records, NAMES, kinds=["body", "scene"])
    assert not result.ok
    assert result.counts == {(0, "body"): 2, (0, "scene"): 1, (1, "body"): 1, (1, "scene"): 1}
    assert result.duplicates == [(0, "Hands on the rope.", 2)]
    assert result.shared == [("A cliff.", [0, 1])]
    assert len(result.too_long) == 1 and result.too_long[0][:2] == (1, "scene")
    problems = "\n".join(result.problems)
    assert "1 classes have fewer than 1 descriptions (ids 2)" in problems
    assert "no 'body' description (ids 2)" in problems and "longer than 77" in problems
    report = result.format()
    assert "answering questions" in report and "PROBLEM" in report and "duplicate x2" in report
    assert "used for several classes" in problems and "more than once in a class" in problems
    fine = check_descriptions(records[1:3] + [Description(1, "air drumming", "body", "Sticks.")],
                              NAMES[:2])
    assert fine.ok and fine.format().endswith("ok")


def test_cli_import_then_check(tmp_path, capsys):
    labels = write(tmp_path, "labels.csv", "id,name\n" + "".join(
        f"{i},{n}\n" for i, n in enumerate(NAMES)))
    body = write(tmp_path, "k_body.csv", "id,name\n0,Hands grip\\, feet push.\n1,Wrists "
                 "flick.\n2,Mouth moves.\n")
    scene = write(tmp_path, "k_scene.csv", f"id;name\n0;{LONG}\n1;A stage.\n2;An office.\n")
    out = tmp_path / "d.jsonl"
    assert main(["prompts", "import", str(body), str(scene), "--labels", str(labels),
                 "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "wrote 6 descriptions (body 3, scene 3) for 3 of 3 classes" in captured.out
    assert "shortened" in captured.err
    records = read_descriptions(out)
    assert records[0].text == "Hands grip, feet push." and records[0].kind == "body"
    assert main(["prompts", "check", str(out), "--labels", str(labels), "--kinds",
                 "body,scene"]) == 0
    assert main(["prompts", "check", str(scene), "--labels", str(labels)]) == 1
    assert "PROBLEM: 1 descriptions are longer than 77" in capsys.readouterr().out
    assert main(["prompts", "import", str(tmp_path / "missing.csv"), "--labels", str(labels),
                 "--out", str(out)]) == 2
