"""Duplicates after shortening: regenerated (or dropped and counted), and `prompts check`.

The server is the real scripted HTTP server of ``test_prompts_http`` on 127.0.0.1, made
quirky: answers longer than CLIP's 77 tokens that differ only after the cut, empty answers,
echoes of the prompt and HTTP 500s.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

import test_prompts_http as http
from claver.cli import main
from claver.prompts.check import check_descriptions
from claver.prompts.formats import Description, read_descriptions, write_descriptions
from claver.prompts.generate import generate_descriptions, retry_hint
from claver.prompts.postprocess import dedup_key
from claver.text.tokenizer import count_tokens
from test_prompts_http import Server, chat_answer

NAMES = ["abseiling", "air drumming", "bowling", "juggling", "surfing"]
# Over 77 CLIP tokens before anything that depends on the class: every class collapses to
# the same text once shortened.
PREFIX = ("The person stands with feet apart, shoulders relaxed and eyes forward, breathing "
          "slowly, then shifts the weight from one leg to the other, raises both arms, bends "
          "the knees a little and keeps the back straight while the hands move in front of the "
          "body in a steady rhythm, and the head turns slightly to follow the movement as the "
          "whole body stays balanced and calm through every repetition of the motion, ")
WORDS = ("arms legs hands feet rope wall drum stick ball pins lane knees hips torso rhythm "
         "steady quick slow swing step lift turn push pull grip wave board").split()


def long_answer(action: str) -> str:
    return f"{PREFIX}which is simply how {action} looks when it is filmed from the side."


def short_answer(action: str, seed: int) -> str:
    digest = hashlib.sha256(f"{action}|{seed}".encode()).digest()
    return f"{action.capitalize()} with " + " ".join(WORDS[b % len(WORDS)] for b in digest[:6])


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def quirky(stubborn: bool = False):
    """Long, colliding answers unless asked again with the hint; empties and echoes too."""

    def answer(body: dict) -> dict:
        content = body["messages"][-1]["content"]
        action, _, hint = content.partition("\n")
        action, seed = action.removeprefix("Action: "), body["seed"]
        if stubborn or not hint:
            text = "" if seed % 5 == 0 else long_answer(action)
        elif seed % 4 == 0:
            text = content  # echoes the prompt, hint included
        else:
            assert hint == retry_hint(action)
            text = short_answer(action, seed) + "."
        return chat_answer(text)

    return answer


def generate(server: Server, tmp_path, **kwargs):
    options = {"kinds": ["body", "scene"], "samples": 2, "max_attempts": 8,
               "progress": False}
    options.update(kwargs)
    return generate_descriptions(NAMES, tmp_path / "d.jsonl", http.backend(server), **options)


def test_collapsed_long_answers_are_asked_again_until_distinct(server, tmp_path, monkeypatch):
    monkeypatch.setattr(http, "described", quirky())
    server.scripts["/v1/chat/completions"] = [("json", 500, {"error": "boom"})] * 2
    report = generate(server, tmp_path)
    records = read_descriptions(tmp_path / "d.jsonl")
    assert report.ok and report.written == len(records) == len(NAMES) * 2 * 2
    keys = [dedup_key(r.text) for r in records]
    assert len(set(keys)) == len(keys)  # no duplicates, within a class or across classes
    assert all(count_tokens(r.text) <= 77 for r in records)
    assert sum(r.shortened for r in records) == 1  # only the first long answer is kept
    assert report.duplicates_within > 0 and report.duplicates_across > 0
    assert report.rejected["duplicate"] == report.duplicates_within + report.duplicates_across
    assert report.rejected["empty"] > 0 and report.rejected["echo"] > 0
    assert not report.dropped_duplicates
    summary = report.summary()
    assert "repeated another description after shortening" in summary
    assert f"{report.duplicates_across} across classes" in summary
    hinted = [rq for rq in server.requests if rq["body"] and "\n" in
              rq["body"]["messages"][-1]["content"]]
    assert hinted and all(len(rq["body"]["messages"]) == len(server.requests[-1]["body"][
        "messages"]) for rq in hinted)  # the hint goes into the last turn, not a new one
    assert check_descriptions(records, NAMES, kinds=["body", "scene"]).ok
    first = (tmp_path / "d.jsonl").read_bytes()
    sent = len(server.requests)
    again = generate(server, tmp_path)  # from the cache: same decisions, same file
    assert again.requests == 0 and len(server.requests) == sent
    assert (tmp_path / "d.jsonl").read_bytes() == first


def test_duplicates_that_never_go_away_are_dropped_and_counted(server, tmp_path, monkeypatch):
    monkeypatch.setattr(http, "described", quirky(stubborn=True))
    report = generate(server, tmp_path, max_attempts=3)
    records = read_descriptions(tmp_path / "d.jsonl")
    assert len(records) == 1 and records[0].class_id == 0 and records[0].shortened
    assert not report.ok and report.written == 1
    assert len(report.dropped_duplicates) == len(report.gave_up) == report.wanted - 1
    assert "air drumming/body/0 = abseiling/body/0" in report.dropped_duplicates
    summary = report.summary()
    assert "dropped because every attempt repeated another description" in summary
    assert "--max-attempts" in summary

    # A cooperative server and more attempts: the dropped jobs are asked again, with the hint.
    monkeypatch.setattr(http, "described", quirky())
    more = generate(server, tmp_path, max_attempts=10)
    records = read_descriptions(tmp_path / "d.jsonl")
    assert more.ok and len(records) == more.wanted and not more.dropped_duplicates
    assert len({dedup_key(r.text) for r in records}) == len(records)


def test_an_older_file_with_cross_class_duplicates_is_repaired_from_its_cache(server, tmp_path,
                                                                              monkeypatch):
    """A cache written before cross-class de-duplication: rerunning asks again for them."""
    generate(server, tmp_path, samples=1, kinds=["body"])  # distinct answers
    records = read_descriptions(tmp_path / "d.jsonl")
    cache = tmp_path / "d.cache.jsonl"
    lines = cache.read_text().splitlines()
    (line,) = (i for i, text in enumerate(lines) if f'"text": "{records[2].text}"' in text)
    # As an older version could have kept it: class 2's answer is class 1's, differently cased.
    lines[line] = lines[line].replace(records[2].text, records[1].text.upper())
    cache.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(http, "described", quirky())
    report = generate(server, tmp_path, samples=1, kinds=["body"])
    again = read_descriptions(tmp_path / "d.jsonl")
    assert report.ok and report.requests >= 1 and report.duplicates_across == 1
    assert report.duplicates_within == 0 and report.cached == len(NAMES) - 1
    assert len({dedup_key(r.text) for r in again}) == len(again) == len(NAMES)
    assert again[1] == records[1] and again[2].text.startswith("Bowling with ")
    assert again[2].attempt >= 1


def test_check_names_cross_and_within_class_duplicates(tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    labels.write_text("id,name\n" + "".join(f"{i},{n}\n" for i, n in enumerate(NAMES)))
    shared = long_answer("x")[:120].rstrip(", ") + "."
    records = [Description(c, NAMES[c], "body", f"{NAMES[c]} with {WORDS[c]} moving.")
               for c in range(len(NAMES))]
    records += [Description(1, NAMES[1], "scene", shared),
                Description(3, NAMES[3], "scene", shared.upper().replace(",", " ,")),
                Description(4, NAMES[4], "scene", "Waves, a board."),
                Description(4, NAMES[4], "scene", "waves a BOARD")]
    path = tmp_path / "d.jsonl"
    write_descriptions(records, path)
    assert main(["prompts", "check", str(path), "--labels", str(labels)]) == 1
    out = capsys.readouterr().out
    assert f"same text for classes 1 ({NAMES[1]}), 3 ({NAMES[3]}): {shared[:60]!r}" in out
    assert "duplicate x2 in class 4 (surfing): 'Waves, a board.'" in out
    problems = [line for line in out.splitlines() if line.startswith("PROBLEM")]
    assert len(problems) == 2, out
    assert "1 texts are used for several classes and cannot tell them apart" in problems[0]
    assert "air drumming" in problems[0] and "juggling" in problems[0]
    assert "1 texts appear more than once in a class" in problems[1]
    assert out.rstrip().endswith("2 problem(s)")
    clean = [r for r in records if r.kind == "body"]
    write_descriptions(clean, path)
    assert main(["prompts", "check", str(path), "--labels", str(labels)]) == 0
    assert Counter(dedup_key(r.text) for r in clean).most_common(1)[0][1] == 1
