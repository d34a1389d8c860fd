"""The engine's fast CPU sampling paths (torch, and the one-pass C++ op) pick exactly the reference's ids."""
import pytest
import torch

from unicorn.kernels import cpu_ops
from unicorn.kernels.sampling import sample_fast, sample_full_ref, uniform_noise_fast, uniform_noise_ref

CPU_OPS = [None] + ([cpu_ops.load()] if cpu_ops.available() else [])


def test_noise_bits_equal_the_reference():
    seeds = torch.tensor([0, 1, 2**31, 2**32 + 5, 2**62 - 1, 123456789012345])
    steps = torch.tensor([0, 575, 2**31 - 1, 7, 1, 99])
    assert torch.equal(uniform_noise_fast(seeds, steps, 1009), uniform_noise_ref(seeds, steps, 1009))


@pytest.mark.parametrize("ops", CPU_OPS, ids=lambda m: "cpp" if m else "torch")
@pytest.mark.parametrize("vocab", [97, 1009, 16384])
@pytest.mark.parametrize("with_uncond", [False, True])
def test_same_ids_as_reference(vocab, with_uncond, ops):
    gen = torch.Generator().manual_seed(vocab)
    batch = 12
    cond = torch.randn(batch, vocab, generator=gen) * 3
    uncond = torch.randn(batch, vocab, generator=gen) * 3 if with_uncond else None
    scale = torch.linspace(1.0, 7.0, batch)
    temperature = torch.tensor([0.0, 1.0, 0.7, 1.3] * 3)
    top_k = torch.tensor([0, 0, 5, 50, 0, 1, 0, 0, 3, 0, vocab, 0])
    top_p = torch.tensor([1.0, 0.9, 1.0, 0.5, 1.0, 1.0, 0.3, 1.0, 0.95, 1.0, 1.0, 0.8])
    seeds = torch.arange(batch) * 7919 + 2**40
    steps = torch.arange(batch) * 13
    for filters in ((top_k, top_p), (torch.zeros_like(top_k), torch.ones_like(top_p))):
        expected = sample_full_ref(cond, uncond, scale, temperature, *filters, seeds, steps)
        got = sample_fast(cond, uncond, scale, temperature, *filters, seeds, steps, cpu_ops=ops)
        assert torch.equal(got, expected)
