"""The packed oneDNN linear (unicorn.kernels.cpu_linear) against F.linear, its reference: the same values to float
rounding, rows independent of the batch they are in, the packed copy rebuilt when the weight changes, and
F.linear itself wherever the packed path does not apply."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unicorn.kernels import cpu_linear
from unicorn.kernels.dispatch import kernel_choice
from unicorn.models.layers import FusedLinears, Linear

pytestmark = pytest.mark.skipif(not cpu_linear.available(), reason="this torch build has no oneDNN")


DEFAULT_MIN_PACKED_ELEMENTS = cpu_linear.MIN_PACKED_ELEMENTS


@pytest.fixture(autouse=True)
def pack_any_size(monkeypatch):
    """Small weights take the packed path here (by default they keep F.linear; the test of that default sets it
    back)."""
    monkeypatch.setattr(cpu_linear, "MIN_PACKED_ELEMENTS", 0)


def _layer(in_features: int, out_features: int, bias: bool, seed: int) -> Linear:
    torch.manual_seed(seed)
    return Linear(in_features, out_features, bias=bias)


@pytest.mark.parametrize("rows,in_features,out_features,bias", [(1, 8, 24, True), (7, 67, 131, False),
                                                                 (128, 512, 1536, False), (33, 40, 5, True)])
def test_matches_f_linear_to_rounding(rows, in_features, out_features, bias):
    layer = _layer(in_features, out_features, bias, rows)
    x = torch.randn(rows, 2 * in_features)[:, 1 : in_features + 1]  # strided rows
    with torch.inference_mode():
        out = layer(x)
        torch.testing.assert_close(out, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
        batched = layer(x.reshape(1, rows, in_features))  # any leading shape
    assert batched.shape == (1, rows, out_features) and torch.equal(batched[0], out)


def test_rows_do_not_depend_on_the_batch_or_the_thread_count():
    # torch's default GEMM gives other last bits at some batch sizes; the packed GEMM must not (a row's image
    # would otherwise depend on what else is in flight).
    layer = _layer(512, 1536, False, 0)
    x = torch.randn(300, 512)
    threads = torch.get_num_threads()
    with torch.inference_mode():
        full = layer(x)
        for rows in (1, 2, 3, 17, 64, 127, 128, 129, 299):
            assert torch.equal(layer(x[:rows]), full[:rows]), rows
            assert torch.equal(layer(x[-rows:]), full[-rows:]), rows
        try:
            torch.set_num_threads(1)
            assert torch.equal(layer(x), full)
        finally:
            torch.set_num_threads(threads)


def test_the_packed_copy_follows_weight_updates():
    layer = _layer(64, 96, True, 1)
    x = torch.randn(5, 64)
    with torch.inference_mode():
        layer(x)
    with torch.no_grad():
        layer.weight.mul_(-2.0)  # in place: same storage, new version
        layer.bias.add_(1.0)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
    layer.weight.data = torch.randn(96, 64)  # a new storage (sleep / wake, a reload)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
        cpu_linear.release_packed_weights(layer)
        assert layer.packed_weight._packed is None
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)


def test_fused_linears_pack_their_concatenation_and_follow_updates_of_a_part():
    q, k = _layer(32, 48, False, 2), _layer(32, 16, False, 3)
    fused = FusedLinears(q, k)
    x = torch.randn(9, 32)
    with torch.inference_mode():
        fused.packed(x)
    with torch.no_grad():
        k.weight.zero_()  # a view of the concatenation: bumps its version too
    with torch.inference_mode():
        out_q, out_k = fused(x)
        assert torch.equal(out_k, torch.zeros(9, 16))
        torch.testing.assert_close(out_q, F.linear(x, q.weight), rtol=1e-5, atol=1e-5)
    assert cpu_linear.packed_weights(nn.ModuleList([q, k])) == [q.packed_weight, k.packed_weight]


def test_f_linear_itself_where_the_packed_path_does_not_apply():
    layer = _layer(48, 40, True, 4)
    x = torch.randn(6, 48)
    reference = F.linear(x, layer.weight, layer.bias)
    assert torch.equal(layer(x), reference)  # autograd: the weight requires grad
    with torch.no_grad():  # a trainer's evaluation: no packed copy either
        assert torch.equal(layer(x), reference) and layer.packed_weight._packed is None
    with torch.inference_mode(), kernel_choice("torch"):
        assert torch.equal(layer(x), reference)
    with torch.inference_mode():
        layer.packed_weight.enabled = False
        assert torch.equal(layer(x), reference)
        layer.packed_weight.enabled = True
        half = layer.to(torch.bfloat16)
        assert torch.equal(half(x.bfloat16()), F.linear(x.bfloat16(), half.weight, half.bias))


def test_state_dict_is_nn_linears():
    layer = _layer(8, 4, True, 5)
    plain = nn.Linear(8, 4)
    plain.load_state_dict(layer.state_dict())
    assert list(layer.state_dict()) == list(plain.state_dict()) == ["weight", "bias"]


def test_weights_below_the_size_keep_f_linear_and_larger_ones_pack(monkeypatch):
    monkeypatch.setattr(cpu_linear, "MIN_PACKED_ELEMENTS", DEFAULT_MIN_PACKED_ELEMENTS)
    small = _layer(128, 384, False, 6)  # the toy model's fused q/k/v
    large = _layer(512, 512, False, 7)
    assert small.weight.numel() < cpu_linear.MIN_PACKED_ELEMENTS <= large.weight.numel()
    with torch.inference_mode():
        for rows in (1, 2, 64):
            x = torch.randn(rows, 128)
            assert torch.equal(small(x), F.linear(x, small.weight))  # F.linear itself
        assert small.packed_weight._packed is None
        large(torch.randn(2, 512))
        assert large.packed_weight._packed is not None
