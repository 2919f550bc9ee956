"""Post-processing of LLM output, the few-shot prompts and the paper's template lists."""

from __future__ import annotations

import pytest

from claver.prompts.fewshot import DEFAULT_PROMPTS, KINDS, load_prompt_file, resolve_prompts
from claver.prompts.postprocess import (
    clean_output,
    dedup_key,
    fit_to_context,
    process_output,
    rejection_reason,
)
from claver.text.prompts import (
    ACTIONCLIP_TEMPLATES,
    CLAVER_TEMPLATES,
    fill_templates,
    get_templates,
)
from claver.text.tokenizer import count_tokens, tokenize


@pytest.mark.parametrize("raw,expected", [
    (" Arms swing and legs kick.\n\nAction: bowling\nAnswer: Pins fall.",
     "Arms swing and legs kick."),
    ("Sure! Here is a description of the action:\n\nThe body leans back.", "The body leans back."),
    ("Certainly! The body leans back.\nIt keeps going.", "The body leans back. It keeps going."),
    ("Answer: **Hands** grip the rope.", "Hands grip the rope."),
    ('"Feet push off the wall."', "Feet push off the wall."),
    ("- Hands clap\n- feet stamp", "Hands clap, feet stamp."),
    ("Okay, here you go.\nThe bowler rolls.", "The bowler rolls."),
    ("Sure!\n\n1. Approach the lane\n2. Swing the arm", "Approach the lane, Swing the arm."),
    ("abseiling: Lowering down a cliff.", "Lowering down a cliff."),
    ("<think>what is abseiling?</think>Ropes and harnesses.<|eot_id|>more",
     "Ropes and harnesses."),
    ("Action: abseiling\nAnswer: Lowering down a cliff.", "Lowering down a cliff."),
    ("abseiling => Lowering down a cliff.\ndriving car => Hands on wheel.",
     "Lowering down a cliff."),
    ("   \n\n  Hands   move \t fast.  ", "Hands move fast."),
])
def test_clean_output_keeps_the_first_answer(raw, expected):
    assert clean_output(raw, action="abseiling") == expected


def test_clean_output_drops_the_prompt_echo_and_a_cut_off_tail():
    prompt = "Describe.\n\nAction: bowling\nAnswer:"
    echoed = prompt + " Ball rolls. Pins fall."
    assert clean_output(echoed, prompt=prompt) == "Ball rolls. Pins fall."
    assert clean_output("Ball rolls. Pins fall and the bowl", truncated=True) == "Ball rolls."
    assert clean_output("Rolling, throwing, bowl", truncated=True) == "Rolling, throwing."
    untouched = "Ball rolls. Pins fall and the bowl"
    assert clean_output(untouched) == untouched


@pytest.mark.parametrize("text,reason", [
    ("", "empty"), ("   ", "empty"), ("Bowling.", "too short"),
    ("I'm sorry, but I can't describe that.", "refusal"),
    ("As an AI language model, I cannot watch videos.", "refusal"),
    ("I cannot help with this request.", "refusal"),
    ("Arms swing the ball toward the pins.", None),
    ("The bowler cannot stop smiling as pins fall.", None),
])
def test_rejection_reasons(text, reason):
    assert rejection_reason(text) == reason


def test_dedup_key_ignores_case_punctuation_and_spacing():
    assert dedup_key("Arms swing, legs kick!") == dedup_key("arms  swing legs kick")
    assert dedup_key("\uff21rms_swing \u2014 \u201clegs\u201d\tKICK.") == "arms swing legs kick"
    assert dedup_key("Arms swing.") != dedup_key("Arms swung.")


def test_long_texts_that_differ_only_after_77_tokens_collide_after_fitting():
    a, _ = fit_to_context(LONG + " Then the climber waves at the camera.")
    b, _ = fit_to_context(LONG.upper() + " A dog barks.")
    assert dedup_key(a) == dedup_key(b) and a != LONG  # what generation must catch


LONG = ("The climber clips the rope into the descender and checks the harness buckles. "
        "Leaning back over the edge, the climber walks down the rock face in small steps, "
        "feeding rope through the brake hand, pausing on ledges, glancing down to pick a "
        "line, checking the anchor above once more, and finally landing on the soft grass "
        "below the cliff, unclipping the device, pulling the rope down and coiling it.")


def test_fit_to_context_cuts_at_a_sentence_or_clause_boundary():
    assert count_tokens(LONG) > 77
    text, shortened = fit_to_context(LONG)
    assert shortened and count_tokens(text) <= 77
    # the first sentence alone keeps too little, so the cut is at the last comma that fits
    assert text.endswith(".") and LONG.startswith(text[:-1]) and LONG[len(text) - 1] == ","
    assert count_tokens(text) > 60
    tokenize([text])  # never raises TextTooLongError
    first = "The climber clips the rope into the descender and checks the harness buckles."
    assert fit_to_context(first) == (first, False)
    assert fit_to_context(LONG, context_length=20) == (first, True)


def test_fit_to_context_prefers_whole_sentences_when_they_keep_enough():
    sentence = "Hands grip the rope tightly, feet push off the wall."
    six = " ".join([sentence] * 6)
    tail = " Hands grip, feet push off the wall again and again and again."
    assert count_tokens(six) == 74 and count_tokens(six + " Hands grip.") <= 77
    # a clause cut ("... Hands grip.") would keep more, but whole sentences keep enough
    assert fit_to_context(six + tail) == (six, True)


def test_fit_to_context_last_resorts_words_then_characters():
    words = " ".join(["rope"] * 120)
    text, shortened = fit_to_context(words)
    assert shortened and count_tokens(text) <= 77 and text.endswith("rope.")
    blob = "x" * 2000
    text, _ = fit_to_context(blob)
    assert count_tokens(text) <= 77 and blob.startswith(text) and len(text) > 10


def test_process_output_pipeline():
    long = "Sure! Here it is:\n\n" + LONG + "\n\nAction: bowling"
    result = process_output(long, action="abseiling")
    assert result.reason is None and result.shortened and count_tokens(result.text) <= 77
    assert process_output("I'm sorry, I can't.").reason == "refusal"


def test_few_shot_prompts_are_ours_and_fit():
    assert set(KINDS) == set(DEFAULT_PROMPTS)
    for spec in DEFAULT_PROMPTS.values():
        assert len(spec.examples) == 3
        for _, answer in spec.examples:
            assert count_tokens(answer) <= 77
        text = spec.completion("bowling")
        assert text.endswith("Action: bowling\nAnswer:") and text.count("Action:") == 4
        messages = spec.messages("bowling")
        assert messages[0]["role"] == "system" and messages[-1] == {
            "role": "user", "content": "Action: bowling"}
        assert [m["role"] for m in messages[1:-1]] == ["user", "assistant"] * 3


def test_prompt_file_overrides_and_adds(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "body:\n  instruction: Name the moving body parts.\n  examples:\n"
        "    - {action: waving, answer: 'Arm up, wrist swinging.'}\n    - [nodding, Head dips.]\n"
        "gait: 'Walk while {action}.'\n")
    specs = resolve_prompts(path)
    assert specs["body"].examples == (("waving", "Arm up, wrist swinging."),
                                      ("nodding", "Head dips."))
    assert specs["decomposition"] is DEFAULT_PROMPTS["decomposition"]
    assert specs["gait"].completion("hopping") == "Walk while hopping."
    assert specs["gait"].messages("hopping") == [{"role": "user", "content": "Walk while hopping."}]
    (tmp_path / "bad.yaml").write_text("body:\n  examples: [[only one]]\n")
    with pytest.raises(ValueError, match=r"bad.yaml: kind 'body', example 1"):
        load_prompt_file(tmp_path / "bad.yaml")
    (tmp_path / "bad2.json").write_text('{"gait": {"template": "no placeholder"}}')
    with pytest.raises(ValueError, match=r"\{action\}"):
        load_prompt_file(tmp_path / "bad2.json")
    (tmp_path / "bad3.yaml").write_text("body: [unclosed\n")
    with pytest.raises(ValueError, match="cannot parse"):
        load_prompt_file(tmp_path / "bad3.yaml")


def test_template_lists_of_the_papers():
    assert len(CLAVER_TEMPLATES) == 16 and len(ACTIONCLIP_TEMPLATES) == 16
    assert CLAVER_TEMPLATES[:3] == ("{}", "a video of {}.", "a video of a person {}.")
    assert "Look, the human is {}" in CLAVER_TEMPLATES
    assert "The woman is {}" in ACTIONCLIP_TEMPLATES
    assert get_templates("claver") is CLAVER_TEMPLATES
    assert fill_templates(["{} now", "a video of {}."], ["a", "b"]) == [
        ["a now", "b now"], ["a video of a.", "a video of b."]]
    with pytest.raises(ValueError, match="exactly one"):
        get_templates(["{} and {}"])
    with pytest.raises(ValueError, match="unknown template set"):
        get_templates("clavr")
