"""The C++ CPU paged decode kernel (csrc/cpu/) against the torch reference, over odd shapes and dtypes."""
import random

import pytest
import torch

from unicorn.attention import AttentionMetadata, KVCache
from unicorn.attention.torch_ref import paged_attention_ref
from unicorn.kernels import cpu_ops

pytestmark = pytest.mark.skipif(not cpu_ops.available(), reason="no C++ compiler to build csrc/cpu")

TOLERANCE = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (2e-2, 2e-2), torch.float16: (2e-3, 2e-3),
             torch.float8_e4m3fn: (1e-5, 1e-5)}  # fp8: the same stored values, dequantised by both


def shuffled_block_tables(lens: list[int], block_size: int, num_blocks: int, seed: int) -> list[list[int]]:
    """Each sequence's blocks, disjoint and scattered over the pool (a shuffled pool dealt out in turn)."""
    ids = list(range(num_blocks))
    random.Random(seed).shuffle(ids)
    tables = []
    for n in lens:
        tables.append(ids[: -(-n // block_size)])
        ids = ids[-(-n // block_size):]
    return tables


@pytest.mark.parametrize("dtype", sorted(TOLERANCE, key=str))
@pytest.mark.parametrize("num_heads,num_kv_heads,head_dim", [(4, 4, 64), (6, 2, 40), (7, 1, 13)])
@pytest.mark.parametrize("block_size", [1, 5, 16])
def test_decode_matches_reference(dtype, num_heads, num_kv_heads, head_dim, block_size):
    from unicorn.kernels.cpu_attention import cpu_paged_attention

    gen = torch.Generator().manual_seed(block_size * 100 + head_dim)
    lens = [1, 2, 17, 63, 101]
    num_blocks = sum(-(-n // block_size) for n in lens) + 3
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    fp8 = dtype == torch.float8_e4m3fn
    scales = (0.5, 3.0) if fp8 else (1.0, 1.0)  # an fp8 cache stores x / scale
    cache = KVCache(torch.randn(shape, generator=gen).to(dtype), torch.randn(shape, generator=gen).to(dtype), *scales)
    ref_cache = KVCache(cache.key.clone(), cache.value.clone(), *scales)
    dtype = torch.float32 if fp8 else dtype  # the model's dtype (q, k, v)
    tables = shuffled_block_tables(lens, block_size, num_blocks, seed=0)
    meta = AttentionMetadata.build(query_lens=[1] * len(lens), seq_lens=lens, block_tables=tables, block_size=block_size)
    q = torch.randn(len(lens), num_heads, head_dim, generator=gen).to(dtype)
    k = torch.randn(len(lens), num_kv_heads, head_dim, generator=gen).to(dtype)
    v = torch.randn(len(lens), num_kv_heads, head_dim, generator=gen).to(dtype)
    out = cpu_paged_attention(q, k, v, cache, meta, head_dim**-0.5)
    expected = paged_attention_ref(q, k, v, ref_cache, meta, head_dim**-0.5)
    atol, rtol = TOLERANCE[dtype]
    torch.testing.assert_close(out.float(), expected.float(), atol=atol, rtol=rtol)
    # the new K/V landed in the same slots (bytes: fp8 has no equality kernel)
    assert torch.equal(cache.key.view(torch.uint8), ref_cache.key.view(torch.uint8))


@pytest.mark.parametrize("with_spans", [False, True])
def test_mixed_step_matches_reference(with_spans):
    """Decode rows beside prefill chunks and a one-token prompt tail (continuous batching): the decode rows take the
    decode kernel, the rest the reference; together they equal the reference on the whole step, cache writes
    included, and the prompt tail is the reference's bit for bit."""
    from unicorn.kernels.cpu_attention import cpu_paged_attention

    gen = torch.Generator().manual_seed(7)
    block_size, num_heads, num_kv_heads, head_dim = 4, 6, 2, 16
    query_lens, lens = [1, 9, 1, 5, 1, 1], [13, 9, 30, 22, 2, 17]
    decode_seqs = [True, False, True, False, True, False]  # the last: a prompt's one-token tail
    spans = [[], [(2, 6)], [(4, 8)], [(18, 22)], [], []] if with_spans else None
    num_blocks = sum(-(-n // block_size) for n in lens) + 2
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    cache = KVCache(torch.randn(shape, generator=gen), torch.randn(shape, generator=gen))
    ref_cache = KVCache(cache.key.clone(), cache.value.clone())
    tables = shuffled_block_tables(lens, block_size, num_blocks, seed=1)
    meta = AttentionMetadata.build(query_lens=query_lens, seq_lens=lens, block_tables=tables, block_size=block_size,
                                   spans=spans, decode_seqs=decode_seqs)
    assert not meta.is_decode_only
    tokens = sum(query_lens)
    q = torch.randn(tokens, num_heads, head_dim, generator=gen)
    k = torch.randn(tokens, num_kv_heads, head_dim, generator=gen)
    v = torch.randn(tokens, num_kv_heads, head_dim, generator=gen)
    out = cpu_paged_attention(q, k, v, cache, meta, head_dim**-0.5)
    expected = paged_attention_ref(q, k, v, ref_cache, meta, head_dim**-0.5)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(out[-1], expected[-1])
    assert torch.equal(cache.key, ref_cache.key) and torch.equal(cache.value, ref_cache.value)
