"""``claver prompts check``: is a description file usable for training with this label file?

Problems (the command exits 1): classes with fewer than ``min_per_class`` descriptions,
(class, kind) pairs without a description when kinds are required, descriptions longer
than CLIP's 77 tokens, class ids outside the label file, class names that differ from it,
the same text used for several classes (it cannot tell them apart) and the same text twice
in one class. Texts are compared by :func:`~claver.prompts.postprocess.dedup_key` (case,
spacing and punctuation ignored), as they are, i.e. after any shortening to 77 tokens.
Also reported: coverage per class and kind and token-length statistics.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from claver.prompts.formats import Description
from claver.prompts.postprocess import dedup_key
from claver.text.tokenizer import DEFAULT_CONTEXT_LENGTH, count_tokens

__all__ = ["DescriptionCheck", "check_descriptions"]


@dataclass
class DescriptionCheck:
    """Findings of :func:`check_descriptions`; ``problems`` empty means usable."""

    class_names: list[str]
    kinds: list[str]
    counts: dict[tuple[int, str], int]
    lengths: list[int]
    context_length: int
    too_long: list[tuple[int, str, int, str]] = field(default_factory=list)  # class, kind, n, text
    duplicates: list[tuple[int, str, int]] = field(default_factory=list)  # class, text, copies
    shared: list[tuple[str, list[int]]] = field(default_factory=list)  # text, class ids
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def per_class(self, class_id: int) -> int:
        return sum(self.counts.get((class_id, kind), 0) for kind in self.kinds)

    def format(self, per_class: bool | None = None) -> str:
        """The report as text; the per-class table is shown for <= 50 classes by default."""
        names = self.class_names
        lines = [f"{sum(self.counts.values())} descriptions, {len(names)} classes, "
                 f"kinds: {', '.join(self.kinds) or '-'}"]
        totals = [self.per_class(c) for c in range(len(names))]
        if totals:
            lines.append(f"per class: min {min(totals)}, median {statistics.median(totals):g}, "
                         f"max {max(totals)}")
        for kind in self.kinds:
            have = [self.counts.get((c, kind), 0) for c in range(len(names))]
            lines.append(f"  {kind:<14} classes covered {sum(n > 0 for n in have)}/{len(names)}"
                         f", per class min {min(have, default=0)} max {max(have, default=0)}")
        if self.lengths:
            ordered = sorted(self.lengths)
            lines.append(
                f"CLIP tokens: min {ordered[0]}, median {statistics.median(ordered):g}, "
                f"max {ordered[-1]}, over {self.context_length}: {len(self.too_long)}")
        if per_class if per_class is not None else len(names) <= 50:
            width = max((len(n) for n in names), default=5)
            cols = [max(6, len(k)) for k in self.kinds]
            lines.append(f"{'id':>5}  {'class':<{width}}  " +
                         "  ".join(f"{k:>{w}}" for k, w in zip(self.kinds, cols, strict=True)))
            for c, name in enumerate(names):
                lines.append(f"{c:>5}  {name:<{width}}  " + "  ".join(
                    f"{self.counts.get((c, k), 0):>{w}}"
                    for k, w in zip(self.kinds, cols, strict=True)))
        for class_id, kind, tokens, text in self.too_long[:10]:
            lines.append(f"too long ({tokens} tokens): class {class_id} {kind}: {text[:70]!r}")
        for class_id, text, copies in self.duplicates[:10]:
            lines.append(f"duplicate x{copies} in class {class_id} ({names[class_id]}): "
                         f"{text[:60]!r}")
        for text, ids in self.shared[:10]:
            lines.append(f"same text for classes {_named(ids, names)}: {text[:60]!r}")
        more = len(self.duplicates) + len(self.shared) - min(10, len(self.duplicates)) - \
            min(10, len(self.shared))
        if more > 0:
            lines.append(f"... and {more} more duplicates")
        lines += [f"PROBLEM: {p}" for p in self.problems]
        lines.append("ok" if self.ok else f"{len(self.problems)} problem(s)")
        return "\n".join(lines)


def _ids(ids: Sequence[int]) -> str:
    return ", ".join(map(str, ids[:10])) + (" ..." if len(ids) > 10 else "")


def _named(ids: Sequence[int], names: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(f"{c} ({names[c]})" for c in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def check_descriptions(
    descriptions: Sequence[Description], class_names: Sequence[str], *,
    kinds: Sequence[str] | None = None, min_per_class: int = 1,
    context_length: int = DEFAULT_CONTEXT_LENGTH,
) -> DescriptionCheck:
    """Check ``descriptions`` against the label names (see the module docstring).

    ``kinds``: require at least one description of each of these kinds for every class;
    None reports the kinds found without requiring them.
    """
    found_kinds = list(dict.fromkeys(d.kind for d in descriptions))
    shown_kinds = list(kinds) + [k for k in found_kinds if k not in kinds] if kinds else found_kinds
    result = DescriptionCheck(list(class_names), shown_kinds, {}, [], context_length)
    counts: Counter = Counter()
    by_text: dict[str, list[tuple[int, str]]] = defaultdict(list)
    outside: list[int] = []
    renamed: list[tuple[int, str]] = []
    for record in descriptions:
        if not 0 <= record.class_id < len(class_names):
            outside.append(record.class_id)
            continue
        if record.class_name and record.class_name != class_names[record.class_id]:
            renamed.append((record.class_id, record.class_name))
        counts[(record.class_id, record.kind)] += 1
        tokens = count_tokens(record.text)
        result.lengths.append(tokens)
        if tokens > context_length:
            result.too_long.append((record.class_id, record.kind, tokens, record.text))
        by_text[dedup_key(record.text)].append((record.class_id, record.text))
    result.counts = dict(counts)
    for uses in by_text.values():
        per_class = Counter(class_id for class_id, _ in uses)
        result.duplicates += [(c, uses[0][1], n) for c, n in sorted(per_class.items()) if n > 1]
        if len(per_class) > 1:
            result.shared.append((uses[0][1], sorted(per_class)))

    problems = result.problems
    if outside:
        problems.append(f"{len(outside)} descriptions have class ids outside the label file's "
                        f"0..{len(class_names) - 1} (ids {_ids(sorted(set(outside)))}); use the "
                        "label file they were made for")
    if renamed:
        shown = ", ".join(f"{c}: {n!r} vs {class_names[c]!r}" for c, n in renamed[:3])
        problems.append(f"{len(renamed)} descriptions name their class differently from the "
                        f"label file ({shown}); use the label file they were generated for")
    short = [c for c in range(len(class_names)) if result.per_class(c) < min_per_class]
    if short:
        problems.append(f"{len(short)} classes have fewer than {min_per_class} descriptions "
                        f"(ids {_ids(short)}); generate them (claver prompts generate resumes)")
    for kind in kinds or []:
        absent = [c for c in range(len(class_names)) if not counts.get((c, kind))]
        if absent:
            problems.append(f"{len(absent)} classes have no {kind!r} description "
                            f"(ids {_ids(absent)})")
    if result.too_long:
        problems.append(f"{len(result.too_long)} descriptions are longer than {context_length} "
                        "CLIP tokens; claver prompts import shortens them, or shorten them by "
                        "hand")
    fix = ("rerun claver prompts generate with its cache (it asks again for duplicates), or "
           "edit them")
    if result.shared:
        text, ids = result.shared[0]
        problems.append(f"{len(result.shared)} texts are used for several classes and cannot "
                        f"tell them apart (first: classes {_named(ids, class_names, 3)}: "
                        f"{text[:60]!r}); {fix}")
    if result.duplicates:
        class_id, text, copies = result.duplicates[0]
        problems.append(f"{len(result.duplicates)} texts appear more than once in a class "
                        f"(first: x{copies} in class {class_id} ({class_names[class_id]}): "
                        f"{text[:60]!r}); {fix}")
    return result
