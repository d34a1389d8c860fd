"""The one-pass C++ CPU ops (csrc/cpu/fused_elementwise.cpp) against their torch references over odd shapes:
rope and SiLU-and-multiply bit-identical (torch.equal), RMSNorm to float rounding; strided rows included."""
import pytest
import torch
import torch.nn.functional as F

from unicorn.kernels import cpu_fused, cpu_ops
from unicorn.kernels.dispatch import kernel_choice
from unicorn.kernels.rmsnorm import rms_norm_ref
from unicorn.models.layers import apply_rope, apply_rope_ref

pytestmark = pytest.mark.skipif(cpu_ops.load_fused_elementwise() is None,
                                reason="no C++ compiler, or a CPU capability without a build (AVX2 / AVX512 only)")


@pytest.mark.parametrize("rows,n", [(1, 8), (7, 67), (33, 256), (5, 3)])
def test_rms_norm_matches_the_reference(rows, n):
    gen = torch.Generator().manual_seed(rows * n)
    x = torch.randn(rows, 2 * n, generator=gen)[:, 1 : n + 1] * 3  # rows with a stride of 2n
    weight = 1 + torch.randn(n, generator=gen) * 0.1
    torch.testing.assert_close(cpu_fused.rms_norm(x, weight, 1e-6), rms_norm_ref(x, weight, 1e-6), rtol=2e-6, atol=2e-6)
    heads = torch.randn(4, 3, n, generator=gen)  # [..., n] of any rank
    torch.testing.assert_close(cpu_fused.rms_norm(heads, weight, 1e-5), rms_norm_ref(heads, weight, 1e-5),
                               rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("tokens,heads,head_dim", [(1, 1, 2), (13, 6, 64), (5, 3, 38), (9, 2, 128)])
def test_rope_is_bit_identical(tokens, heads, head_dim):
    gen = torch.Generator().manual_seed(tokens + heads + head_dim)
    packed = torch.randn(tokens, heads + 2, head_dim, generator=gen)
    x = packed[:, 1 : heads + 1]  # a strided view, as the q and k heads of a packed q/k/v
    cos, sin = torch.randn(tokens, head_dim, generator=gen), torch.randn(tokens, head_dim, generator=gen)
    out = cpu_fused.rope(x, cos, sin)
    assert out.is_contiguous() and torch.equal(out, apply_rope_ref(x, cos, sin))
    with torch.inference_mode():
        assert torch.equal(apply_rope(x, cos, sin), apply_rope_ref(x, cos, sin))  # the layer's dispatch


@pytest.mark.parametrize("rows,n", [(1, 1), (7, 37), (16, 704), (3, 9)])
def test_silu_mul_is_bit_identical_and_in_place(rows, n):
    gen = torch.Generator().manual_seed(rows + n)
    gate_up = torch.randn(rows, 2 * n, generator=gen) * 4
    expected = F.silu(gate_up[:, :n]) * gate_up[:, n:]
    gate = gate_up[:, :n]
    out = cpu_fused.silu_mul_(gate, gate_up[:, n:])
    assert out.data_ptr() == gate.data_ptr() and torch.equal(out, expected)


def test_autograd_and_other_dtypes_take_the_reference():
    x = torch.randn(4, 8, requires_grad=True)
    assert not cpu_fused.usable(x)  # grad enabled on a tensor that needs it
    with torch.no_grad():
        assert cpu_fused.usable(x)
    assert not cpu_fused.usable(torch.randn(4, 8, dtype=torch.float64))
    assert not cpu_fused.usable(torch.randn(4, 8).bfloat16())
    with kernel_choice("torch"):  # an engine built with kernels="torch" runs the references
        assert not cpu_fused.usable(torch.randn(4, 8))
