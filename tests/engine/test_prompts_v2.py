"""Images passed between roles as float tensors (the VQ decoder's output), and prompt templates from the model."""
import PIL.Image
import pytest
import torch
import torch.nn.functional as F

from unicorn import Engine, ImageGenParams, SamplingParams
from unicorn.engine.prompts import image_content_hash
from unicorn.toyworld.model import default_model_path

ONE_STEP = 2 / 255  # one uint8 level in the toy model's normalized space (std 0.5)


@pytest.fixture(scope="module")
def engine():
    return Engine(str(default_model_path()), num_kv_blocks=128, seed=0)


@pytest.fixture(scope="module")
def decoded(engine):
    """Two drawings as the decoder gives them: float [2, 3, 64, 64] in about [-1, 1]."""
    out = engine.generate_images("a red circle", ImageGenParams(n=2, seed=0))[0]
    return engine.runner.decode_images(out.image_tokens)


def _ask(image, question="Score this image 0-10."):
    return {"messages": [{"role": "user", "content": [{"type": "image", "image": image},
                                                      {"type": "text", "text": question}]}]}


def test_a_decoded_tensor_is_an_image_part_without_uint8_rounding(engine, decoded):
    t0 = decoded[0]
    ids, placed = engine.prompts.text(_ask(t0))
    pixels = placed[0].pixel_values
    # the understanding size equals the decoder's (64) and mean = std = 0.5: preprocessing only clamps to the
    # pixel range, as postprocessing to a PIL image does
    torch.testing.assert_close(pixels, t0.clamp(-1, 1), atol=1e-6, rtol=0)
    torch.testing.assert_close(pixels, engine.model.preprocess_images([t0])[0], atol=0, rtol=0)
    via_pil = engine.model.preprocess_images([engine.model.postprocess(t0[None])[0]])[0]
    diff = (pixels - via_pil).abs()
    assert 0 < diff.max() <= ONE_STEP + 1e-6  # the PIL round trip rounds each value down to a uint8 level
    # the messages form and the token-ids form of the same tensor run the same
    greedy = SamplingParams(temperature=0.0, max_tokens=8)
    by_messages, by_ids = engine.generate([_ask(t0), {"prompt_token_ids": ids, "images": [t0]}], greedy)
    assert by_messages.error is None and by_messages.token_ids == by_ids.token_ids


def test_tensor_hashes_follow_dtype_shape_and_bytes(decoded):
    t0, t1 = decoded[0], decoded[1]
    assert image_content_hash(t0) == image_content_hash(t0.clone())
    assert len({image_content_hash(t) for t in (t0, t1, t0.to(torch.bfloat16), t0[:, :32], t0.reshape(3, 32, 128))}) == 5
    pil = PIL.Image.new("RGB", (64, 64))
    assert image_content_hash(pil) != image_content_hash(torch.zeros(3, 64, 64))


def test_prefix_cache_never_shares_blocks_across_two_tensor_images(engine, decoded):
    params = SamplingParams(temperature=0.0, max_tokens=2)
    first = engine.generate(_ask(decoded[0]), params)[0]
    ids, placed = engine.prompts.text(_ask(decoded[1]))
    again = engine.generate(_ask(decoded[0]), params)[0]
    other = engine.generate(_ask(decoded[1]), params)[0]
    assert first.error is None and other.error is None
    assert again.num_cached_tokens > placed[0].offset  # the same image reuses its blocks past the image ...
    assert other.num_cached_tokens <= placed[0].offset  # ... a different one stops at its first block


def test_a_tensor_of_another_size_is_resized_like_the_pil_path(engine):
    # a smooth image 48 x 80 -> longest side 64 (bicubic, antialiased) and padded square with the background
    small = torch.rand(1, 3, 12, 20, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for size in ((48, 80), (24, 40)):  # down and up
        t = F.interpolate(small, size=size, mode="bilinear", align_corners=False)[0]
        ours = engine.model.preprocess_images([t])[0]
        via_pil = engine.model.preprocess_images([engine.model.postprocess(t[None])[0]])[0]
        assert ours.shape == (3, 64, 64)
        assert (ours - via_pil).abs().max() < 3 * ONE_STEP and (ours - via_pil).abs().mean() < ONE_STEP
        torch.testing.assert_close(ours[:, :12], via_pil[:, :12], atol=1e-6, rtol=0)  # the padding rows


def test_a_bad_tensor_fails_its_request_alone(engine, decoded):
    bad, good = engine.generate([_ask(torch.zeros(64, 64, 3, dtype=torch.uint8)), _ask(decoded[0])],
                                SamplingParams(max_tokens=2))
    assert "float [3, H, W]" in bad.error and good.error is None


def test_the_templates_come_from_the_model(engine, monkeypatch):
    calls = []

    class Format:
        def understanding_prompt(self, messages, num_image_tokens, system_prompt=None):
            calls.append("understanding")
            return "<|User|>: hello\n\n<|Assistant|>:"

        def generation_prompt(self, text):
            calls.append("generation")
            return "<|User|>: " + text + "\n\n<|Assistant|>:<begin_of_image>"

    monkeypatch.setattr(engine.prompts, "prompt_format", Format())
    ids, _ = engine.prompts.text({"messages": [{"role": "user", "content": "ignored"}]})
    assert ids == engine.tokenizer.encode("<|User|>: hello\n\n<|Assistant|>:")
    assert engine.prompts.image("a circle")[-1] == engine.spec.boi_token_id
    assert calls == ["understanding", "generation"]
