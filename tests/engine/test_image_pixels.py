"""An image output's pixel tensor goes straight into a text request (a judge) as an image part."""
import torch

from unicorn import Engine, ImageGenParams, SamplingParams
from unicorn.toyworld.model import default_model_path


def _ask(image):
    return {"messages": [{"role": "user", "content": [{"type": "image", "image": image},
                                                      {"type": "text", "text": "Score this image 0-10."}]}]}


def test_pixel_values_are_the_decoders_floats_and_feed_a_text_request():
    engine = Engine(str(default_model_path()), num_kv_blocks=128, seed=0)
    out = engine.generate_images("a red circle", ImageGenParams(n=2, seed=0))[0]
    pixels = out.pixel_values
    assert pixels.dtype == torch.float32 and tuple(pixels.shape) == (2, 3, 64, 64)
    assert torch.equal(pixels, engine.runner.decode_images(out.image_tokens))
    assert pixels.min() < 0  # the decoder's normalized range, not [0, 1] or uint8
    as_pil = engine.model.postprocess(pixels)
    assert [im.tobytes() for im in out.images] == [im.tobytes() for im in as_pil]
    # The tensor is an image part as it is: the judge sees exactly the decoder's pixels (clamped), no PIL rounding.
    ids, placed = engine.prompts.text(_ask(pixels[0]))
    torch.testing.assert_close(placed[0].pixel_values, pixels[0].clamp(-1, 1), atol=1e-6, rtol=0)
    greedy = SamplingParams(temperature=0.0, max_tokens=6)
    by_output, by_ids = engine.generate([_ask(pixels[0]), {"prompt_token_ids": ids, "images": [pixels[0]]}], greedy)
    assert by_output.error is None and by_output.token_ids == by_ids.token_ids
