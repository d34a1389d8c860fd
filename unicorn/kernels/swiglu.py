"""SwiGLU activation: ``silu(gate) * up``, silu in fp32 and rounded to the input dtype like ``F.silu``."""
from __future__ import annotations

import torch

from unicorn.kernels._triton_utils import tl, triton
import torch.nn.functional as F


@triton.jit
def _swiglu_kernel(
    gate_ptr, up_ptr, out_ptr, gate_stride, up_stride, out_stride, N, BLOCK_N: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = cols < N
    g = tl.load(gate_ptr + row * gate_stride + cols, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(up_ptr + row * up_stride + cols, mask=mask, other=0.0).to(tl.float32)
    act = (g / (1.0 + tl.exp(-g))).to(out_ptr.dtype.element_ty).to(tl.float32)
    tl.store(out_ptr + row * out_stride + cols, (act * u).to(out_ptr.dtype.element_ty), mask=mask)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """gate, up: [..., I] (last dim contiguous) -> silu(gate) * up: [..., I]."""
    assert gate.shape == up.shape
    n = gate.shape[-1]
    g2, u2 = gate.reshape(-1, n), up.reshape(-1, n)
    assert g2.stride(-1) == 1 and u2.stride(-1) == 1
    out = torch.empty(g2.shape, dtype=gate.dtype, device=gate.device)
    block = min(2048, triton.next_power_of_2(n))
    if g2.shape[0]:
        _swiglu_kernel[(g2.shape[0], triton.cdiv(n, block))](
            g2, u2, out, g2.stride(0), u2.stride(0), out.stride(0), n, BLOCK_N=block,
        )
    return out.view(gate.shape)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x: [..., 2*I] holding [gate | up] -> [..., I]."""
    n = x.shape[-1] // 2
    return swiglu(x[..., :n], x[..., n:])


def swiglu_ref(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.silu(gate) * up


def silu_and_mul_ref(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[-1] // 2
    return F.silu(x[..., :n]) * x[..., n:]
