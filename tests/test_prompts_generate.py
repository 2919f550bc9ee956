"""Generation driver: cache, resume after a crash (in process and SIGKILL), regeneration."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from claver.cli import main
from claver.prompts.backends import BackendError, FatalBackendError, Generation, SamplingParams
from claver.prompts.cache import CacheError, GenerationCache
from claver.prompts.fewshot import PromptSpec
from claver.prompts.formats import read_descriptions
from claver.prompts.generate import default_cache_path, generate_descriptions
from claver.text.tokenizer import count_tokens

NAMES = ["abseiling", "air drumming", "bowling", "juggling"]
TESTS = Path(__file__).resolve().parent
WORDS = ("arms legs hands feet rope wall drum stick ball pins lane knees hips torso rhythm "
         "steady quick slow swing step lift turn push pull grip").split()


class FakeBackend:
    """Deterministic per request: the answer depends only on the prompt and the seed.

    ``script(action, seed)`` may return a text to use instead (refusals, duplicates ...).
    """

    model_name = "fake-llm"
    style = "chat"

    def __init__(self, batch_size: int = 1, concurrency: int = 1, script=None) -> None:
        self.batch_size, self.concurrency, self.script = batch_size, concurrency, script
        self.calls = 0
        self.lock = threading.Lock()

    def answer(self, request) -> str:
        action = request.messages[-1]["content"].split("\n")[0].removeprefix("Action: ")
        kind = request.messages[0]["content"][:40]
        if self.script is not None:
            scripted = self.script(action, request.seed)
            if scripted is not None:
                return scripted
        digest = hashlib.sha256(f"{kind}|{action}|{request.seed}".encode()).digest()
        words = " ".join(WORDS[b % len(WORDS)] for b in digest[:8])
        return f"Sure! Here is one:\n\n{action.capitalize()} moves {words}.\n\nAction: next"

    def generate(self, requests, params):
        with self.lock:
            self.calls += 1
            self.on_call(self.calls)
        return [Generation(self.answer(r)) for r in requests]

    def on_call(self, number: int) -> None:
        pass


class CrashingBackend(FakeBackend):
    def __init__(self, after: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.after = after

    def on_call(self, number: int) -> None:
        if number >= self.after:
            raise RuntimeError("simulated crash")


class KillingBackend(FakeBackend):
    """Kills its own process with SIGKILL at call ``after`` (no cleanup can run)."""

    def __init__(self, after: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.after = after

    def on_call(self, number: int) -> None:
        if number >= self.after:
            os.kill(os.getpid(), signal.SIGKILL)


def run(tmp: Path, backend, **kwargs):
    options = {"samples": 3, "progress": False}
    options.update(kwargs)
    return generate_descriptions(NAMES, tmp / "out.jsonl", backend, **options)


@pytest.fixture
def reference(tmp_path) -> bytes:
    """The output of an uninterrupted run."""
    ref = tmp_path / "reference"
    report = run(ref, FakeBackend())
    assert report.ok and report.written == len(NAMES) * 4 * 3
    return (ref / "out.jsonl").read_bytes()


def test_uninterrupted_run_writes_clean_records_in_job_order(tmp_path, reference):
    records = read_descriptions(tmp_path / "reference" / "out.jsonl")
    kinds = ["decomposition", "body", "synonyms", "scene"]
    assert [(r.class_id, r.kind, r.sample) for r in records] == [
        (c, k, s) for c in range(len(NAMES)) for k in kinds for s in range(3)]
    for r in records:
        assert r.text.startswith(NAMES[r.class_id].capitalize() + " moves ")
        assert "Sure" not in r.text and "Action" not in r.text and "\n" not in r.text
        assert r.model == "fake-llm" and len(r.prompt_hash) == 16 and r.source == "generated"
    cache = default_cache_path(tmp_path / "reference" / "out.jsonl")
    assert cache.name == "out.cache.jsonl" and len(cache.read_text().splitlines()) == 48


@pytest.mark.parametrize("concurrency,batch", [(3, 1), (2, 5)])
def test_output_does_not_depend_on_completion_order(tmp_path, reference, concurrency, batch):
    report = run(tmp_path, FakeBackend(batch_size=batch, concurrency=concurrency))
    assert report.ok and (tmp_path / "out.jsonl").read_bytes() == reference


def test_resume_after_crash_gives_the_same_file(tmp_path, reference):
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path, CrashingBackend(after=20, concurrency=3))
    assert not (tmp_path / "out.jsonl").exists()
    cached = len(default_cache_path(tmp_path / "out.jsonl").read_text().splitlines())
    assert 0 < cached < 48
    backend = FakeBackend()
    report = run(tmp_path, backend)
    assert report.cached == cached and report.requests == 48 - cached
    assert (tmp_path / "out.jsonl").read_bytes() == reference


def test_resume_after_sigkill_gives_the_same_file(tmp_path, reference):
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "from pathlib import Path\n"
        "from test_prompts_generate import KillingBackend, run\n"
        f"run(Path({str(tmp_path)!r}), KillingBackend(after=17, concurrency=2))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    cache = default_cache_path(tmp_path / "out.jsonl")
    cached = len(cache.read_text().splitlines())
    assert 14 <= cached <= 16 and not (tmp_path / "out.jsonl").exists()
    with cache.open("ab") as f:  # as if killed in the middle of writing a record
        f.write(b'{"class_id": 3, "kind": "bo')
    with pytest.warns(UserWarning, match="incomplete last record"):
        report = run(tmp_path, FakeBackend())
    assert report.cached == cached
    assert (tmp_path / "out.jsonl").read_bytes() == reference


def test_rejected_outputs_are_regenerated_and_reported(tmp_path):
    def script(action, seed):
        if action == "bowling" and seed % 3 == 0:
            return "I'm sorry, but I cannot help with that request."
        if action == "juggling" and seed % 2 == 0:
            return "Hands toss balls in a steady loop."  # the same text again and again
        return None

    report = run(tmp_path, FakeBackend(script=script), samples=4, max_attempts=12)
    records = read_descriptions(tmp_path / "out.jsonl")
    assert report.ok and len(records) == len(NAMES) * 4 * 4
    assert report.rejected["refusal"] > 0 and report.rejected["duplicate"] > 0
    texts = [r.text for r in records if r.class_id == 3]
    assert len(set(texts)) == len(texts)
    assert all("sorry" not in r.text for r in records)
    assert any(r.attempt > 0 for r in records)
    again = run(tmp_path, FakeBackend(script=script), samples=4, max_attempts=12)
    assert again.requests == 0 and read_descriptions(tmp_path / "out.jsonl") == records


def test_giving_up_is_bounded_and_reported(tmp_path):
    backend = FakeBackend(script=lambda action, seed: "" if action == "bowling" else None)
    report = run(tmp_path, backend, kinds=["body"], samples=2, max_attempts=3)
    assert not report.ok and report.uncovered == [(2, "body")]
    assert report.rejected["empty"] == 6 and len(report.gave_up) == 2
    assert report.written == 6
    assert "gave up" in report.summary() and "bowling/body/0" in report.summary()
    again = run(tmp_path, backend, kinds=["body"], samples=2, max_attempts=3)
    assert again.requests == 0  # attempts already used up are not repeated
    more = run(tmp_path, backend, kinds=["body"], samples=2, max_attempts=4)
    assert more.requests == 2


def test_long_outputs_are_shortened_to_77_tokens(tmp_path):
    long = ("The person grips the rope with both hands and leans back. " * 4 +
            "Then the feet push off the wall, the knees bend, and the body swings out, "
            "and the rope slides through the device while the climber descends slowly.")
    report = run(tmp_path, FakeBackend(script=lambda a, s: f"While {a}, {long}"),
                 kinds=["body"], samples=1)
    records = read_descriptions(tmp_path / "out.jsonl")
    assert report.shortened == len(NAMES) == len(records)
    assert all(count_tokens(r.text) <= 77 and r.shortened for r in records)


def test_failed_requests_are_reported_and_retried_on_rerun(tmp_path):
    class Flaky(FakeBackend):
        def generate(self, requests, params):
            return [BackendError("HTTP 500 after retries") if "bowling" in r.messages[-1][
                "content"] else Generation(self.answer(r)) for r in requests]

    report = run(tmp_path, Flaky(), kinds=["scene"], samples=2)
    assert not report.ok and len(report.failed) == 2 and report.written == 6
    assert "rerun" in report.summary()
    report = run(tmp_path, FakeBackend(), kinds=["scene"], samples=2)
    assert report.ok and report.requests == 2 and report.written == 8


def test_a_dead_server_stops_the_run(tmp_path):
    class Dead(FakeBackend):
        def generate(self, requests, params):
            return [BackendError("connection refused") for _ in requests]

    with pytest.raises(BackendError, match="in a row"):
        run(tmp_path, Dead(), max_consecutive_failures=5)
    with pytest.raises(FatalBackendError):
        class Fatal(FakeBackend):
            def generate(self, requests, params):
                raise FatalBackendError("HTTP 404")

        run(tmp_path, Fatal())


def test_changed_prompts_or_settings_regenerate_more_samples_reuse(tmp_path):
    run(tmp_path, FakeBackend(), kinds=["body"], samples=2)
    more = run(tmp_path, FakeBackend(), kinds=["body"], samples=3)
    assert more.cached == 8 and more.requests == 4
    hotter = run(tmp_path, FakeBackend(), kinds=["body"], samples=3,
                 params=SamplingParams(temperature=1.1))
    assert hotter.cached == 0 and hotter.requests == 12
    specs = {"body": PromptSpec("body", "Describe the moving body parts.", ())}
    custom = run(tmp_path, FakeBackend(), kinds=["body"], samples=1, prompts=specs)
    assert custom.cached == 0


def test_prompts_file_adds_a_kind(tmp_path):
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text("gait:\n  template: 'Describe how a person walks while {action}.'\n")
    with pytest.raises(ValueError, match="unknown kinds"):
        run(tmp_path, FakeBackend(), kinds=["gait"])

    class Completions(FakeBackend):
        style = "completions"

        def answer(self, request):
            assert request.prompt.startswith("Describe how a person walks while ")
            return " Feet roll heel to toe while " + request.prompt.split("while ")[1]

    report = run(tmp_path, Completions(), kinds=["gait"], samples=1, prompts=prompts)
    records = read_descriptions(tmp_path / "out.jsonl")
    assert report.ok and len(records) == len(NAMES)
    assert [(r.kind, r.text) for r in records[:1]] == [
        ("gait", "Feet roll heel to toe while abseiling.")]


def test_cache_is_locked_and_corruption_is_named(tmp_path):
    path = tmp_path / "c.jsonl"
    with GenerationCache(path):
        with pytest.raises(CacheError, match="another run"):
            GenerationCache(path).open()
    path.write_text('{"not": "a record"}\n')
    with pytest.raises(CacheError, match=r"c.jsonl, line 1"):
        GenerationCache(path).open()


def test_ctrl_c_in_the_cli_saves_and_explains(tmp_path, monkeypatch, capsys):
    import claver.prompts.backends as backends

    labels = tmp_path / "labels.csv"
    labels.write_text("id,name\n0,bowling\n")

    def interrupted(self, requests, params):
        raise KeyboardInterrupt

    monkeypatch.setattr(backends.OpenAIBackend, "generate", interrupted)
    code = main(["prompts", "generate", "--labels", str(labels), "--out",
                 str(tmp_path / "o.jsonl"), "--base-url", "http://127.0.0.1:9/v1", "--model",
                 "m", "--no-progress"])
    assert code == 130
    assert "rerun the same command to resume" in capsys.readouterr().err
