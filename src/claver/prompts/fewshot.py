"""Few-shot prompts that ask an LLM for interpretive descriptions of an action class.

Four kinds, after the CLAVER paper: ``decomposition`` (the simpler movements an action is
made of), ``body`` (which body parts move and how), ``synonyms`` (other phrasings of the
same action) and ``scene`` (where and among what the action is typically filmed).

The instruction and example texts are ours. Each prompt exists in two forms:

- completion (base models, ``/v1/completions``): the instruction, then ``Action: ...`` /
  ``Answer: ...`` pairs separated by blank lines, ending with ``Action: <class>\\nAnswer:``;
- chat (``/v1/chat/completions``, chat templates): the instruction as the system message,
  each example as a user/assistant turn, then the class as the last user turn.

A prompts file (YAML or JSON) overrides or adds kinds::

    body:                       # replaces the built-in "body" prompt
      instruction: Describe the body parts that move when a person does the action.
      examples:
        - {action: waving, answer: Arm raised, hand open, wrist swinging side to side.}
    gait:                       # a new kind, usable with --kinds gait
      template: "Describe how a person walks while {action}.\\nAnswer:"

``template`` (a raw prompt holding ``{action}``) is sent as it is (chat: as the only user
message) instead of the instruction/examples format.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "DEFAULT_PROMPTS",
    "KINDS",
    "PromptSpec",
    "load_prompt_file",
    "resolve_prompts",
]

KINDS: tuple[str, ...] = ("decomposition", "body", "synonyms", "scene")
ACTION_LABEL = "Action:"
ANSWER_LABEL = "Answer:"


@dataclass(frozen=True)
class PromptSpec:
    """The prompt of one description kind: instruction + examples, or a raw template."""

    kind: str
    instruction: str = ""
    examples: tuple[tuple[str, str], ...] = ()
    template: str | None = None

    def completion(self, action: str) -> str:
        """Prompt text for a completion endpoint; the model continues after ``Answer:``."""
        if self.template is not None:
            return self.template.replace("{action}", action)
        parts = [self.instruction.strip()] if self.instruction.strip() else []
        parts += [f"{ACTION_LABEL} {a}\n{ANSWER_LABEL} {answer}" for a, answer in self.examples]
        parts.append(f"{ACTION_LABEL} {action}\n{ANSWER_LABEL}")
        return "\n\n".join(parts)

    def messages(self, action: str) -> list[dict[str, str]]:
        """Chat messages (``role``/``content``) asking for ``action``'s description."""
        if self.template is not None:
            return [{"role": "user", "content": self.template.replace("{action}", action)}]
        messages = []
        if self.instruction.strip():
            messages.append({"role": "system", "content": self.instruction.strip()})
        for example_action, answer in self.examples:
            messages.append({"role": "user", "content": f"{ACTION_LABEL} {example_action}"})
            messages.append({"role": "assistant", "content": answer})
        messages.append({"role": "user", "content": f"{ACTION_LABEL} {action}"})
        return messages


_RULES = "Write plain text on one line, no list, no title, no preamble."

DEFAULT_PROMPTS: dict[str, PromptSpec] = {
    "decomposition": PromptSpec(
        "decomposition",
        "You explain human actions to a video recognition system. Given the name of an "
        "action, write one short paragraph (at most 50 words) that breaks the action down "
        "into the simpler movements it is made of, in the order they happen. " + _RULES,
        (
            ("juggling balls",
             "Juggling balls starts with two balls in one hand and one in the other. A hand "
             "tosses a ball up in an arc, the other hand catches it and throws its own ball "
             "back, and the throws repeat in a steady rhythm while the eyes follow each arc."),
            ("shoveling snow",
             "Shoveling snow repeats a short cycle: the person pushes the shovel blade into "
             "the snow, bends the knees, lifts the load with both arms, turns the torso to "
             "throw the snow aside, then straightens up and steps forward."),
            ("tying a tie",
             "Tying a tie begins with the tie draped around the collar, wide end longer. The "
             "wide end crosses over the narrow one, wraps around it, goes up through the neck "
             "loop and down through the front knot, which the hands tighten and slide up."),
        ),
    ),
    "body": PromptSpec(
        "body",
        "Given the name of a human action, write one short paragraph (at most 50 words) "
        "that says which body parts move during the action and how they move. " + _RULES,
        (
            ("juggling balls",
             "Hands cupped at waist height, wrists flicking up to release each ball, forearms "
             "circling in small loops, fingers closing around falling balls, elbows near the "
             "body, head tilted slightly back, eyes tracking the arcs."),
            ("shoveling snow",
             "Hands gripping shaft and handle, arms driving the blade forward, knees and hips "
             "bending to scoop, back and shoulders lifting the load, torso twisting to throw, "
             "feet planted apart and stepping ahead after every load."),
            ("tying a tie",
             "Fingers pinching and folding the fabric, hands crossing in front of the chest, "
             "wrists turning to wrap the wide end, arms raised near the collar, chin lifted "
             "out of the way, eyes on a mirror."),
        ),
    ),
    "synonyms": PromptSpec(
        "synonyms",
        "Given the name of a human action, list other words and short phrases that mean the "
        "same action, separated by commas (at most 30 words). " + _RULES,
        (
            ("juggling balls",
             "Tossing and catching balls, keeping balls in the air, ball juggling, cascade "
             "juggling, throwing balls in a loop, doing a juggling trick."),
            ("shoveling snow",
             "Clearing snow, digging out snow, scooping snow, removing snow with a shovel, "
             "snow shoveling, clearing the driveway, shifting snow."),
            ("tying a tie",
             "Knotting a necktie, doing up a tie, fastening a tie, making a tie knot, putting "
             "on a necktie, tying a Windsor knot."),
        ),
    ),
    "scene": PromptSpec(
        "scene",
        "Given the name of a human action, write one short paragraph (at most 50 words) "
        "that describes a typical place and situation in which a video of the action is "
        "filmed: the surroundings, objects and people around. " + _RULES,
        (
            ("juggling balls",
             "On a sunny town square a street performer juggles colourful balls in front of "
             "a small crowd; passers-by stop to watch, a hat for coins lies on the "
             "cobblestones and shop fronts line the background."),
            ("shoveling snow",
             "Early on a winter morning a person in a thick coat and gloves clears the snowy "
             "driveway of a house; snow banks pile up along the path, parked cars are white "
             "and flakes are still falling."),
            ("tying a tie",
             "In a bedroom before work a man in a white shirt stands at a mirror tying his "
             "tie; a jacket hangs on a chair, the bed is made and morning light comes through "
             "the window."),
        ),
    ),
}


def _spec_from_entry(path: str, kind: str, entry: object) -> PromptSpec:
    fix = ("give each kind 'instruction' and 'examples' (a list of {action, answer}), or a "
           "'template' holding {action}")
    if isinstance(entry, str):
        entry = {"template": entry}
    if not isinstance(entry, Mapping):
        raise ValueError(f"{path}: kind {kind!r} must be a mapping, got {entry!r:.80}; {fix}")
    unknown = set(entry) - {"instruction", "examples", "template"}
    if unknown:
        raise ValueError(f"{path}: kind {kind!r} has unknown keys {sorted(unknown)}; {fix}")
    template = entry.get("template")
    if template is not None and (not isinstance(template, str) or "{action}" not in template):
        raise ValueError(f"{path}: kind {kind!r}: template {template!r:.80} must be a string "
                         "holding {action} (where the class name goes)")
    instruction = entry.get("instruction", "")
    if not isinstance(instruction, str):
        raise ValueError(f"{path}: kind {kind!r}: instruction must be a string, got "
                         f"{instruction!r:.80}")
    examples: list[tuple[str, str]] = []
    for number, example in enumerate(entry.get("examples") or [], start=1):
        if isinstance(example, Mapping) and set(example) == {"action", "answer"}:
            pair = (example["action"], example["answer"])
        elif isinstance(example, (list, tuple)) and len(example) == 2:
            pair = (example[0], example[1])
        else:
            raise ValueError(f"{path}: kind {kind!r}, example {number}: {example!r:.80} is not "
                             "{action: ..., answer: ...} or [action, answer]")
        if not all(isinstance(x, str) and x.strip() for x in pair):
            raise ValueError(f"{path}: kind {kind!r}, example {number}: action and answer must "
                             f"be non-empty strings, got {pair!r:.80}")
        examples.append((pair[0].strip(), " ".join(pair[1].split())))
    if template is None and not instruction.strip() and not examples:
        raise ValueError(f"{path}: kind {kind!r} is empty; {fix}")
    return PromptSpec(kind, instruction, tuple(examples), template)


def load_prompt_file(path: str | os.PathLike) -> dict[str, PromptSpec]:
    """Prompt specs by kind from a YAML or JSON file (see the module docstring)."""
    from claver.fileio import MAX_CONFIG_BYTES, FileFormatError, parse_json, parse_yaml, read_text

    try:  # bounded, UTF-8, YAML without aliases: errors name the file and line
        text = read_text(path, max_bytes=MAX_CONFIG_BYTES, what="prompts file")
        parse = parse_json if str(path).lower().endswith(".json") else parse_yaml
        data = parse(text, str(path))
    except FileFormatError as e:
        raise ValueError(f"{e} (cannot parse the prompts file: write YAML or JSON mapping each "
                         "kind to its prompt)") from None
    if not isinstance(data, Mapping) or not data:
        raise ValueError(f"{path}: expected a mapping of kind -> prompt, got {data!r:.80}")
    specs = {}
    for kind, entry in data.items():
        if not isinstance(kind, str) or not kind.strip() or any(c in kind for c in ",\n"):
            raise ValueError(f"{path}: kind name {kind!r} must be a word without commas")
        specs[kind.strip()] = _spec_from_entry(str(path), kind.strip(), entry)
    return specs


def resolve_prompts(prompts_file: str | os.PathLike | None = None) -> dict[str, PromptSpec]:
    """The built-in prompts, with those of ``prompts_file`` replacing or adding kinds."""
    specs = dict(DEFAULT_PROMPTS)
    if prompts_file is not None:
        specs.update(load_prompt_file(prompts_file))
    return specs
