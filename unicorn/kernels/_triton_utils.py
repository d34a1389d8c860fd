"""Small helpers shared by the Triton launchers (no kernels here)."""
from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # CPU installs without Triton still import the kernel modules for their torch references.
    HAS_TRITON = False

    class _Missing:
        """Stands in for ``triton`` / ``triton.language``: ``jit`` keeps the function, other names are opaque."""

        def jit(self, fn=None, **kwargs):
            return fn if fn is not None else (lambda f: f)

        def __getattr__(self, name):
            return object

    triton = tl = _Missing()


def triton_interpreting() -> bool:
    """True when Triton runs kernels through its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def next_power_of_2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def dot_dtype(dtype: torch.dtype):
    """The dtype attention tiles are cast to before ``tl.dot``.

    fp16/bf16 stay on tensor cores on a GPU; the interpreter multiplies bf16 bit patterns as integers
    (triton-lang/triton#11584), so there everything is upcast to fp32.
    """
    if triton_interpreting() or dtype == torch.float32:
        return tl.float32
    return {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}.get(dtype, tl.bfloat16)
