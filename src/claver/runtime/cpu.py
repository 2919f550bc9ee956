"""What the CPU does natively: bf16 matrix arithmetic (AVX512-BF16, AMX) and int8 (VNNI).

Read from ``/proc/cpuinfo`` (Linux); elsewhere every answer is False (the caller then keeps
fp32, which is always right).
"""

from __future__ import annotations

import functools
from pathlib import Path


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``lscpu``'s Flags), empty when unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")[:1 << 20]
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def native_bf16() -> bool:
    """True when the CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX-BF16)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def native_int8() -> bool:
    """True when the CPU has int8 dot-product instructions (AVX512-VNNI, AVX-VNNI, AMX)."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())


def describe() -> str:
    """One line: the reduced-precision features found, e.g. ``avx512_bf16 avx512_vnni``."""
    found = sorted({"avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni", "avx_vnni"}
                   & cpu_flags())
    return " ".join(found) or "none"
