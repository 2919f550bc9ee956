"""Shared fixtures: the independent oracles (OpenAI's CLIP code, loaded by file path), and a
private ``$CLAVER_CACHE`` for the whole run."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORACLE_DIR = ROOT / ".cache" / "oracle"
CLIP_WHEEL_SPEC = "clip-anytorch==2.6.0"


def _clip_wheel_dir() -> Path:
    """Download (once) and unzip OpenAI's CLIP code from the clip-anytorch wheel."""
    target = ORACLE_DIR / "clip_anytorch"
    if (target / "clip" / "model.py").is_file():
        return target
    ORACLE_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", CLIP_WHEEL_SPEC,
         "-d", str(ORACLE_DIR)],
        check=True,
    )
    wheels = sorted(ORACLE_DIR.glob("clip_anytorch-*.whl"))
    assert wheels, f"pip download {CLIP_WHEEL_SPEC} produced no wheel in {ORACLE_DIR}"
    with zipfile.ZipFile(wheels[-1]) as zf:
        zf.extractall(target)
    return target


def load_module_from_path(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def clip_oracle_dir() -> Path:
    return _clip_wheel_dir() / "clip"


@pytest.fixture(scope="session")
def oracle_tokenizer(clip_oracle_dir: Path):
    """OpenAI's SimpleTokenizer (its own vocab file), independent of our code."""
    mod = load_module_from_path("_oracle_simple_tokenizer", clip_oracle_dir / "simple_tokenizer.py")
    return mod.SimpleTokenizer(str(clip_oracle_dir / "bpe_simple_vocab_16e6.txt.gz"))


@pytest.fixture(scope="session")
def oracle_clip_model(clip_oracle_dir: Path) -> ModuleType:
    """OpenAI's model.py (CLIP, VisionTransformer, build_model)."""
    return load_module_from_path("_oracle_clip_model", clip_oracle_dir / "model.py")


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny-model tests: they gain nothing from more, and on
    a busy 2-core machine OpenMP threads spin-waiting for each other make every op many times
    slower. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def private_claver_cache(tmp_path_factory):
    """Tests never write into the user's ``~/.cache/claver`` (ONNX exports, demo data):
    ``$CLAVER_CACHE`` points at a folder of this run (subprocesses inherit it)."""
    before = os.environ.get("CLAVER_CACHE")
    os.environ["CLAVER_CACHE"] = str(tmp_path_factory.mktemp("claver-cache"))
    yield Path(os.environ["CLAVER_CACHE"])
    if before is None:
        os.environ.pop("CLAVER_CACHE", None)
    else:
        os.environ["CLAVER_CACHE"] = before
