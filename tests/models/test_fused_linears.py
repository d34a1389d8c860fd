"""FusedLinears: q/k/v and gate/up in one GEMM in the engine's paged forward, following weight updates."""
import torch
from torch import nn

from unicorn.models.layers import FusedLinears, LlamaMLP


def _pair(bias):
    torch.manual_seed(0)
    return nn.Linear(16, 8, bias=bias), nn.Linear(16, 24, bias=bias)


def test_fused_outputs_equal_the_separate_layers_and_share_their_storage():
    for bias in (False, True):
        a, b = _pair(bias)
        fused = FusedLinears(a, b)
        x = torch.randn(5, 16)
        with torch.inference_mode():
            ya, yb = fused(x)
            torch.testing.assert_close(ya, a(x), rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(yb, b(x), rtol=1e-6, atol=1e-6)
        assert a.weight.data_ptr() == fused.weight.data_ptr()  # re-pointed: no second copy
        assert sorted(dict(a.named_parameters())) == (["bias", "weight"] if bias else ["weight"])


def test_in_place_updates_and_replaced_storage_reach_the_fused_gemm():
    a, b = _pair(False)
    fused = FusedLinears(a, b)
    x = torch.randn(3, 16)
    with torch.inference_mode():
        fused(x)
    with torch.no_grad():
        a.weight.copy_(torch.randn_like(a.weight))  # in place, as update_weights loads
    with torch.inference_mode():
        torch.testing.assert_close(fused(x)[0], x @ a.weight.T, rtol=1e-6, atol=1e-6)
    b.weight.data = torch.randn(24, 16)  # a new storage, as sleep/wake or .to() leave
    with torch.inference_mode():
        torch.testing.assert_close(fused(x)[1], x @ b.weight.T, rtol=1e-6, atol=1e-6)
        assert b.weight.data_ptr() == fused.weight.data_ptr() + 8 * 16 * 4


def test_training_runs_the_layers_apart_and_gradients_reach_the_parameters():
    mlp = LlamaMLP(16, 32)
    x = torch.randn(4, 16)
    with torch.inference_mode():
        expected = mlp.forward_fused(x).clone()
    out = mlp.forward_fused(x)  # autograd on: separate GEMMs, on the (re-pointed) parameters
    torch.testing.assert_close(out.detach(), expected, rtol=1e-5, atol=1e-6)
    out.sum().backward()
    assert mlp.gate_proj.weight.grad is not None and mlp.up_proj.weight.grad.abs().sum() > 0
