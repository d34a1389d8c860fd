"""C++ CPU ops (csrc/cpu/), built at first use with torch's JIT extension loader and cached on disk.

If no compiler is available the build fails once, quietly, and callers keep the torch reference.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

_SOURCES = [Path(__file__).resolve().parents[2] / "csrc" / "cpu" / name for name in ("paged_attention.cpp", "sampling.cpp")]


@functools.lru_cache(maxsize=1)
def load():
    """The compiled module (``paged_decode``, ``gumbel_argmax``), or None when it cannot be built here."""
    if os.environ.get("UNICORN_NO_CPU_OPS") or not all(source.exists() for source in _SOURCES):
        return None
    try:
        from torch.utils.cpp_extension import load_inline

        return load_inline(
            name="unicorn_cpu_ops",
            cpp_sources=[source.read_text() for source in _SOURCES],
            functions=["paged_decode", "gumbel_argmax"],
            extra_cflags=["-O3", "-march=native", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception:  # noqa: BLE001 - any build failure means "use the torch path"
        return None


def available() -> bool:
    return load() is not None
