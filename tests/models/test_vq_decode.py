"""Our VQ-16 decoder against transformers' JanusVQVAE.decode: bit-identical in fp32 (torch.equal), at odd batch
sizes and 1 or 2 threads; the in-place SiLU against x * sigmoid(x); channels-last within a stated tolerance."""
import pytest
import torch

from unicorn.models.janus_config import VQArch
from unicorn.models.vq import VQModel, _swish

# Small VQ-16 shapes (4 levels, attention at the lowest resolution, a channel change with a 1x1 shortcut),
# 32 px images from 4 x 4 codes.
VQ = dict(embed_dim=8, num_embeddings=64, latent_channels=16, base_channels=32, channel_multiplier=[1, 1, 2, 2],
          num_res_blocks=1)
GRID = 4


@pytest.fixture(scope="module")
def pair():
    from transformers import JanusVQVAEConfig
    from transformers.models.janus.modeling_janus import JanusVQVAE

    torch.manual_seed(0)
    hf = JanusVQVAE(JanusVQVAEConfig(**VQ, num_patches=GRID)).eval()
    with torch.no_grad():  # transformers inits norms to 1 and biases to 0: perturb them so their mapping counts
        for p in hf.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    ours = VQModel(VQArch(**VQ), grid=GRID).eval()
    ours.load_state_dict(hf.state_dict())
    return hf, ours


@pytest.fixture(params=[1, 2])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("batch", [1, 3, 5])
def test_decode_bit_identical_to_transformers(pair, threads, batch):
    hf, ours = pair
    ids = torch.randint(0, VQ["num_embeddings"], (batch, GRID * GRID), generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        ref = hf.decode(ids)
    with torch.inference_mode():
        assert torch.equal(ours.decode(ids), ref)
    with torch.no_grad():  # the no_grad path (not inference mode) takes the same in-place ops
        assert torch.equal(ours.decode(ids), ref)


def test_one_image_at_a_time_is_transformers_one_image_at_a_time(pair):
    """ModelRunner.decode_images decodes one image per call on a CPU, so an image's pixels depend on its codes
    alone. Against a batched decode they are equal at the Janus shapes (bench/vq_decode.py: janus-mid, batch 8)
    but not at every shape: oneDNN picks its convolution kernel by the batch too (here conv_in at 4 x 4)."""
    hf, ours = pair
    ids = torch.randint(0, VQ["num_embeddings"], (5, GRID * GRID), generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        ref = torch.cat([hf.decode(ids[i : i + 1]) for i in range(5)])
        assert torch.equal(torch.cat([ours.decode(ids[i : i + 1]) for i in range(5)]), ref)


def test_decode_with_autograd_on_is_identical_and_leaves_the_graph_usable(pair):
    hf, ours = pair
    ids = torch.randint(0, VQ["num_embeddings"], (2, GRID * GRID), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref = hf.decode(ids)
    out = ours.decode(ids)
    assert torch.equal(out.detach(), ref)
    out.sum().backward()  # the out-of-place SiLU and residual keep autograd's saved tensors intact
    assert ours.decoder.conv_out.weight.grad is not None
    ours.zero_grad(set_to_none=True)


def test_channels_last_within_tolerance(pair):
    """Channels-last convolutions sum in another order (oneDNN brgemm instead of the blocked direct kernel):
    fp32 rounding differences only, ~1e-5 relative per convolution, compounded over ~20 layers."""
    hf, ours = pair
    ids = torch.randint(0, VQ["num_embeddings"], (3, GRID * GRID), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ref = ours.decode(ids)
        out = ours.decode(ids, channels_last=True)
    assert out.is_contiguous()
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("shape", [(1, 32, 24, 24), (3, 64, 48, 48), (2, 32, 96, 96), (1, 3, 217, 311), (5, 7)])
def test_swish_in_place_is_bit_identical(shape):
    """Chunks are multiples of the vector width, so each element meets the same sigmoid as the whole-tensor op;
    at 1 thread that holds for any size (only the last n % 16 elements in memory order are scalar, in both), at
    2 threads for sizes whose halves are whole vectors (every decoder activation: channels are multiples of 32)."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape))) * 4
    for channels_last in (False, True) if len(shape) == 4 else (False,):
        before = torch.get_num_threads()
        for threads in (1, 2):
            if threads == 2 and x.numel() % 32:
                continue
            torch.set_num_threads(threads)
            try:
                y = x.contiguous(memory_format=torch.channels_last) if channels_last else x.clone()
                ref = y * torch.sigmoid(y)  # in y's layout: the layout decides which elements are the tail
                with torch.inference_mode():
                    out = _swish(y)
            finally:
                torch.set_num_threads(before)
            assert out.data_ptr() == y.data_ptr()  # in place
            assert torch.equal(out, ref)
