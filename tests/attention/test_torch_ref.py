"""The paged torch attention against dense attention over the same contexts."""
import random

import pytest
import torch

from unicorn.attention import AttentionMetadata, KVCache, paged_attention


def dense_reference(q, k, v, causal):
    # q: [Lq, Hq, D]; k, v: [Lk, Hkv, D]; queries are the last Lq positions.
    rep = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(rep, 1)
    v = v.repeat_interleave(rep, 1)
    scores = torch.einsum("qhd,khd->hqk", q.double(), k.double()) * q.shape[-1] ** -0.5
    if causal:
        lq, lk = q.shape[0], k.shape[0]
        allowed = torch.arange(lk - lq, lk)[:, None] >= torch.arange(lk)[None, :]
        scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v.double()).float()


@pytest.mark.parametrize("num_heads,num_kv_heads", [(4, 4), (6, 2), (3, 1)])
@pytest.mark.parametrize("block_size", [1, 4, 16])
@pytest.mark.parametrize("causal", [True, False])
def test_paged_matches_dense_over_prefill_then_decode(num_heads, num_kv_heads, block_size, causal):
    gen = torch.Generator().manual_seed(0)
    rng = random.Random(0)
    head_dim = 8
    num_blocks = 64
    cache = KVCache(torch.zeros(num_blocks, block_size, num_kv_heads, head_dim),
                    torch.zeros(num_blocks, block_size, num_kv_heads, head_dim))
    free = list(range(num_blocks))
    rng.shuffle(free)
    prompt_lens = [1, 7, 13]
    full_len = [n + 3 for n in prompt_lens]
    tables = [[free.pop() for _ in range((n + block_size - 1) // block_size)] for n in full_len]
    ks = [torch.randn(n, num_kv_heads, head_dim, generator=gen) for n in full_len]
    vs = [torch.randn(n, num_kv_heads, head_dim, generator=gen) for n in full_len]
    qs = [torch.randn(n, num_heads, head_dim, generator=gen) for n in full_len]

    def step(starts, ends):
        meta = AttentionMetadata.build(query_lens=[e - s for s, e in zip(starts, ends)], seq_lens=list(ends),
                                       block_tables=tables, block_size=block_size, causal=causal)
        q = torch.cat([x[s:e] for x, s, e in zip(qs, starts, ends)])
        k = torch.cat([x[s:e] for x, s, e in zip(ks, starts, ends)])
        v = torch.cat([x[s:e] for x, s, e in zip(vs, starts, ends)])
        out = paged_attention(q, k, v, cache, meta, head_dim ** -0.5)
        expected = torch.cat([dense_reference(x[s:e], kk[:e], vv[:e], causal)
                              for x, kk, vv, s, e in zip(qs, ks, vs, starts, ends)])
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)

    step([0, 0, 0], prompt_lens)  # varlen prefill
    for i in range(3):  # decode steps (the batched single-query path when causal)
        step([n + i for n in prompt_lens], [n + i + 1 for n in prompt_lens])
