"""Thin dispatchers: the Triton kernel for CUDA tensors when Triton is importable, the torch reference otherwise.

An engine's ``kernels`` choice reaches every dispatcher through :func:`kernel_choice`, which its model runner
enters around each forward: under "torch" (or "cpu", which has no elementwise kernels) the references run on
CUDA tensors too.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch

from unicorn.kernels._triton_utils import HAS_TRITON

KERNEL_CHOICES = ("auto", "triton", "cpu", "torch")
_CHOICE: contextvars.ContextVar[str] = contextvars.ContextVar("unicorn_kernels", default="auto")


@contextlib.contextmanager
def kernel_choice(choice: str) -> Iterator[None]:
    """Within the block the dispatchers follow ``choice``: "auto" / "triton" run the Triton kernels on CUDA
    tensors, "torch" / "cpu" always run the torch references. Outside any block the choice is "auto"."""
    if choice not in KERNEL_CHOICES:
        raise ValueError(f"kernels must be one of {', '.join(KERNEL_CHOICES)}, got {choice!r}")
    token = _CHOICE.set(choice)
    try:
        yield
    finally:
        _CHOICE.reset(token)


def current_kernel_choice() -> str:
    return _CHOICE.get()


def triton_available() -> bool:
    return HAS_TRITON


def _triton_can_run(tensor: torch.Tensor) -> bool:
    return tensor.is_cuda and triton_available()


def use_triton(tensor: torch.Tensor) -> bool:
    # The launchers have no autograd: training (grad enabled on a tensor that needs it) keeps the torch path.
    needs_grad = torch.is_grad_enabled() and tensor.requires_grad
    return _CHOICE.get() in ("auto", "triton") and _triton_can_run(tensor) and not needs_grad


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, residual: torch.Tensor | None = None):
    """See :func:`unicorn.kernels.rmsnorm.rms_norm`."""
    if use_triton(x):
        from unicorn.kernels.rmsnorm import rms_norm as fn
    elif residual is None and x.dim() >= 1 and x.stride(-1) == 1 and _cpu_fused_usable(x, weight):
        from unicorn.kernels.cpu_fused import rms_norm as fused  # one pass in C++ (fp32 CPU inference)

        return fused(x, weight, eps)
    else:
        from unicorn.kernels.rmsnorm import rms_norm_ref as fn
    return fn(x, weight, eps, residual)


def apply_rope(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0,
               inv_freq: torch.Tensor | None = None):
    """See :func:`unicorn.kernels.rope.apply_rope` (rotates q and k in place, returns them)."""
    if use_triton(q):
        from unicorn.kernels.rope import apply_rope as fn
    else:
        from unicorn.kernels.rope import apply_rope_ref as fn
    return fn(q, k, positions, theta, inv_freq)


def _cpu_fused_usable(*tensors: torch.Tensor) -> bool:
    from unicorn.kernels import cpu_fused

    return cpu_fused.usable(*tensors)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """See :func:`unicorn.kernels.swiglu.swiglu`: silu(gate) * up."""
    if use_triton(gate):
        from unicorn.kernels.swiglu import swiglu as fn
    else:
        from unicorn.kernels.swiglu import swiglu_ref as fn
    return fn(gate, up)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """See :func:`unicorn.kernels.swiglu.silu_and_mul`."""
    if use_triton(x):
        from unicorn.kernels.swiglu import silu_and_mul as fn
    else:
        from unicorn.kernels.swiglu import silu_and_mul_ref as fn
    return fn(x)
