"""Prompt templates of the papers: each turns a class name into one text row.

A template holds exactly one ``{}``, replaced by the class name (``"a video of {}."``).

Sources (the lists are the papers' data, written down here so that experiments match):

- :data:`CLAVER_TEMPLATES`: the 16 templates active in the official CLAVER code
  (``generate_text`` in ``utils/tools.py`` of github.com/yjyddq/CLAVER): CLIP's Kinetics
  templates without the "using/doing/during/performing/practicing" variants, plus
  ActionCLIP-style phrasings. The paper stacks them with the interpretive descriptions into
  the (P + A, C, 77) text tensor.
- :data:`ACTIONCLIP_TEMPLATES`: the 16 templates of ActionCLIP ("ActionCLIP: A New Paradigm
  for Video Action Recognition", Wang, Xing, Liu 2021; ``text_prompt`` of its code). Training
  picks one at random per sample; testing averages over all 16.

Spelling and punctuation are kept as the papers have them ("a example of", missing full
stops): CLIP's text features depend on them.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ACTIONCLIP_TEMPLATES",
    "CLAVER_TEMPLATES",
    "TEMPLATE_SETS",
    "fill_templates",
    "get_templates",
    "validate_template",
]

CLAVER_TEMPLATES: tuple[str, ...] = (
    "{}",
    "a video of {}.",
    "a video of a person {}.",
    "a example of {}.",
    "a example of a person {}.",
    "a demonstration of {}.",
    "a demonstration of a person {}.",
    "Human action of {}.",
    "{}, an action.",
    "{} this is an action.",
    "{}, a video of action.",
    "Playing action of {}.",
    "Playing a kind of action, {}",
    "Doing a kind of action, {}",
    "Look, the human is {}",
    "Video classification of {}",
)

ACTIONCLIP_TEMPLATES: tuple[str, ...] = (
    "a photo of action {}",
    "a picture of action {}",
    "Human action of {}",
    "{}, an action",
    "{} this is an action",
    "{}, a video of action",
    "Playing action of {}",
    "{}",
    "Playing a kind of action, {}",
    "Doing a kind of action, {}",
    "Look, the human is {}",
    "Can you recognize the action of {}?",
    "Video classification of {}",
    "A video of {}",
    "The man is {}",
    "The woman is {}",
)

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "claver": CLAVER_TEMPLATES,
    "actionclip": ACTIONCLIP_TEMPLATES,
    "name": ("{}",),
    "video": ("a video of {}.",),
}


def validate_template(template: str) -> str:
    """Return ``template`` if it holds exactly one ``{}`` and no other braces, else raise."""
    if not isinstance(template, str):
        raise TypeError(f"a template must be a str, got {type(template).__name__}: {template!r}")
    rest = template.replace("{}", "", 1)
    if "{}" not in template or "{" in rest or "}" in rest:
        raise ValueError(
            f"template {template!r} must contain exactly one '{{}}' (where the class name "
            "goes) and no other braces, e.g. 'a video of {}.'"
        )
    return template


def get_templates(templates: str | Sequence[str]) -> tuple[str, ...]:
    """A named set (``claver``, ``actionclip``, ``name``, ``video``) or a list, validated."""
    if isinstance(templates, str):
        found = TEMPLATE_SETS.get(templates.lower())
        if found is not None:
            return found
        if "{}" not in templates:
            raise ValueError(
                f"unknown template set {templates!r}; use one of {sorted(TEMPLATE_SETS)} or "
                "a list of templates holding '{}'"
            )
        return (validate_template(templates),)
    return tuple(validate_template(t) for t in templates)


def fill_templates(templates: str | Sequence[str], class_names: Sequence[str]) -> list[list[str]]:
    """Rows of texts: ``rows[p][c] = templates[p]`` with class ``c``'s name; (P, C)."""
    return [[t.replace("{}", name, 1) for name in class_names] for t in get_templates(templates)]
