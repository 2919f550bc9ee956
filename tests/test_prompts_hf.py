"""The Hugging Face backend with a tiny random causal LM and a tokenizer built in the test."""

from __future__ import annotations

import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from claver.cli import main  # noqa: E402
from claver.prompts.backends import Request, SamplingParams  # noqa: E402
from claver.prompts.fewshot import DEFAULT_PROMPTS  # noqa: E402
from claver.prompts.formats import read_descriptions  # noqa: E402
from claver.prompts.generate import generate_descriptions  # noqa: E402
from claver.prompts.hf_backend import HFBackend  # noqa: E402
from claver.text.tokenizer import count_tokens  # noqa: E402

SPECIALS = ["[PAD]", "[UNK]", "[EOS]"]


def word_tokenizer():
    """A word-level tokenizer over the words of our prompts (no download)."""
    text = " ".join(spec.completion(name) for spec in DEFAULT_PROMPTS.values()
                    for name in ("bowling", "abseiling"))
    pre = tokenizers.pre_tokenizers.Whitespace()
    words = sorted({w for w, _ in pre.pre_tokenize_str(text)})
    vocab = {w: i for i, w in enumerate(SPECIALS + words)}
    model = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    model.pre_tokenizer = pre
    model.decoder = tokenizers.decoders.WordPiece()  # joins words with spaces
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=model, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")


def tiny_model(vocab_size: int):
    config = transformers.GPT2Config(vocab_size=vocab_size, n_positions=1024, n_embd=32,
                                     n_layer=1, n_head=2, bos_token_id=2, eos_token_id=2,
                                     pad_token_id=0)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).eval()


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def parts():
    tokenizer = word_tokenizer()
    return tiny_model(len(tokenizer)), tokenizer


def requests(n: int) -> list[Request]:
    spec = DEFAULT_PROMPTS["body"]
    names = ["bowling", "abseiling"] * n
    return [Request(spec.completion(names[i]) + " bowling" * i, tuple(spec.messages(names[i])),
                    seed=i) for i in range(n)]


def test_batched_generation_left_pads_and_returns_one_output_per_request(parts):
    model, tokenizer = parts
    backend = HFBackend(model, tokenizer, device="cpu", batch_size=4)
    assert backend.style == "completions" and tokenizer.padding_side == "left"
    params = SamplingParams(temperature=0.9, top_p=0.95, max_tokens=12, seed=0)
    out = backend.generate(requests(5), params)
    assert len(out) == 5 and all(isinstance(g.text, str) for g in out)
    assert any(g.text for g in out)
    # greedy decoding: a request gives the same text alone and inside a padded batch
    greedy = SamplingParams(temperature=0, max_tokens=6)
    batch = backend.generate(requests(3), greedy)
    alone = backend.generate(requests(3)[2:], greedy)
    assert batch[2] == alone[0]


def test_chat_template_is_used_when_present(parts):
    model, tokenizer = parts
    chat_tokenizer = word_tokenizer()
    chat_tokenizer.chat_template = (
        "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}Answer:{% endif %}")
    backend = HFBackend(model, chat_tokenizer, device="cpu", batch_size=2)
    assert backend.style == "chat"
    text = backend._chat_text(requests(1)[0].messages)
    assert text.startswith("Given the name") and text.endswith("Action: bowling\nAnswer:")
    assert len(backend.generate(requests(2), SamplingParams(max_tokens=4))) == 2
    with pytest.raises(ValueError, match="no chat template"):
        HFBackend(model, tokenizer, device="cpu", style="chat")


def test_generate_descriptions_with_the_hf_backend(parts, tmp_path):
    model, tokenizer = parts
    backend = HFBackend(model, tokenizer, device="cpu", batch_size=3, model_name="tiny-gpt2")
    names = ["bowling", "abseiling"]
    report = generate_descriptions(names, tmp_path / "d.jsonl", backend, kinds=["body", "scene"],
                                   samples=2, params=SamplingParams(max_tokens=90, seed=1),
                                   max_attempts=3, progress=False)
    records = read_descriptions(tmp_path / "d.jsonl")
    assert report.written == len(records) > 0
    assert report.requests == report.accepted + sum(report.rejected.values())
    for record in records:  # post-processed: one line, fits CLIP, no prompt echo
        assert record.model == "tiny-gpt2" and "\n" not in record.text
        assert count_tokens(record.text) <= 77 and not record.text.startswith("Action")


def test_loading_a_saved_model_folder_from_the_cli(parts, tmp_path):
    model, tokenizer = parts
    folder = tmp_path / "tiny-lm"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    backend = HFBackend(str(folder), device="cpu", dtype="float32", batch_size=2)
    assert backend.model_name == str(folder) and backend.model.dtype == torch.float32
    labels = tmp_path / "labels.csv"
    labels.write_text("id,name\n0,bowling\n")
    out = tmp_path / "d.jsonl"
    code = main(["prompts", "generate", "--labels", str(labels), "--out", str(out),
                 "--kinds", "synonyms", "--samples", "2", "--hf-model", str(folder),
                 "--device", "cpu", "--batch-size", "2", "--max-tokens", "20",
                 "--max-attempts", "2", "--no-progress"])
    assert code in (0, 1) and out.exists()
    with pytest.raises(ValueError, match="--dtype 'fp8'"):
        HFBackend(str(folder), device="cpu", dtype="fp8")


def test_missing_transformers_is_explained(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(RuntimeError, match=r"pip install 'claver\[hf\]'"):
        HFBackend("some/model", device="cpu")
