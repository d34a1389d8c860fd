"""The "triton" attention backend: Triton K/V store, then decode or varlen paged attention.

The engine calls :func:`register_triton_backends` at start-up when CUDA is available and names "triton" in its
:class:`~unicorn.attention.AttentionMetadata`. An fp8 cache's per-layer scales are read from optional
``k_scale`` / ``v_scale`` attributes of the :class:`~unicorn.attention.KVCache` (1.0 when absent).
"""
from __future__ import annotations

import torch

from unicorn.attention.backend import register_backend
from unicorn.attention.metadata import AttentionMetadata, KVCache


def triton_paged_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: KVCache, meta: AttentionMetadata, scale: float
) -> torch.Tensor:
    """Same contract as ``paged_attention_ref``: q [T, Hq, D], k/v [T, Hkv, D] -> [T, Hq, D] in q.dtype."""
    from unicorn.kernels.paged_attention import paged_decode, paged_varlen
    from unicorn.kernels.store_kv import store_kv

    if meta.spans is not None and meta.max_query_len > 1:
        # Bidirectional blocks next to causal rows (BAGEL): the varlen kernel masks one way for the whole step,
        # so such steps take the reference.
        from unicorn.attention.torch_ref import paged_attention_ref

        return paged_attention_ref(q, k, v, cache, meta, scale)

    k_scale = float(getattr(cache, "k_scale", 1.0))
    v_scale = float(getattr(cache, "v_scale", 1.0))
    store_kv(k, v, cache.key, cache.value, meta.slot_mapping, k_scale, v_scale)
    if meta.max_query_len == 1:
        # One query per sequence is the last position, so causal and non-causal coincide.
        return paged_decode(q, cache.key, cache.value, meta.block_tables, meta.seq_lens, scale,
                            meta.max_seq_len, k_scale, v_scale)
    return paged_varlen(q, cache.key, cache.value, meta.block_tables, meta.query_start_loc, meta.seq_lens, scale,
                        meta.max_query_len, meta.causal, k_scale, v_scale)


def register_triton_backends() -> bool:
    """Registers "triton" when Triton is importable; returns whether it did."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    register_backend("triton", triton_paged_attention)
    return True
