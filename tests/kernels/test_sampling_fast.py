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


needs_cpp = pytest.mark.skipif(not cpu_ops.available(), reason="no C++ compiler to build csrc/cpu")


@needs_cpp
def test_fast_gumbel_noise_error_over_every_uniform_value_is_far_below_the_recheck_tolerance():
    # u takes 2^23 values; the fused op rechecks entries within 1e-4 of the fast arg-max with exact logs, which is
    # exact as long as twice the fast noise's error (plus rounding) stays below that.
    assert cpu_ops.load().gumbel_fast_max_error() < 1e-5


def _one_pass(ops, cond, uncond, scale, temperature, seeds, steps):
    # the previous CPU path: torch CFG and temperature, then the one-pass C++ Gumbel arg-max
    from unicorn.kernels.sampling import cfg_logits_ref

    x = cfg_logits_ref(cond, uncond, scale)
    s = x / torch.where(temperature <= 0, torch.ones_like(temperature), temperature)[:, None] + 0.0
    return ops.gumbel_argmax(s, seeds, steps, temperature)


@needs_cpp
def test_fused_op_equals_the_one_pass_op_when_every_entry_is_a_near_tie():
    # logits = C - g: every z = s + g equals C up to rounding, so thousands of entries are within the fast
    # noise's error of the maximum and the exact recheck decides among them.
    ops = cpu_ops.load()
    batch, vocab = 6, 16384
    seeds = torch.arange(batch) * 104729 + 3
    steps = torch.arange(batch) * 7
    g = -torch.log(-torch.log(uniform_noise_ref(seeds, steps, vocab)))
    cond = 2.0 - g.double().float()
    temperature = torch.ones(batch)
    scale = torch.ones(batch)
    got = ops.cfg_gumbel_argmax(cond, None, scale, temperature, seeds, steps)
    assert torch.equal(got, _one_pass(ops, cond, None, scale, temperature, seeds, steps))
    uncond = cond - 0.5
    scale = torch.full((batch,), 2.0)  # x = uncond + 2 * 0.5 = cond, rounded
    got = ops.cfg_gumbel_argmax(cond, uncond, scale, temperature, seeds, steps)
    assert torch.equal(got, _one_pass(ops, cond, uncond, scale, temperature, seeds, steps))


@needs_cpp
def test_fused_op_equals_the_one_pass_op_on_engine_like_rows():
    ops = cpu_ops.load()
    gen = torch.Generator().manual_seed(5)
    batch, vocab = 64, 16384
    cond = torch.randn(batch, vocab, generator=gen) * 2
    uncond = cond + torch.randn(batch, vocab, generator=gen) * 0.3
    uncond[:4] = cond[:4]  # scale-1 rows: the engine passes the conditional logits as "unconditional"
    scale = torch.tensor([1.0] * 4 + [5.0] * (batch - 4))
    temperature = torch.tensor([1.0, 0.0, 0.5, 2.0] * (batch // 4))
    seeds = torch.arange(batch) * 2654435761 + 2**45
    for step in (0, 1, 575):
        steps = torch.full((batch,), step)
        got = ops.cfg_gumbel_argmax(cond, uncond, scale, temperature, seeds, steps)
        assert torch.equal(got, _one_pass(ops, cond, uncond, scale, temperature, seeds, steps))
