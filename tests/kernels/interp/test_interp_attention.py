"""Paged decode (split and unsplit), varlen prefill / multi-query, fp8 cache, and the "triton" backend
vs the torch references (TRITON_INTERPRET=1)."""
import random

import pytest
import torch

pytest.importorskip("triton")

from tests.kernels._shapes import ATTENTION_TOLERANCES  # noqa: E402
from unicorn.attention import AttentionMetadata, KVCache, paged_attention  # noqa: E402
from unicorn.kernels.attention_backend import register_triton_backends  # noqa: E402
from unicorn.kernels.paged_attention import paged_attention_kernel_ref, paged_decode, paged_varlen  # noqa: E402


def _cache(num_heads_kv, head_dim, block_size, seq_lens, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    num_blocks = sum(-(-s // block_size) for s in seq_lens) + 3
    kc = torch.randn(num_blocks, block_size, num_heads_kv, head_dim, generator=gen).to(dtype)
    vc = torch.randn(num_blocks, block_size, num_heads_kv, head_dim, generator=gen).to(dtype)
    free = list(range(num_blocks))
    rng.shuffle(free)
    tables = [[free.pop() for _ in range(-(-s // block_size))] for s in seq_lens]
    width = max(map(len, tables))
    bt = torch.tensor([t + [0] * (width - len(t)) for t in tables])
    return kc, vc, bt, gen


DECODE_CASES = [  # (Hq, Hkv, D, block_size, seq_lens, partition_size, split)
    (4, 4, 32, 16, [1, 37, 100], 512, False),  # MHA, one-token and many-block sequences
    (6, 2, 32, 16, [1, 37, 100], 32, True),  # GQA, split-K with empty partitions for short rows
    (7, 1, 40, 5, [3, 71], 32, True),  # odd group, non-power-of-two head_dim and block size
]


@pytest.mark.parametrize("dtype,atol,rtol", ATTENTION_TOLERANCES)
@pytest.mark.parametrize("case", DECODE_CASES)
def test_decode(dtype, atol, rtol, case):
    hq, hkv, d, bs, seq_lens, part, split = case
    kc, vc, bt, gen = _cache(hkv, d, bs, seq_lens, dtype, sum(seq_lens))
    q = torch.randn(len(seq_lens), hq, d, generator=gen).to(dtype)
    sl = torch.tensor(seq_lens)
    got = paged_decode(q, kc, vc, bt, sl, d**-0.5, max(seq_lens), partition_size=part, split=split)
    want = paged_attention_kernel_ref(q, kc, vc, bt, sl, [1] * len(seq_lens), d**-0.5)
    torch.testing.assert_close(got, want, atol=atol, rtol=rtol)


VARLEN_CASES = [  # (Hq, Hkv, D, block_size, seq_lens, query_lens)
    (4, 4, 32, 16, [10, 37, 53], [10, 3, 17]),  # fresh prefill, multi-query decode, prefill over a prefix
    (6, 2, 40, 7, [1, 29], [1, 29]),
]


@pytest.mark.parametrize("dtype,atol,rtol", ATTENTION_TOLERANCES)
@pytest.mark.parametrize("case", VARLEN_CASES)
@pytest.mark.parametrize("causal", [True, False])
def test_varlen(dtype, atol, rtol, case, causal):
    hq, hkv, d, bs, seq_lens, q_lens = case
    kc, vc, bt, gen = _cache(hkv, d, bs, seq_lens, dtype, sum(seq_lens) + causal)
    q = torch.randn(sum(q_lens), hq, d, generator=gen).to(dtype)
    sl = torch.tensor(seq_lens)
    qsl = torch.tensor([0] + torch.tensor(q_lens).cumsum(0).tolist())
    got = paged_varlen(q, kc, vc, bt, qsl, sl, d**-0.5, max(q_lens), causal)
    want = paged_attention_kernel_ref(q, kc, vc, bt, sl, q_lens, d**-0.5, causal)
    torch.testing.assert_close(got, want, atol=atol, rtol=rtol)


@pytest.mark.parametrize("split", [False, True])
def test_decode_fp8_cache(split):
    # e4m3 has a 3-bit mantissa: compare against attention over the *dequantised* cache (tight), and against
    # the unquantised cache (loose, what the model sees).
    hq, hkv, d, bs, seq_lens = 6, 2, 32, 16, [5, 90]
    kc, vc, bt, gen = _cache(hkv, d, bs, seq_lens, torch.float32, 3)
    k_scale, v_scale = float(kc.abs().max() / 448), float(vc.abs().max() / 448)
    kq = (kc / k_scale).to(torch.float8_e4m3fn)
    vq = (vc / v_scale).to(torch.float8_e4m3fn)
    q = torch.randn(2, hq, d, generator=gen, dtype=torch.float16)
    sl = torch.tensor(seq_lens)
    got = paged_decode(q, kq, vq, bt, sl, d**-0.5, 90, k_scale, v_scale, partition_size=32, split=split)
    exact = paged_attention_kernel_ref(q, kq, vq, bt, sl, [1, 1], d**-0.5, True, k_scale, v_scale)
    torch.testing.assert_close(got, exact, atol=2e-3, rtol=2e-3)
    unquantised = paged_attention_kernel_ref(q, kc, vc, bt, sl, [1, 1], d**-0.5)
    torch.testing.assert_close(got, unquantised, atol=6e-2, rtol=6e-2)


@pytest.mark.parametrize("num_heads,num_kv_heads", [(4, 4), (6, 2)])
@pytest.mark.parametrize("causal", [True, False])
def test_backend_prefill_then_decode_matches_torch_backend(num_heads, num_kv_heads, causal):
    assert register_triton_backends()
    gen = torch.Generator().manual_seed(0)
    head_dim, block_size, num_blocks = 16, 4, 40
    prompt_lens = [1, 7, 13]
    tables = [[3, 9, 11, 0, 2], [5, 6, 7], [1, 4, 8, 10, 12, 13]]
    caches = {b: KVCache(torch.zeros(num_blocks, block_size, num_kv_heads, head_dim),
                         torch.zeros(num_blocks, block_size, num_kv_heads, head_dim)) for b in ("torch", "triton")}
    starts = [0, 0, 0]
    for new in (prompt_lens, [1, 1, 1], [2, 1, 3]):  # prefill, decode, multi-query step
        ends = [s + n for s, n in zip(starts, new)]
        t = sum(new)
        q = torch.randn(t, num_heads, head_dim, generator=gen)
        k = torch.randn(t, num_kv_heads, head_dim, generator=gen)
        v = torch.randn(t, num_kv_heads, head_dim, generator=gen)
        outs = {}
        for backend, cache in caches.items():
            meta = AttentionMetadata.build(query_lens=list(new), seq_lens=ends, block_tables=tables,
                                           block_size=block_size, causal=causal, backend=backend)
            outs[backend] = paged_attention(q, k, v, cache, meta, head_dim**-0.5)
        torch.testing.assert_close(outs["triton"], outs["torch"], atol=2e-5, rtol=2e-5)
        torch.testing.assert_close(caches["triton"].key, caches["torch"].key, atol=0, rtol=0)
        starts = ends
