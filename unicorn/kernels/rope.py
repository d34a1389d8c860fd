"""Rotary position embedding (Llama "rotate_half" convention) applied to q and k in place.

cos/sin come from ``inv_freq = 1 / theta^(2i/d)`` (fp32, as HF computes it) times the token's position; the
rotation is done in fp32 and rounded once to the tensor's dtype.
"""
from __future__ import annotations

import torch

from unicorn.kernels._triton_utils import next_power_of_2, tl, triton


def rope_inv_freq(head_dim: int, theta: float = 10000.0, device: torch.device | str = "cpu") -> torch.Tensor:
    """[head_dim // 2] fp32, exactly HF's ``1 / base ** (arange(0, d, 2) / d)``."""
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    return 1.0 / (theta**exponent)


@triton.jit
def _rope_rotate(x_ptr, stride_t, stride_h, token, num_heads, cos, sin, HALF: tl.constexpr,
                 BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr):
    heads = tl.arange(0, BLOCK_H)
    dims = tl.arange(0, BLOCK_HALF)
    for h0 in range(0, num_heads, BLOCK_H):
        mask = ((h0 + heads)[:, None] < num_heads) & (dims[None, :] < HALF)
        ptr = x_ptr + token * stride_t + (h0 + heads)[:, None] * stride_h + dims[None, :]
        x1 = tl.load(ptr, mask=mask, other=0.0).to(tl.float32)
        x2 = tl.load(ptr + HALF, mask=mask, other=0.0).to(tl.float32)
        tl.store(ptr, (x1 * cos - x2 * sin).to(x_ptr.dtype.element_ty), mask=mask)
        tl.store(ptr + HALF, (x2 * cos + x1 * sin).to(x_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _rope_kernel(
    q_ptr, k_ptr, pos_ptr, inv_freq_ptr,
    q_stride_t, q_stride_h, k_stride_t, k_stride_h, num_q_heads, num_k_heads,
    HALF: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    dims = tl.arange(0, BLOCK_HALF)
    pos = tl.load(pos_ptr + token).to(tl.float32)
    inv_freq = tl.load(inv_freq_ptr + dims, mask=dims < HALF, other=0.0)
    freqs = (pos * inv_freq)[None, :]
    cos = tl.cos(freqs)
    sin = tl.sin(freqs)
    _rope_rotate(q_ptr, q_stride_t, q_stride_h, token, num_q_heads, cos, sin, HALF, BLOCK_H, BLOCK_HALF)
    _rope_rotate(k_ptr, k_stride_t, k_stride_h, token, num_k_heads, cos, sin, HALF, BLOCK_H, BLOCK_HALF)


def apply_rope(
    q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0,
    inv_freq: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """q: [T, Hq, D], k: [T, Hk, D] (last dim contiguous), positions: [T] int. Rotates in place; returns (q, k).

    ``inv_freq`` ([D // 2] fp32) overrides ``theta`` (e.g. for scaled RoPE variants).
    """
    num_tokens, num_q_heads, head_dim = q.shape
    assert k.shape[0] == num_tokens and k.shape[2] == head_dim and head_dim % 2 == 0
    assert q.stride(-1) == 1 and k.stride(-1) == 1
    if inv_freq is None:
        inv_freq = rope_inv_freq(head_dim, theta, q.device)
    half = head_dim // 2
    block_half = next_power_of_2(half)
    block_h = max(1, min(next_power_of_2(max(num_q_heads, k.shape[1])), 2048 // block_half))
    if num_tokens:
        _rope_kernel[(num_tokens,)](
            q, k, positions, inv_freq.float().contiguous(),
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), num_q_heads, k.shape[1],
            HALF=half, BLOCK_H=block_h, BLOCK_HALF=block_half,
        )
    return q, k


def apply_rope_ref(
    q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0,
    inv_freq: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch reference of :func:`apply_rope` (in place on q and k as well)."""
    head_dim = q.shape[-1]
    if inv_freq is None:
        inv_freq = rope_inv_freq(head_dim, theta, q.device)
    freqs = positions.float()[:, None] * inv_freq.float()[None, :]  # [T, D/2]
    cos, sin = freqs.cos()[:, None, :], freqs.sin()[:, None, :]
    for x in (q, k):
        x1, x2 = x[..., : head_dim // 2].float(), x[..., head_dim // 2 :].float()
        rotated = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
        x.copy_(rotated.to(x.dtype))
    return q, k
