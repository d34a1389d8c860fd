"""Fused residual add + RMSNorm, computed in fp32 like HF LlamaRMSNorm.

``out = weight * (h * rsqrt(mean(h^2) + eps)).to(dtype)`` with ``h = x.float()``; with a residual,
``x`` is first replaced by ``x + residual`` (rounded to x's dtype, as the decoder layer's add is), and that sum
is also returned as the new residual.
"""
from __future__ import annotations

import torch

from unicorn.kernels._triton_utils import next_power_of_2, tl, triton


@triton.jit
def _rms_norm_kernel(
    x_ptr, residual_ptr, weight_ptr, out_ptr, residual_out_ptr,
    x_stride, residual_stride, out_stride, residual_out_stride,
    N, eps,
    HAS_RESIDUAL: tl.constexpr, BLOCK_N: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    x = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        r = tl.load(residual_ptr + row * residual_stride + cols, mask=mask, other=0.0)
        x = (x.to(tl.float32) + r.to(tl.float32)).to(x_ptr.dtype.element_ty)
        tl.store(residual_out_ptr + row * residual_out_stride + cols, x, mask=mask)
    h = x.to(tl.float32)
    variance = tl.sum(h * h, axis=0) / N
    normed = (h * tl.rsqrt(variance + eps)).to(x_ptr.dtype.element_ty)
    w = tl.load(weight_ptr + cols, mask=mask, other=0.0)
    out = w.to(tl.float32) * normed.to(tl.float32)
    tl.store(out_ptr + row * out_stride + cols, out.to(out_ptr.dtype.element_ty), mask=mask)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, residual: torch.Tensor | None = None):
    """x: [..., N]; weight: [N]. Returns ``out`` or, with ``residual``, ``(out, x + residual)``; both in x.dtype."""
    shape = x.shape
    n = shape[-1]
    x2 = x.reshape(-1, n)
    assert x2.stride(-1) == 1 and weight.is_contiguous() and weight.shape == (n,)
    out = torch.empty_like(x2)
    if residual is not None:
        res2 = residual.reshape(-1, n)
        assert res2.stride(-1) == 1 and res2.shape == x2.shape
        res_out = torch.empty_like(x2)
    else:
        res2 = res_out = x2  # unused
    if x2.shape[0]:
        block = next_power_of_2(n)
        _rms_norm_kernel[(x2.shape[0],)](
            x2, res2, weight, out, res_out,
            x2.stride(0), res2.stride(0), out.stride(0), res_out.stride(0),
            n, float(eps),
            HAS_RESIDUAL=residual is not None, BLOCK_N=block, num_warps=min(16, max(1, block // 256)),
        )
    if residual is None:
        return out.view(shape)
    return out.view(shape), res_out.view(shape)


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, residual: torch.Tensor | None = None):
    """Torch reference of :func:`rms_norm` (LlamaRMSNorm with the decoder layer's residual add)."""
    if residual is not None:
        x = x + residual
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    out = (weight.to(x.dtype) * h.to(x.dtype)).to(x.dtype)
    return out if residual is None else (out, x)
