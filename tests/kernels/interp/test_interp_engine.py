"""The engine's outputs are unchanged with the Triton kernels on (attention + fused sampling, interpreter)."""
import pytest

from unicorn import Engine, ImageGenParams, SamplingParams
from unicorn.models.janus_tiny import write_random_janus_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "janus"
    write_random_janus_checkpoint(path, preset="tiny", seed=0)
    return str(path)


def run(ckpt, kernels):
    engine = Engine(ckpt, num_kv_blocks=128, block_size=8, kernels=kernels)
    images = engine.generate_images(
        ["a red circle", "two blue squares side by side"],
        ImageGenParams(n=2, cfg_scale=5.0, temperature=1.0, top_k=20, seed=3),
    )
    greedy = engine.generate_images("a green star", ImageGenParams(n=1, temperature=0.0))
    text = engine.generate(["describe the shapes", "hello"], SamplingParams(max_tokens=6, temperature=0.8, seed=4))
    return ([o.image_tokens.tolist() for o in images + greedy], [o.token_ids for o in text], engine.kernels)


def test_engine_outputs_equal_with_kernels_on(ckpt):
    torch_images, torch_text, name = run(ckpt, "torch")
    assert name == "torch"
    triton_images, triton_text, name = run(ckpt, "triton")
    assert name == "triton"
    assert triton_images == torch_images
    assert triton_text == torch_text
