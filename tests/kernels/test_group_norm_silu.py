"""The C++ GroupNorm + SiLU op (csrc/cpu/group_norm_silu.cpp) against torch's group_norm and x * sigmoid(x):
bit-identical (torch.equal) over odd shapes, 1 and 2 threads."""
import pytest
import torch

from unicorn.kernels import cpu_ops
from unicorn.kernels.group_norm_silu import can_fuse, group_norm_silu, group_norm_silu_ref

pytestmark = pytest.mark.skipif(cpu_ops.load_group_norm_silu() is None,
                                reason="no C++ compiler, or a CPU capability without a build (AVX2 / AVX512 only)")


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape,groups", [
    ((1, 32, 24, 24), 32), ((3, 1024, 7, 9), 32), ((2, 96, 32, 1), 32), ((1, 32, 192, 192), 32),  # GroupNorm(32)
    ((5, 3, 32, 11), 3), ((1, 32, 13, 16), 2), ((3, 6, 64), 2),  # channels of an odd length, other group counts
])
def test_bit_identical_to_torch(shape, groups, threads):
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=gen) * 3 + 0.5
    weight, bias = 1 + torch.randn(shape[1], generator=gen) * 0.1, torch.randn(shape[1], generator=gen) * 0.1
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert can_fuse(x, groups)
        assert torch.equal(group_norm_silu(x, weight, bias, groups, 1e-6), group_norm_silu_ref(x, weight, bias, groups, 1e-6))
    finally:
        torch.set_num_threads(before)


def test_other_inputs_take_the_reference():
    x = torch.randn(2, 32, 6, 6, dtype=torch.float64)
    weight, bias = torch.ones(32, dtype=torch.float64), torch.zeros(32, dtype=torch.float64)
    assert not can_fuse(x, 32) and not can_fuse(x.float().contiguous(memory_format=torch.channels_last), 32)
    assert not can_fuse(torch.randn(1, 32, 3, 5), 32)  # groups of 15 elements: the reference
    assert torch.equal(group_norm_silu(x, weight, bias, 32, 1e-6), group_norm_silu_ref(x, weight, bias, 32, 1e-6))
