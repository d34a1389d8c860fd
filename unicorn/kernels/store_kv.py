"""Writes the step's new K/V rows into the paged cache at their slots (vLLM's reshape_and_cache).

Cache layout per layer: [num_blocks, block_size, num_kv_heads, head_dim], contiguous, so slot ``s`` is the
flat row ``s`` of a [num_blocks * block_size, num_kv_heads * head_dim] view. A negative slot is padding and is
skipped. An fp8 (e4m3) cache stores ``x / scale`` and readers multiply by ``scale`` (one scale per layer); choose the
scale so that ``|x / scale| <= 448`` (the GPU conversion saturates, torch's gives NaN past that).
"""
from __future__ import annotations

import torch

from unicorn.attention.metadata import FP8_DTYPES
from unicorn.attention.torch_ref import store_kv_tensors_ref as store_kv_ref  # the reference, beside its kernel
from unicorn.kernels._triton_utils import next_power_of_2, tl, triton

__all__ = ["FP8_DTYPES", "store_kv", "store_kv_ref"]


@triton.jit
def _store_kv_kernel(
    key_ptr, value_ptr, key_cache_ptr, value_cache_ptr, slot_ptr,
    key_stride_t, key_stride_h, value_stride_t, value_stride_h,
    k_scale, v_scale,
    NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
    QUANTIZE: tl.constexpr,
):
    token = tl.program_id(0)
    slot = tl.load(slot_ptr + token).to(tl.int64)
    if slot >= 0:
        heads = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
        dims = tl.arange(0, BLOCK_D)
        mask = (heads[:, None] < NUM_HEADS) & (dims[None, :] < HEAD_DIM)
        src_k = key_ptr + token.to(tl.int64) * key_stride_t + heads[:, None] * key_stride_h + dims[None, :]
        src_v = value_ptr + token.to(tl.int64) * value_stride_t + heads[:, None] * value_stride_h + dims[None, :]
        dst = slot * (NUM_HEADS * HEAD_DIM) + heads[:, None] * HEAD_DIM + dims[None, :]
        k = tl.load(src_k, mask=mask)
        v = tl.load(src_v, mask=mask)
        if QUANTIZE:
            k = k.to(tl.float32) / k_scale
            v = v.to(tl.float32) / v_scale
        tl.store(key_cache_ptr + dst, k.to(key_cache_ptr.dtype.element_ty), mask=mask)
        tl.store(value_cache_ptr + dst, v.to(value_cache_ptr.dtype.element_ty), mask=mask)


def store_kv(
    key: torch.Tensor,
    value: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    k_scale: float = 1.0,
    v_scale: float = 1.0,
) -> None:
    """key, value: [T, Hkv, D]; caches: [num_blocks, block_size, Hkv, D] contiguous; slot_mapping: [T] int."""
    num_tokens, num_heads, head_dim = key.shape
    assert value.shape == key.shape and key_cache.shape == value_cache.shape
    assert key_cache.shape[2:] == (num_heads, head_dim), (key_cache.shape, key.shape)
    assert key_cache.is_contiguous() and value_cache.is_contiguous()
    assert key.stride(-1) == 1 and value.stride(-1) == 1
    if num_tokens == 0:
        return
    block_d = next_power_of_2(head_dim)
    block_h = max(1, min(next_power_of_2(num_heads), 4096 // block_d))
    grid = (num_tokens, triton.cdiv(num_heads, block_h))
    _store_kv_kernel[grid](
        key, value, key_cache, value_cache, slot_mapping,
        key.stride(0), key.stride(1), value.stride(0), value.stride(1),
        float(k_scale), float(v_scale),
        NUM_HEADS=num_heads, HEAD_DIM=head_dim, BLOCK_H=block_h, BLOCK_D=block_d,
        QUANTIZE=key_cache.dtype in FP8_DTYPES,
    )
