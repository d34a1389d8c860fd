"""The "cpu" attention backend: the C++ paged decode kernel (csrc/cpu/) for decode rows, also those of mixed steps,
the torch reference for the rest. Reference: unicorn.attention.torch_ref.paged_attention_ref."""
from __future__ import annotations

import dataclasses
import itertools

import torch

from unicorn.attention import AttentionMetadata, KVCache, register_backend
from unicorn.attention.torch_ref import paged_attention_ref, store_kv_ref
from unicorn.kernels import cpu_ops


def _decode(q: torch.Tensor, cache: KVCache, block_tables: torch.Tensor, seq_lens: torch.Tensor,
            scale: float) -> torch.Tensor:
    return cpu_ops.load().paged_decode(q, cache.key, cache.value, block_tables, seq_lens, scale,
                                       cache.k_scale, cache.v_scale)


def _subset(meta: AttentionMetadata, seqs: list[int], rows: torch.Tensor) -> AttentionMetadata:
    """The metadata of some of the step's sequences (``rows``: their packed query rows, in order)."""
    index = torch.tensor(seqs, device=meta.seq_lens.device)
    query_lens = [meta.query_lens_cpu[i] for i in seqs]
    seq_lens = [meta.seq_lens_cpu[i] for i in seqs]
    starts = torch.tensor(list(itertools.accumulate(query_lens, initial=0)), device=meta.query_start_loc.device)
    return dataclasses.replace(
        meta, slot_mapping=meta.slot_mapping.index_select(0, rows), query_start_loc=starts,
        seq_lens=meta.seq_lens.index_select(0, index), block_tables=meta.block_tables.index_select(0, index),
        query_lens_cpu=query_lens, seq_lens_cpu=seq_lens, max_query_len=max(query_lens), max_seq_len=max(seq_lens),
        spans=None if meta.spans is None else [meta.spans[i] for i in seqs], decode_seqs=None)


def cpu_paged_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: KVCache, meta: AttentionMetadata, scale: float
) -> torch.Tensor:
    if meta.is_decode_only and meta.causal:
        store_kv_ref(k, v, cache, meta.slot_mapping)
        return _decode(q, cache, meta.block_tables, meta.seq_lens, scale)
    decode = [i for i, d in enumerate(meta.decode_seqs or ()) if d] if meta.causal else []
    if not decode:
        return paged_attention_ref(q, k, v, cache, meta, scale)
    # A mixed step (decode rows beside prefill chunks). A decode row's query is at its context's last position, so
    # causal masking and bidirectional spans change nothing for it: it takes the decode kernel as in a decode-only
    # step (one kernel per row whatever shares the step, and no per-length loop of the reference).
    rest = [i for i in range(meta.num_seqs) if not meta.decode_seqs[i]]
    starts = meta.query_starts_cpu
    decode_rows = torch.tensor([starts[i] for i in decode], device=q.device)
    index = torch.tensor(decode, device=meta.seq_lens.device)
    store_kv_ref(k.index_select(0, decode_rows), v.index_select(0, decode_rows), cache,
                 meta.slot_mapping.index_select(0, decode_rows))
    out = torch.empty_like(q)
    out.index_copy_(0, decode_rows, _decode(q.index_select(0, decode_rows), cache,
                                            meta.block_tables.index_select(0, index),
                                            meta.seq_lens.index_select(0, index), scale).to(q.dtype))
    if rest:
        rest_rows = torch.tensor([r for i in rest for r in range(starts[i], starts[i + 1])], device=q.device)
        out.index_copy_(0, rest_rows, paged_attention_ref(
            q.index_select(0, rest_rows), k.index_select(0, rest_rows), v.index_select(0, rest_rows), cache,
            _subset(meta, rest, rest_rows), scale))
    return out


def register_cpu_backend() -> bool:
    """Registers "cpu" when the C++ op builds here; returns whether it did."""
    if not cpu_ops.available():
        return False
    register_backend("cpu", cpu_paged_attention)
    return True
