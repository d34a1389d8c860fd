"""GroupNorm + SiLU of the VQ decoder: ``z = group_norm(x); z * sigmoid(z)``.

``group_norm_silu`` runs the C++ op (csrc/cpu/group_norm_silu.cpp: one pass per group, bit-identical to the
torch ops) on contiguous fp32 CPU tensors when it builds here and passes its load-time equality probe; otherwise,
and for other inputs, the torch reference.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from unicorn.kernels import cpu_ops


def group_norm_silu_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float) -> torch.Tensor:
    z = F.group_norm(x, groups, weight, bias, eps)
    return z * torch.sigmoid(z)


def can_fuse(x: torch.Tensor, groups: int) -> bool:
    """Whether ``group_norm_silu`` runs the C++ op on ``x``: built and probed equal here, contiguous fp32 on the
    CPU, groups of a multiple of 32 elements (no scalar tails, whose rounding depends on the compiler, in
    the moments or in torch's sigmoid, even split over 2 threads or AVX512)."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.is_contiguous() and x.dim() >= 2
            and x.shape[1] % groups == 0 and (x[0, 0].numel() * x.shape[1] // groups) % 32 == 0
            and cpu_ops.load_group_norm_silu() is not None)


def group_norm_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float) -> torch.Tensor:
    """x: [N, C, *] -> silu(group_norm(x)) [N, C, *]; no autograd through the C++ op (callers check)."""
    if not can_fuse(x, groups):
        return group_norm_silu_ref(x, weight, bias, groups, eps)
    return cpu_ops.load_group_norm_silu().group_norm_silu(x, weight, bias, groups, eps)
