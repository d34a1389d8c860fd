"""Attention over a paged KV cache: split-K decode (flash-decoding) and varlen prefill / multi-query.

Cache per layer: [num_blocks, block_size, num_kv_heads, head_dim] (contiguous); a sequence's token ``p`` lives in
block ``block_tables[seq, p // block_size]`` at offset ``p % block_size``. Queries of a sequence are the *last*
``query_len`` positions of its ``seq_len`` context (causal masks by absolute position). An fp8 (e4m3) cache is
dequantised on load with one scale per layer (``x = cache * scale``).

* :func:`paged_decode` -- one query per sequence. Grid (seq, kv_head, partition): each program handles the
  ``Hq / Hkv`` query heads of one KV head (padded to 16 rows for ``tl.dot``), so a K/V tile is read once per
  group; long contexts are split into partitions whose partial (max, sum, acc) a second kernel reduces.
* :func:`paged_varlen` -- any number of queries per sequence (prefill over a cached prefix, several new tokens
  per step, or non-causal image blocks). Flash-attention style; grid (seq, query block, head); programs
  past a sequence's query length exit at once, so no host planning is needed.
"""
from __future__ import annotations

import torch

from unicorn.attention.metadata import FP8_DTYPES
from unicorn.kernels._triton_utils import dot_dtype, next_power_of_2, tl, triton

_LOG2E = 1.4426950408889634


@triton.jit
def _load_kv_tile(cache_ptr, table_ptr, pos, pos_mask, kv_head, dims, dim_mask, scale,
                  BLOCK_SIZE: tl.constexpr, NUM_KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
                  FP8: tl.constexpr, DOT_DTYPE: tl.constexpr):
    # pos: [BLOCK_N] context positions -> K or V tile [BLOCK_N, BLOCK_D] in DOT_DTYPE.
    block = tl.load(table_ptr + pos // BLOCK_SIZE, mask=pos_mask, other=0).to(tl.int64)
    row = block * BLOCK_SIZE + (pos % BLOCK_SIZE)
    offs = (row * NUM_KV_HEADS + kv_head) * HEAD_DIM
    tile = tl.load(cache_ptr + offs[:, None] + dims[None, :], mask=pos_mask[:, None] & dim_mask[None, :], other=0.0)
    if FP8:
        tile = tile.to(tl.float32) * scale
    return tile.to(DOT_DTYPE)


@triton.jit
def _paged_decode_kernel(
    q_ptr, key_cache_ptr, value_cache_ptr, block_tables_ptr, seq_lens_ptr,
    out_ptr, part_max_ptr, part_sum_ptr, part_acc_ptr,
    sm_scale, k_scale, v_scale,
    q_stride_t, q_stride_h, out_stride_t, out_stride_h, table_stride, num_parts,
    GROUP: tl.constexpr, BLOCK_G: tl.constexpr, NUM_KV_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr,
    PART_SIZE: tl.constexpr, SPLIT: tl.constexpr, FP8: tl.constexpr,
    DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):
    seq = tl.program_id(0).to(tl.int64)
    kv_head = tl.program_id(1)
    part = tl.program_id(2)
    seq_len = tl.load(seq_lens_ptr + seq).to(tl.int32)
    g = tl.arange(0, BLOCK_G)
    heads = kv_head * GROUP + g
    head_mask = g < GROUP
    dims = tl.arange(0, BLOCK_D)
    dim_mask = dims < HEAD_DIM
    q = tl.load(q_ptr + seq * q_stride_t + heads[:, None] * q_stride_h + dims[None, :],
                mask=head_mask[:, None] & dim_mask[None, :], other=0.0).to(DOT_DTYPE)
    qk_scale = sm_scale * 1.4426950408889634  # softmax in base 2
    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    table = block_tables_ptr + seq * table_stride
    start = part * PART_SIZE
    end = tl.minimum(start + PART_SIZE, seq_len)
    for n0 in range(start, end, BLOCK_N):
        pos = n0 + tl.arange(0, BLOCK_N)
        pos_mask = pos < end
        k = _load_kv_tile(key_cache_ptr, table, pos, pos_mask, kv_head, dims, dim_mask, k_scale,
                          BLOCK_SIZE, NUM_KV_HEADS, HEAD_DIM, FP8, DOT_DTYPE)
        v = _load_kv_tile(value_cache_ptr, table, pos, pos_mask, kv_head, dims, dim_mask, v_scale,
                          BLOCK_SIZE, NUM_KV_HEADS, HEAD_DIM, FP8, DOT_DTYPE)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        s = tl.where(pos_mask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(DOT_DTYPE), v, input_precision=PRECISION)
        m_i = m_new
    out_mask = head_mask[:, None] & dim_mask[None, :]
    if SPLIT:
        # Partial results of this partition; an empty partition leaves (-inf, 0, 0).
        stat = (seq * (NUM_KV_HEADS * GROUP) + heads) * num_parts + part
        tl.store(part_max_ptr + stat, m_i, mask=head_mask)
        tl.store(part_sum_ptr + stat, l_i, mask=head_mask)
        tl.store(part_acc_ptr + stat[:, None] * HEAD_DIM + dims[None, :], acc, mask=out_mask)
    else:
        out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
        tl.store(out_ptr + seq * out_stride_t + heads[:, None] * out_stride_h + dims[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=out_mask)


@triton.jit
def _paged_decode_reduce_kernel(
    part_max_ptr, part_sum_ptr, part_acc_ptr, out_ptr, seq_lens_ptr,
    out_stride_t, out_stride_h, num_parts,
    NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_P: tl.constexpr,
    PART_SIZE: tl.constexpr,
):
    seq = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    seq_len = tl.load(seq_lens_ptr + seq)
    used = tl.cdiv(seq_len, PART_SIZE)
    parts = tl.arange(0, BLOCK_P)
    part_mask = parts < used
    dims = tl.arange(0, BLOCK_D)
    dim_mask = dims < HEAD_DIM
    stat = (seq * NUM_HEADS + head) * num_parts + parts
    m = tl.load(part_max_ptr + stat, mask=part_mask, other=float("-inf"))
    l = tl.load(part_sum_ptr + stat, mask=part_mask, other=0.0)
    acc = tl.load(part_acc_ptr + stat[:, None] * HEAD_DIM + dims[None, :],
                  mask=part_mask[:, None] & dim_mask[None, :], other=0.0)
    m_all = tl.max(m, axis=0)
    w = tl.where(part_mask, tl.exp2(m - m_all), 0.0)
    total = tl.sum(l * w, axis=0)
    out = tl.sum(acc * w[:, None], axis=0) / total
    tl.store(out_ptr + seq * out_stride_t + head * out_stride_h + dims, out.to(out_ptr.dtype.element_ty),
             mask=dim_mask)


@triton.jit
def _paged_varlen_kernel(
    q_ptr, key_cache_ptr, value_cache_ptr, block_tables_ptr, query_start_ptr, seq_lens_ptr, out_ptr,
    sm_scale, k_scale, v_scale,
    q_stride_t, q_stride_h, out_stride_t, out_stride_h, table_stride,
    GROUP: tl.constexpr, NUM_KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, FP8: tl.constexpr, DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):
    seq = tl.program_id(0).to(tl.int64)
    q_block = tl.program_id(1)
    head = tl.program_id(2)
    kv_head = head // GROUP
    q_start = tl.load(query_start_ptr + seq).to(tl.int64)
    q_len = (tl.load(query_start_ptr + seq + 1) - q_start).to(tl.int32)
    if q_block * BLOCK_M < q_len:
        seq_len = tl.load(seq_lens_ptr + seq).to(tl.int32)
        prefix = seq_len - q_len
        rows = q_block * BLOCK_M + tl.arange(0, BLOCK_M)
        row_mask = rows < q_len
        q_pos = prefix + rows
        dims = tl.arange(0, BLOCK_D)
        dim_mask = dims < HEAD_DIM
        tok = q_start + rows
        q = tl.load(q_ptr + tok[:, None] * q_stride_t + head * q_stride_h + dims[None, :],
                    mask=row_mask[:, None] & dim_mask[None, :], other=0.0).to(DOT_DTYPE)
        qk_scale = sm_scale * 1.4426950408889634
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        table = block_tables_ptr + seq * table_stride
        if CAUSAL:
            end = tl.minimum(seq_len, prefix + (q_block + 1) * BLOCK_M)
        else:
            end = seq_len
        for n0 in range(0, end, BLOCK_N):
            pos = n0 + tl.arange(0, BLOCK_N)
            pos_mask = pos < end
            k = _load_kv_tile(key_cache_ptr, table, pos, pos_mask, kv_head, dims, dim_mask, k_scale,
                              BLOCK_SIZE, NUM_KV_HEADS, HEAD_DIM, FP8, DOT_DTYPE)
            v = _load_kv_tile(value_cache_ptr, table, pos, pos_mask, kv_head, dims, dim_mask, v_scale,
                              BLOCK_SIZE, NUM_KV_HEADS, HEAD_DIM, FP8, DOT_DTYPE)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
            allowed = pos_mask[None, :]
            if CAUSAL:
                allowed = allowed & (pos[None, :] <= q_pos[:, None])
            s = tl.where(allowed, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp2(m_i - m_safe)
            p = tl.exp2(s - m_safe[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            acc = acc * alpha[:, None] + tl.dot(p.to(DOT_DTYPE), v, input_precision=PRECISION)
            m_i = m_new
        out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
        tl.store(out_ptr + tok[:, None] * out_stride_t + head * out_stride_h + dims[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=row_mask[:, None] & dim_mask[None, :])


def _common(q: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor):
    num_heads, head_dim = q.shape[1], q.shape[2]
    _, block_size, num_kv_heads, cache_dim = key_cache.shape
    assert cache_dim == head_dim and num_heads % num_kv_heads == 0, (q.shape, key_cache.shape)
    assert key_cache.is_contiguous() and value_cache.is_contiguous() and q.stride(-1) == 1
    fp8 = key_cache.dtype in FP8_DTYPES
    dot = dot_dtype(q.dtype)
    precision = "ieee" if dot == tl.float32 else "tf32"
    return num_heads, head_dim, block_size, num_kv_heads, fp8, dot, precision


def paged_decode(
    q: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    max_seq_len: int,
    k_scale: float = 1.0,
    v_scale: float = 1.0,
    partition_size: int = 512,
    split: bool | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Decode attention, one query per sequence.

    q: [S, Hq, D]; caches: [num_blocks, block_size, Hkv, D]; block_tables: [S, max_blocks] int;
    seq_lens: [S] int (context length including this token); max_seq_len: host int (plans the partitions).
    ``split=None`` picks split-K when the context is long and the grid is small (vLLM's rule). Returns [S, Hq, D].
    """
    num_heads, head_dim, block_size, num_kv_heads, fp8, dot, precision = _common(q, key_cache, value_cache)
    num_seqs = q.shape[0]
    out = torch.empty_like(q) if out is None else out
    if num_seqs == 0:
        return out
    group = num_heads // num_kv_heads
    block_n = 64 if block_size >= 64 else max(16, block_size)
    block_n = min(block_n, max(16, next_power_of_2(max_seq_len)))
    partition_size = max(block_n, partition_size // block_n * block_n)
    num_parts = triton.cdiv(max(1, max_seq_len), partition_size)
    if split is None:
        split = num_parts > 1 and (max_seq_len > 8192 or num_seqs * num_heads <= 512)
    if not split:
        num_parts, partition_size = 1, max(partition_size, triton.cdiv(max(1, max_seq_len), block_n) * block_n)
    block_d = next_power_of_2(head_dim)
    meta = dict(
        GROUP=group, BLOCK_G=max(16, next_power_of_2(group)), NUM_KV_HEADS=num_kv_heads, HEAD_DIM=head_dim,
        BLOCK_D=block_d, BLOCK_SIZE=block_size, BLOCK_N=block_n, PART_SIZE=partition_size, SPLIT=split,
        FP8=fp8, DOT_DTYPE=dot, PRECISION=precision,
    )
    if split:
        part_max = torch.empty(num_seqs, num_heads, num_parts, dtype=torch.float32, device=q.device)
        part_sum = torch.empty_like(part_max)
        part_acc = torch.empty(num_seqs, num_heads, num_parts, head_dim, dtype=torch.float32, device=q.device)
    else:
        part_max = part_sum = part_acc = out  # unused
    _paged_decode_kernel[(num_seqs, num_kv_heads, num_parts)](
        q, key_cache, value_cache, block_tables, seq_lens, out, part_max, part_sum, part_acc,
        float(scale), float(k_scale), float(v_scale),
        q.stride(0), q.stride(1), out.stride(0), out.stride(1), block_tables.stride(0), num_parts,
        **meta, num_warps=4,
    )
    if split:
        _paged_decode_reduce_kernel[(num_seqs, num_heads)](
            part_max, part_sum, part_acc, out, seq_lens, out.stride(0), out.stride(1), num_parts,
            NUM_HEADS=num_heads, HEAD_DIM=head_dim, BLOCK_D=block_d, BLOCK_P=next_power_of_2(num_parts),
            PART_SIZE=partition_size,
        )
    return out


def paged_varlen(
    q: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_tables: torch.Tensor,
    query_start_loc: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    max_query_len: int,
    causal: bool = True,
    k_scale: float = 1.0,
    v_scale: float = 1.0,
    block_m: int | None = None,
    block_n: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Varlen attention of packed queries over their paged contexts (prefill, multi-query, non-causal).

    q: [T, Hq, D] packed; query_start_loc: [S+1]; seq_lens: [S]; max_query_len: host int. Returns [T, Hq, D].
    """
    num_heads, head_dim, block_size, num_kv_heads, fp8, dot, precision = _common(q, key_cache, value_cache)
    num_seqs = seq_lens.shape[0]
    out = torch.empty_like(q) if out is None else out
    if q.shape[0] == 0:
        return out
    block_d = next_power_of_2(head_dim)
    if block_m is None:
        block_m = 16 if max_query_len <= 16 else (64 if block_d <= 128 else 32)
    if block_n is None:
        block_n = 32 if (block_d > 128 or max_query_len <= 16) else 64
    grid = (num_seqs, triton.cdiv(max_query_len, block_m), num_heads)
    _paged_varlen_kernel[grid](
        q, key_cache, value_cache, block_tables, query_start_loc, seq_lens, out,
        float(scale), float(k_scale), float(v_scale),
        q.stride(0), q.stride(1), out.stride(0), out.stride(1), block_tables.stride(0),
        GROUP=num_heads // num_kv_heads, NUM_KV_HEADS=num_kv_heads, HEAD_DIM=head_dim, BLOCK_D=block_d,
        BLOCK_SIZE=block_size, BLOCK_M=block_m, BLOCK_N=block_n, CAUSAL=bool(causal), FP8=fp8,
        DOT_DTYPE=dot, PRECISION=precision, num_warps=4 if block_m <= 32 else 8,
    )
    return out


def dequantize_cache_ref(cache: torch.Tensor, scale: float, dtype: torch.dtype) -> torch.Tensor:
    """An fp8 cache as ``dtype`` values (``cache * scale``); other caches unchanged."""
    if cache.dtype in FP8_DTYPES:
        return (cache.float() * scale).to(dtype)
    return cache


def paged_attention_kernel_ref(
    q: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    query_lens: list[int],
    scale: float,
    causal: bool = True,
    k_scale: float = 1.0,
    v_scale: float = 1.0,
) -> torch.Tensor:
    """Torch reference for both kernels over an already-filled cache (fp32 math); returns [T, Hq, D] in q.dtype."""
    from unicorn.attention.metadata import KVCache
    from unicorn.attention.torch_ref import _attend, gather_kv_ref

    cache = KVCache(dequantize_cache_ref(key_cache, k_scale, torch.float32).float(),
                    dequantize_cache_ref(value_cache, v_scale, torch.float32).float())
    out = torch.empty_like(q)
    start = 0
    for i, q_len in enumerate(query_lens):
        key, value = gather_kv_ref(cache, block_tables[i], int(seq_lens[i]))
        out[start : start + q_len] = _attend(q[start : start + q_len].float(), key, value, scale, causal).to(q.dtype)
        start += q_len
    return out
