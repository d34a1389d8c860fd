"""C++ CPU ops (csrc/cpu/), built at first use with torch's JIT extension loader and cached on disk.

If no compiler is available the build fails once, quietly, and callers keep the torch reference.
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

_SOURCES = [Path(__file__).resolve().parents[2] / "csrc" / "cpu" / name for name in ("paged_attention.cpp", "sampling.cpp")]


@functools.lru_cache(maxsize=1)
def load():
    """The compiled module (``paged_decode``, ``gumbel_argmax``, ``cfg_gumbel_argmax``), or None when it cannot be built here."""
    if os.environ.get("UNICORN_NO_CPU_OPS") or not all(source.exists() for source in _SOURCES):
        return None
    try:
        from torch.utils.cpp_extension import load_inline

        sources = [source.read_text() for source in _SOURCES]
        # The sources' hash in the name: checkouts with other versions of csrc/cpu (worktrees, branches) keep
        # separate builds instead of rebuilding over each other in torch's shared extensions directory.
        digest = hashlib.sha256("\0".join(sources).encode()).hexdigest()[:10]
        return load_inline(
            name=f"unicorn_cpu_ops_{digest}",
            cpp_sources=sources,
            functions=["paged_decode", "gumbel_argmax", "cfg_gumbel_argmax", "gumbel_fast_max_error"],
            # No FMA contraction: cfg_gumbel_argmax must round each CFG step as torch's separate ops do.
            extra_cflags=["-O3", "-march=native", "-fopenmp", "-ffp-contract=off"],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception:  # noqa: BLE001 - any build failure means "use the torch path"
        return None


def available() -> bool:
    return load() is not None
