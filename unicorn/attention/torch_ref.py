"""Plain torch paged attention: the reference for the Triton kernels and the CPU path of the engine."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from unicorn.attention.metadata import FP8_DTYPES, AttentionMetadata, KVCache


def store_kv_tensors_ref(
    key: torch.Tensor,
    value: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    k_scale: float = 1.0,
    v_scale: float = 1.0,
) -> None:
    """K/V rows [T, Hkv, D] -> cache tensors [num_blocks, block_size, Hkv, D] at their slots; a negative slot is
    padding; an fp8 cache stores ``x / scale``. The reference of unicorn.kernels.store_kv.store_kv."""
    num_blocks, block_size, num_heads, head_dim = key_cache.shape
    slots = slot_mapping
    # on a CPU the check is free and saves copying every row when nothing is padding (the engine's own steps)
    if slot_mapping.device.type != "cpu" or not bool((slot_mapping >= 0).all()):
        keep = slot_mapping >= 0
        slots = slot_mapping[keep]
        key, value = key[keep], value[keep]
    if key_cache.dtype in FP8_DTYPES:  # index_copy_ has no fp8 kernel on CPU: copy the bytes
        key = (key.float() / k_scale).to(key_cache.dtype).view(torch.uint8)
        value = (value.float() / v_scale).to(value_cache.dtype).view(torch.uint8)
        key_cache, value_cache = key_cache.view(torch.uint8), value_cache.view(torch.uint8)
    else:
        key, value = key.to(key_cache.dtype), value.to(value_cache.dtype)
    key_cache.view(-1, num_heads, head_dim).index_copy_(0, slots, key)
    value_cache.view(-1, num_heads, head_dim).index_copy_(0, slots, value)


def store_kv_ref(key: torch.Tensor, value: torch.Tensor, cache: KVCache, slot_mapping: torch.Tensor) -> None:
    """Writes new K/V rows ([T, Hkv, D]) into the paged cache at their slots (fp8 caches scaled)."""
    store_kv_tensors_ref(key, value, cache.key, cache.value, slot_mapping, cache.k_scale, cache.v_scale)


def _dequantized(x: torch.Tensor, scale: float, dtype: torch.dtype) -> torch.Tensor:
    return x.to(dtype) * scale if x.dtype in FP8_DTYPES else x


def gather_kv_ref(cache: KVCache, block_table: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One sequence's first ``seq_len`` cached K/V rows, contiguous: [seq_len, Hkv, D] each."""
    block_size = cache.block_size
    num_blocks = (seq_len + block_size - 1) // block_size
    table = block_table[:num_blocks]
    key = cache.key[table].flatten(0, 1)[:seq_len]
    value = cache.value[table].flatten(0, 1)[:seq_len]
    return _dequantized(key, cache.k_scale, torch.float32), _dequantized(value, cache.v_scale, torch.float32)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool,
            spans: list[tuple[int, int]] = ()) -> torch.Tensor:
    # q: [Lq, Hq, D]; k, v: [Lk, Hkv, D]; the queries are the last Lq positions of the Lk context. With causal
    # masking, a query also sees the keys of its own bidirectional span.
    num_q, num_heads, _ = q.shape
    num_k, num_kv_heads, _ = k.shape
    if num_kv_heads != num_heads:
        k = k.repeat_interleave(num_heads // num_kv_heads, dim=1)
        v = v.repeat_interleave(num_heads // num_kv_heads, dim=1)
    mask = None
    one_block = any(a <= num_k - num_q and b >= num_k for a, b in spans)  # every query in one block: no mask
    if causal and num_q > 1 and not one_block:
        q_pos = torch.arange(num_k - num_q, num_k, device=q.device)
        k_pos = torch.arange(num_k, device=q.device)
        mask = q_pos[:, None] >= k_pos[None, :]
        for a, b in spans:
            in_q = (q_pos >= a) & (q_pos < b)
            in_k = (k_pos >= a) & (k_pos < b)
            mask |= in_q[:, None] & in_k[None, :]
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1).to(k.dtype), k.transpose(0, 1), v.transpose(0, 1), attn_mask=mask, scale=scale
    )
    return out.transpose(0, 1)


def _decode_batched(q: torch.Tensor, cache: KVCache, meta: AttentionMetadata, scale: float) -> torch.Tensor:
    # One query per sequence: gather every sequence's blocks at once and mask past each length.
    num_seqs, num_heads, head_dim = q.shape
    block_size = cache.block_size
    max_blocks = (meta.max_seq_len + block_size - 1) // block_size
    tables = meta.block_tables[:, :max_blocks]
    num_kv_heads = cache.key.shape[2]
    key = cache.key[tables].view(num_seqs, max_blocks * block_size, num_kv_heads, head_dim)
    value = cache.value[tables].view(num_seqs, max_blocks * block_size, num_kv_heads, head_dim)
    key, value = _dequantized(key, cache.k_scale, q.dtype), _dequantized(value, cache.v_scale, q.dtype)
    if num_kv_heads != num_heads:
        key = key.repeat_interleave(num_heads // num_kv_heads, dim=2)
        value = value.repeat_interleave(num_heads // num_kv_heads, dim=2)
    valid = torch.arange(max_blocks * block_size, device=q.device)[None, :] < meta.seq_lens[:, None]
    out = F.scaled_dot_product_attention(
        q[:, :, None, :].to(key.dtype),
        key.transpose(1, 2),
        value.transpose(1, 2),
        attn_mask=valid[:, None, None, :],
        scale=scale,
    )
    return out[:, :, 0, :]


def _same_mask_groups(meta: AttentionMetadata) -> dict[tuple, list[int]]:
    # Sequences with equal query length, context length and spans get the same mask: one attention call each
    # group (the rows of a CFG step, equal-length prompts) instead of one per sequence.
    groups: dict[tuple, list[int]] = {}
    for i, (q_len, s_len) in enumerate(zip(meta.query_lens_cpu, meta.seq_lens_cpu)):
        spans = tuple(meta.spans[i]) if meta.spans is not None else ()
        groups.setdefault((q_len, s_len, spans), []).append(i)
    return groups


def _group_mask(q_len: int, s_len: int, spans: tuple, causal: bool, device) -> torch.Tensor | None:
    """The [q_len, s_len] mask of queries at the last q_len of s_len positions (True = attend), None for none."""
    one_block = any(a <= s_len - q_len and b >= s_len for a, b in spans)  # every query in one block
    if not causal or q_len == 1 or one_block:
        return None
    q_pos = torch.arange(s_len - q_len, s_len, device=device)
    k_pos = torch.arange(s_len, device=device)
    mask = q_pos[:, None] >= k_pos[None, :]
    for a, b in spans:
        mask |= ((q_pos >= a) & (q_pos < b))[:, None] & ((k_pos >= a) & (k_pos < b))[None, :]
    return mask


def _attend_group(q: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                  scale: float) -> torch.Tensor:
    # q: [B, Lq, Hq, D]; key, value: [B, Lk, Hkv, D]; mask: [Lq, Lk] or None -> [B, Lq, Hq, D]. The query heads
    # that share a KV head are folded into the query length (exact: softmax rows are independent), so K/V are
    # never repeated; 4-D inputs take torch's fused CPU kernel.
    batch, num_q, num_heads, head_dim = q.shape
    num_kv_heads = key.shape[2]
    group = num_heads // num_kv_heads
    folded = q.view(batch, num_q, num_kv_heads, group, head_dim).permute(0, 2, 3, 1, 4)
    folded = folded.reshape(batch, num_kv_heads, group * num_q, head_dim)
    if mask is not None and group > 1:
        mask = mask.repeat(group, 1)
    out = F.scaled_dot_product_attention(folded.to(key.dtype), key.transpose(1, 2), value.transpose(1, 2),
                                         attn_mask=mask, scale=scale)
    return out.view(batch, num_kv_heads, group, num_q, head_dim).permute(0, 3, 1, 2, 4).reshape(q.shape)


def paged_attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cache: KVCache,
    meta: AttentionMetadata,
    scale: float,
) -> torch.Tensor:
    """Stores the new K/V, then attends each sequence's queries to its whole cached context.

    q: [T, Hq, D]; k, v: [T, Hkv, D] (new tokens, packed); returns [T, Hq, D] in q's dtype.
    """
    store_kv_ref(k, v, cache, meta.slot_mapping)
    if meta.is_decode_only and meta.causal:  # a one-token query is the last position: spans change nothing
        return _decode_batched(q, cache, meta, scale).to(q.dtype)
    if meta.num_seqs == 1:
        key, value = gather_kv_ref(cache, meta.block_tables[0], meta.seq_lens_cpu[0])
        mask = _group_mask(q.shape[0], meta.seq_lens_cpu[0], tuple(meta.spans[0]) if meta.spans else (),
                           meta.causal, q.device)
        return _attend_group(q[None], key[None], value[None], mask, scale)[0].to(q.dtype)
    out = torch.empty_like(q)
    starts = meta.query_starts_cpu
    block_size = cache.block_size
    for (q_len, s_len, spans), seqs in _same_mask_groups(meta).items():
        first = torch.tensor([starts[i] for i in seqs], device=q.device)
        rows = (first[:, None] + torch.arange(q_len, device=q.device)).flatten()  # the group's packed rows
        num_blocks = (s_len + block_size - 1) // block_size
        tables = meta.block_tables[seqs, :num_blocks]
        shape = (len(seqs), num_blocks * block_size) + cache.key.shape[2:]
        key = _dequantized(cache.key[tables].view(shape)[:, :s_len], cache.k_scale, torch.float32)
        value = _dequantized(cache.value[tables].view(shape)[:, :s_len], cache.v_scale, torch.float32)
        group_q = q.index_select(0, rows).view((len(seqs), q_len) + q.shape[1:])
        mask = _group_mask(q_len, s_len, spans, meta.causal, q.device)
        attended = _attend_group(group_q, key, value, mask, scale)
        out.index_copy_(0, rows, attended.reshape((-1,) + q.shape[1:]).to(q.dtype))
    return out
