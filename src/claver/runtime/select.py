"""Which runtime and precision a :class:`claver.zeroshot.Predictor` uses, and exported models.

- :func:`choose_runtime`: precision "auto" is bf16 on a CPU that multiplies bf16 natively
  (AVX512-BF16/AMX) unless the runtime is "onnx", else fp32; runtime "auto" is torch for
  bf16, ONNX Runtime for fp32/int8 on a CPU when ``onnxruntime`` imports, else torch. An
  explicit choice that cannot work is a one-line error (a missing onnxruntime names the
  extra to install). Why bf16 is the CPU default where it is native: it is the fastest mode
  that keeps the fp32 answers (``benchmarks/predict.py``, docs/predict.md); int8 is faster
  still but does not keep them reliably, so it stays opt-in.
- :func:`load_exported`: the model of a ``claver export`` file, kept like loaded checkpoints.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RUNTIMES = ("auto", "torch", "onnx")


def default_precision(runtime: str, device: torch.device) -> str:
    """What precision "auto" means: bf16 for torch on a CPU with native bf16, else fp32."""
    from claver.runtime.cpu import native_bf16

    return "bf16" if device.type == "cpu" and runtime != "onnx" and native_bf16() else "fp32"


def choose_runtime(runtime: str, model: torch.nn.Module, device: torch.device,
                   precision: str) -> tuple[str, str]:
    """(runtime, precision) to use (see the module docstring); an explicit choice that
    cannot work is a one-line error."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {list(RUNTIMES)}, got {runtime!r}")
    exported = hasattr(model, "video_session")  # claver.runtime.onnx.OnnxModel
    if exported:
        if precision not in ("auto", "fp32", model.precision):
            raise ValueError(f"{model.source} was exported with precision {model.precision}; "
                             f"export again with --precision {precision}")
        return "onnx", model.precision
    if precision == "auto":
        precision = default_precision(runtime, device)
    onnx_ok = precision in ("fp32", "int8") and device.type == "cpu"
    if runtime == "auto":
        from claver.runtime.onnx import onnx_available

        runtime = "onnx" if onnx_ok and onnx_available() else "torch"
    if runtime == "onnx":
        from claver.runtime.onnx import import_onnxruntime

        import_onnxruntime()  # one line naming the extra when it is missing
        if not onnx_ok:
            raise ValueError(f"runtime 'onnx' runs fp32 or int8 on the CPU, got precision "
                             f"{precision!r} on {device}; use runtime='torch' for that")
    elif precision == "int8":
        raise ValueError("precision 'int8' needs runtime 'onnx' (pip install 'claver[onnx]')")
    return runtime, precision


def onnx_video(model: torch.nn.Module, precision: str, threads: int | None, *,
               strict: bool) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The ONNX Runtime video tower of a torch model; when export fails and ``strict`` is
    False (runtime "auto"): None with a warning (the caller then runs torch)."""
    from claver.runtime.onnx import video_encoder

    try:
        return video_encoder(model, precision=precision, threads=threads)
    except Exception as e:  # exporter/runtime errors have many types; auto must not fail
        if strict:
            raise
        warnings.warn(f"ONNX export of the video tower failed ({type(e).__name__}: "
                      f"{str(e).strip()[:200]}); running it with torch instead", stacklevel=3)
        return None


def is_onnx_file(model: Any) -> bool:
    """True for a path (str/PathLike) ending in .onnx (a ``claver export`` file)."""
    return isinstance(model, (str, os.PathLike)) and str(model).endswith(".onnx")


def load_exported(path: str | os.PathLike) -> torch.nn.Module:
    """The :class:`claver.runtime.onnx.OnnxModel` of a ``claver export`` file (the 2 most
    recent kept, like loaded checkpoints)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"ONNX model not found: {p} (write one with claver export)")
    return _load_exported(str(p.resolve()), p.stat().st_mtime_ns, torch.get_num_threads())


@functools.lru_cache(maxsize=2)
def _load_exported(path: str, mtime_ns: int, threads: int) -> torch.nn.Module:
    from claver.runtime.onnx import load_onnx_model

    return load_onnx_model(path, threads=threads)
