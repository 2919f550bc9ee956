"""Generate interpretive descriptions for every class, resumably.

A *job* is one (class, kind, sample index). Every attempt at a job is appended to the cache
(:mod:`claver.prompts.cache`) as soon as it finishes, so an interrupted run loses nothing
and a rerun of the same command continues where it stopped.

Jobs run in rounds. Before each round the cache is read back into one *winner* per job —
its latest accepted attempt — and duplicates are resolved in the fixed job order (class,
then kind, then sample): an accepted text (already cleaned and shortened to fit CLIP's 77
tokens, so over-long answers that only differed after the cut collide here) whose
:func:`~claver.prompts.postprocess.dedup_key` repeats an earlier winner — of the same class
or of any other class, since a text shared by two classes cannot tell them apart — does
not win; the job's earlier accepted attempts are tried, latest first. Jobs without a
winner get their next attempt (each attempt has its own seed; a job whose answer was a
duplicate is asked again with :func:`retry_hint` added to its prompt: shorter, and specific
to its class), until ``max_attempts`` is reached; jobs that run out are dropped, and the
report counts them (``dropped_duplicates``), so duplicates are never kept. Because the
decisions depend only on what the cache holds, never on the order in which concurrent
requests finished, the final file is the same whether the run was interrupted or not
(given a backend that answers each request the same way, e.g. a seeded or greedy one).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from claver.prompts.backends import (
    Backend,
    BackendError,
    Generation,
    Request,
    SamplingParams,
    request_seed,
)
from claver.prompts.cache import CacheEntry, CacheKey, GenerationCache
from claver.prompts.fewshot import KINDS, PromptSpec, resolve_prompts
from claver.prompts.formats import Description, write_descriptions
from claver.prompts.postprocess import dedup_key, process_output
from claver.text.tokenizer import DEFAULT_CONTEXT_LENGTH

__all__ = ["GenerationReport", "Job", "default_cache_path", "generate_descriptions",
           "prompt_hash", "retry_hint"]


@dataclass(frozen=True, order=True)
class Job:
    """One description to produce: class id, position of its kind, kind, sample index."""

    class_id: int
    kind_index: int
    kind: str
    sample: int


@dataclass
class GenerationReport:
    """What a run did; ``ok`` is False when requests failed or a (class, kind) got nothing."""

    output: Path
    cache: Path
    wanted: int
    written: int = 0
    cached: int = 0
    requests: int = 0
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)
    shortened: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    gave_up: list[str] = field(default_factory=list)
    uncovered: list[tuple[int, str]] = field(default_factory=list)
    duplicates_within: int = 0  # answers asked again: they repeated a text of their class
    duplicates_across: int = 0  # ... of another class
    dropped_duplicates: list[str] = field(default_factory=list)  # "job = job it repeats"
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.uncovered

    def summary(self) -> str:
        """A few readable lines for the console."""
        rejected = ", ".join(f"{reason} {n}" for reason, n in sorted(self.rejected.items()))
        lines = [
            f"wrote {self.written} of {self.wanted} descriptions to {self.output} "
            f"(cache: {self.cache})",
            f"reused from the cache: {self.cached}; requests this run: {self.requests} "
            f"({self.accepted} accepted, {sum(self.rejected.values())} rejected"
            f"{': ' + rejected if rejected else ''}) in {self.elapsed:.1f} s",
        ]
        if self.shortened:
            lines.append(f"descriptions shortened to fit CLIP's text context: {self.shortened}")
        if self.duplicates_within or self.duplicates_across:
            lines.append(f"answers that repeated another description after shortening: "
                         f"{self.duplicates_within} within a class, {self.duplicates_across} "
                         "across classes (asked again, up to the maximum attempts)")
        if self.gave_up:
            more = " ..." if len(self.gave_up) > 5 else ""
            lines.append(f"gave up after the maximum attempts: {len(self.gave_up)} "
                         f"({', '.join(self.gave_up[:5])}{more})")
        if self.dropped_duplicates:
            more = " ..." if len(self.dropped_duplicates) > 3 else ""
            lines.append(f"dropped because every attempt repeated another description: "
                         f"{len(self.dropped_duplicates)} "
                         f"({'; '.join(self.dropped_duplicates[:3])}{more}); "
                         "rerun with a higher --max-attempts to ask again")
        if self.failed:
            first = next(iter(self.failed.items()))
            lines.append(f"failed requests: {len(self.failed)} (first: {first[0]}: {first[1]}); "
                         "rerun the same command to retry them")
        if self.uncovered:
            shown = ", ".join(f"{c}/{k}" for c, k in self.uncovered[:8])
            lines.append(f"(class, kind) pairs without any description: {len(self.uncovered)} "
                         f"({shown}{' ...' if len(self.uncovered) > 8 else ''})")
        return "\n".join(lines)


def default_cache_path(out: str | os.PathLike) -> Path:
    """``descriptions.jsonl`` -> ``descriptions.cache.jsonl`` (next to the output)."""
    out = Path(out)
    return out.with_name(out.name.removesuffix(".jsonl") + ".cache.jsonl")


def prompt_hash(style: str, spec: PromptSpec, class_name: str, params: SamplingParams) -> str:
    """16 hex digits of SHA-256 over the prompt as sent and the decoding settings."""
    prompt = spec.messages(class_name) if style == "chat" else spec.completion(class_name)
    blob = json.dumps({"style": style, "prompt": prompt, "temperature": params.temperature,
                       "top_p": params.top_p, "max_tokens": params.max_tokens,
                       "seed": params.seed}, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def retry_hint(class_name: str, context_length: int = DEFAULT_CONTEXT_LENGTH) -> str:
    """What is added to the prompt of a job whose last answer repeated another description."""
    words = max(5, (context_length - 2) // 3)
    return (f"Your previous answer repeated another description once cut to fit. Write a "
            f"different answer, at most {words} words, with details that fit only "
            f"{class_name}.")


def _with_hint(completion: str, messages: tuple[dict[str, str], ...],
               hint: str) -> tuple[str, tuple[dict[str, str], ...]]:
    """The prompt in both forms with ``hint`` added: first paragraph / end of the last turn."""
    chat = tuple(messages[:-1]) + (
        {**messages[-1], "content": f"{messages[-1]['content']}\n{hint}"},) if messages else ()
    return f"{hint}\n\n{completion}", chat


@dataclass
class _State:
    winners: dict[Job, CacheEntry]
    attempts: dict[Job, int]
    pending: list[Job]
    gave_up: list[Job]
    duplicates: dict[tuple[Job, int], Job]  # (job, attempt) -> the job whose winner it repeats
    collided: dict[Job, Job]  # job without a winner whose latest accepted text is a repeat


def _state(jobs: Sequence[Job], keys: Mapping[Job, CacheKey], cache: GenerationCache,
           max_attempts: int, skip: set[Job]) -> _State:
    """Winners after duplicate resolution in job order, attempts used, jobs still to run."""
    by_key: dict[CacheKey, list[CacheEntry]] = {}
    for entry in cache.entries:
        by_key.setdefault(entry.key, []).append(entry)
    winners: dict[Job, CacheEntry] = {}
    attempts: dict[Job, int] = {}
    pending: list[Job] = []
    gave_up: list[Job] = []
    duplicates: dict[tuple[Job, int], Job] = {}
    collided: dict[Job, Job] = {}
    seen: dict[str, Job] = {}  # dedup key -> the winner holding it (any class)
    for job in jobs:
        entries = by_key.get(keys[job], [])
        attempts[job] = max((e.attempt for e in entries), default=-1) + 1
        accepted = sorted((e for e in entries if e.status == "ok"), key=lambda e: -e.attempt)
        for entry in accepted:
            text_key = dedup_key(entry.text)
            owner = seen.get(text_key)
            if owner is None:
                seen[text_key] = job
                winners[job] = entry
                break
            duplicates[(job, entry.attempt)] = owner
            collided.setdefault(job, owner)
        if job in winners:
            collided.pop(job, None)
            continue
        if job in skip:
            continue
        (pending if attempts[job] < max_attempts else gave_up).append(job)
    return _State(winners, attempts, pending, gave_up, duplicates, collided)


def _batches(items: Sequence, size: int) -> list[Sequence]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def generate_descriptions(
    class_names: Sequence[str],
    out: str | os.PathLike,
    backend: Backend,
    *,
    kinds: Sequence[str] | None = None,
    samples: int = 5,
    prompts: Mapping[str, PromptSpec] | str | os.PathLike | None = None,
    params: SamplingParams | None = None,
    cache: str | os.PathLike | None = None,
    max_attempts: int = 4,
    context_length: int = DEFAULT_CONTEXT_LENGTH,
    progress: bool = True,
    stop_event: threading.Event | None = None,
    max_consecutive_failures: int = 20,
) -> GenerationReport:
    """Generate ``samples`` descriptions per class and kind and write them as JSONL to ``out``.

    Args:
        class_names: names in class-id order (e.g. :func:`claver.data.sources.read_labels`).
        backend: an :class:`~claver.prompts.backends.OpenAIBackend`, a
            :class:`~claver.prompts.hf_backend.HFBackend` or anything with that interface.
        kinds: subset of the prompt kinds (default: the four of the paper).
        prompts: prompt specs by kind, or a prompts file (see :mod:`claver.prompts.fewshot`).
        cache: the attempts cache (default :func:`default_cache_path`).
        max_attempts: attempts per job before giving up on it (rejected outputs are
            regenerated; each attempt has its own seed).
        stop_event: set it to stop early (it is set on Ctrl-C); default: the backend's
            ``stop_event`` when it has one, so that retry waits end at once.
        max_consecutive_failures: abort when this many requests fail in a row.

    Returns:
        A :class:`GenerationReport`. The output holds every job's accepted description, in
        job order; it is rewritten even when some jobs failed (rerun to fill them in).
    """
    started = time.monotonic()
    params = params if params is not None else SamplingParams()
    if samples < 1 or max_attempts < 1:
        raise ValueError(f"need samples >= 1 and max_attempts >= 1, got {samples}, {max_attempts}")
    specs = dict(prompts) if isinstance(prompts, Mapping) else resolve_prompts(prompts)
    wanted_kinds = list(kinds) if kinds is not None else [k for k in KINDS if k in specs]
    unknown = [k for k in wanted_kinds if k not in specs]
    if unknown or not wanted_kinds:
        raise ValueError(f"unknown kinds {unknown}; choose from {', '.join(specs)} (or add them "
                         "with a prompts file)")
    order = [k for k in specs if k in wanted_kinds]  # prompt-set order, not command-line order
    style = backend.style
    keys: dict[Job, CacheKey] = {}
    requests: dict[Job, tuple[str, tuple[dict[str, str], ...]]] = {}  # completion, chat
    for class_id, name in enumerate(class_names):
        for kind_index, kind in enumerate(order):
            spec = specs[kind]
            digest = prompt_hash(style, spec, name, params)
            for sample in range(samples):
                job = Job(class_id, kind_index, kind, sample)
                keys[job] = (class_id, kind, sample, backend.model_name, digest)
                requests[job] = (spec.completion(name), tuple(spec.messages(name)))
    jobs = sorted(keys)
    out = Path(out)
    cache_path = Path(cache) if cache is not None else default_cache_path(out)
    report = GenerationReport(out, cache_path, wanted=len(jobs))
    stop = stop_event
    if stop is None:  # the backend's own event, reset in case an earlier run was interrupted
        stop = getattr(backend, "stop_event", None) or threading.Event()
        stop.clear()
    failed: dict[Job, str] = {}

    with GenerationCache(cache_path) as store:
        state = _state(jobs, keys, store, max_attempts, set())
        report.cached = len(state.winners)
        # Cached answers found to repeat another description (e.g. in a cache written before
        # cross-class de-duplication): their jobs are asked again now.
        found = {k: owner for k, owner in state.duplicates.items()
                 if k[0] in state.collided and k[0] in state.pending}
        bar = _progress_bar(len(jobs), len(state.winners), progress)
        consecutive = 0
        generated: set[tuple[Job, int]] = set()
        duplicates: dict[tuple[Job, int], Job] = {}
        sent: dict[tuple[Job, int], tuple[str, str | None]] = {}  # prompt and hint of attempts

        def handle(batch: Sequence[Job], results: Sequence[Generation | BackendError]) -> None:
            """Append each result to the cache at once (or note the failure)."""
            nonlocal consecutive
            if len(results) != len(batch):
                raise BackendError(f"backend returned {len(results)} results for "
                                   f"{len(batch)} requests")
            for job, result in zip(batch, results, strict=True):
                report.requests += 1
                if isinstance(result, BackendError):
                    failed[job] = str(result)
                    consecutive += 1
                    if consecutive >= max_consecutive_failures:
                        raise BackendError(f"{consecutive} requests failed in a row; last: "
                                           f"{result}. Check the server, then rerun to resume")
                    continue
                consecutive = 0
                prompt, hint = sent.pop((job, state.attempts[job]))
                entry = _entry(job, keys[job], state.attempts[job], result,
                               class_names[job.class_id], prompt, style, context_length, hint)
                store.append(entry)
                if entry.status == "ok":
                    report.accepted += 1
                    bar.update(1)
                else:
                    report.rejected[entry.reason or "rejected"] += 1
                bar.set_postfix(rejected=sum(report.rejected.values()), failed=len(failed),
                                refresh=False)

        executor = ThreadPoolExecutor(max_workers=backend.concurrency,
                                      thread_name_prefix="claver-prompts")
        try:
            while state.pending and not stop.is_set():
                bar.n = len(state.winners)
                bar.refresh()
                queue = deque(_batches(state.pending, backend.batch_size))
                running: dict[Future, Sequence[Job]] = {}
                while queue or running:
                    # At most `concurrency` calls in flight, and their results are written
                    # before more are sent: nothing finished waits long unsaved.
                    while queue and len(running) < backend.concurrency and not stop.is_set():
                        batch = queue.popleft()
                        batch_requests = []
                        for job in batch:
                            completion, messages = requests[job]
                            # A job whose answer repeated another description (it has an
                            # accepted attempt but no winner) is asked for something else.
                            hint = (retry_hint(class_names[job.class_id], context_length)
                                    if job in state.collided else None)
                            if hint is not None:
                                completion, messages = _with_hint(completion, messages, hint)
                            sent[(job, state.attempts[job])] = (completion, hint)
                            batch_requests.append(Request(
                                completion, messages,
                                request_seed(params.seed, job.class_id, job.kind, job.sample,
                                             state.attempts[job])))
                        generated.update((job, state.attempts[job]) for job in batch)
                        running[executor.submit(backend.generate, batch_requests, params)] = batch
                    if not running:
                        break
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        handle(running.pop(future), future.result())  # crashes propagate
                state = _state(jobs, keys, store, max_attempts, set(failed))
                duplicates.update((k, owner) for k, owner in state.duplicates.items()
                                  if k in generated)
        except BaseException:
            stop.set()
            executor.shutdown(wait=False, cancel_futures=True)
            bar.close()
            raise
        executor.shutdown(wait=True)
        bar.n = len(state.winners)
        bar.close()
        records = [_description(job, state.winners[job]) for job in jobs if job in state.winners]
    if duplicates:
        report.rejected["duplicate"] = len(duplicates)
        report.accepted -= len(duplicates)
    report.shortened = sum(record.shortened for record in records)
    write_descriptions(records, out)
    report.written = len(records)
    report.failed = {_job_name(job, class_names): reason for job, reason in failed.items()}
    report.gave_up = [_job_name(job, class_names) for job in state.gave_up]
    found.update(duplicates)
    report.duplicates_within = sum(job.class_id == owner.class_id
                                   for (job, _), owner in found.items())
    report.duplicates_across = len(found) - report.duplicates_within
    report.dropped_duplicates = [
        f"{_job_name(job, class_names)} = {_job_name(state.collided[job], class_names)}"
        for job in state.gave_up if job in state.collided]
    covered = {(d.class_id, d.kind) for d in records}
    report.uncovered = [(c, k) for c in range(len(class_names)) for k in order
                        if (c, k) not in covered]
    report.elapsed = time.monotonic() - started
    return report


def _job_name(job: Job, class_names: Sequence[str]) -> str:
    return f"{class_names[job.class_id]}/{job.kind}/{job.sample}"


def _entry(job: Job, key: CacheKey, attempt: int, result: Generation, class_name: str,
           prompt: str, style: str, context_length: int, hint: str | None = None) -> CacheEntry:
    processed = process_output(result.text, action=class_name,
                               prompt=prompt if style == "completions" else None,
                               truncated=result.truncated, context_length=context_length)
    reason = processed.reason
    if reason is None and hint is not None and \
            dedup_key(hint.split(". ")[0]) in dedup_key(processed.text):
        reason = "echo"  # a server that repeats its prompt must not turn the hint into text
    return CacheEntry(*key, attempt=attempt,
                      status="ok" if reason is None else "rejected",
                      text=processed.text, reason=reason,
                      shortened=processed.shortened, class_name=class_name, raw=result.text)


def _description(job: Job, entry: CacheEntry) -> Description:
    return Description(entry.class_id, entry.class_name, entry.kind, entry.text,
                       sample=entry.sample, model=entry.model, prompt_hash=entry.prompt_hash,
                       attempt=entry.attempt, shortened=entry.shortened, source="generated")


class _NoBar:
    n = 0

    def update(self, n: int = 1) -> None: ...
    def refresh(self) -> None: ...
    def close(self) -> None: ...
    def set_postfix(self, **kwargs: object) -> None: ...


def _progress_bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="desc", desc="descriptions",
                dynamic_ncols=True, smoothing=0.1)
