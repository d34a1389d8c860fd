"""The "cpu" attention backend: the C++ paged decode kernel (csrc/cpu/) for decode steps, the torch
reference for prefill. Reference: unicorn.attention.torch_ref.paged_attention_ref."""
from __future__ import annotations

import torch

from unicorn.attention import AttentionMetadata, KVCache, register_backend
from unicorn.attention.torch_ref import paged_attention_ref, store_kv_ref
from unicorn.kernels import cpu_ops


def cpu_paged_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: KVCache, meta: AttentionMetadata, scale: float
) -> torch.Tensor:
    if not (meta.is_decode_only and meta.causal):
        return paged_attention_ref(q, k, v, cache, meta, scale)
    store_kv_ref(k, v, cache, meta.slot_mapping)
    return cpu_ops.load().paged_decode(q, cache.key, cache.value, meta.block_tables, meta.seq_lens, scale,
                                       cache.k_scale, cache.v_scale)


def register_cpu_backend() -> bool:
    """Registers "cpu" when the C++ op builds here; returns whether it did."""
    if not cpu_ops.available():
        return False
    register_backend("cpu", cpu_paged_attention)
    return True
