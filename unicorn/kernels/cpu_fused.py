"""One-pass fp32 CPU versions of a decoder layer's elementwise chains (csrc/cpu/fused_elementwise.cpp): RMSNorm,
rotary embedding and SiLU-and-multiply, each of which torch runs as several full passes over the activation.

Used for inference only (no autograd), on float32 CPU tensors, when the C++ ops build here
(unicorn.kernels.cpu_ops.load_fused_elementwise); callers keep the torch references otherwise. The results
agree with the references bit for bit for rope and SiLU-and-multiply (the same products, no FMA contraction) and
to float rounding for RMSNorm (its sum of squares is added in another order).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from unicorn.kernels import cpu_ops


def _ops():
    return cpu_ops.load_fused_elementwise()


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the fused ops apply to these tensors: fp32 on the CPU, no autograd, kernels other than "torch"
    chosen (an engine built with kernels="torch" runs the references), and the ops built here."""
    from unicorn.kernels.dispatch import current_kernel_choice

    if current_kernel_choice() == "torch" or (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)):
        return False
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors) and _ops() is not None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x: [..., n] (last dim contiguous) -> weight * x / sqrt(mean(x^2) + eps), a new tensor of x's shape."""
    rows = x.reshape(-1, x.shape[-1]) if x.dim() != 2 else x
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    return _ops().rms_norm(rows, weight.contiguous(), float(eps)).view(x.shape)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [T, heads, head_dim] (head_dim contiguous); cos, sin: [T, head_dim] -> rotated, new [T, heads, head_dim]."""
    return _ops().rope(x, cos.contiguous(), sin.contiguous())


def silu_mul_(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """gate, up: [N, I] (rows contiguous): silu(gate) * up written into gate, which is returned."""
    return _ops().silu_mul_(gate, up)


def fused_elementwise_agree(module) -> bool:
    """Checks the built ops against the torch references on odd shapes (tail lanes included)."""
    from unicorn.kernels.rmsnorm import rms_norm_ref
    from unicorn.models.layers import apply_rope_ref

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, 2 * 67, generator=gen)[:, :67] * 3
    weight = 1 + torch.randn(67, generator=gen) * 0.1
    ok = torch.allclose(module.rms_norm(x, weight, 1e-6), rms_norm_ref(x, weight, 1e-6), rtol=1e-5, atol=1e-5)
    heads = torch.randn(5, 3, 2 * 36, generator=gen)[:, :, :36]
    cos, sin = torch.randn(5, 36, generator=gen), torch.randn(5, 36, generator=gen)
    ok &= torch.allclose(module.rope(heads, cos, sin), apply_rope_ref(heads, cos, sin), rtol=1e-5, atol=1e-5)
    gate_up = torch.randn(6, 2 * 37, generator=gen) * 4
    expected = F.silu(gate_up[:, :37]) * gate_up[:, 37:]
    out = gate_up.clone()
    ok &= torch.allclose(module.silu_mul_(out[:, :37], out[:, 37:]), expected, rtol=1e-5, atol=1e-5)
    return bool(ok)
