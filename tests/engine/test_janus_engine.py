"""The engine end to end against transformers' JanusForConditionalGeneration (fp32, CPU, greedy): token-exact.

Checkpoints are tiny random models saved with transformers' save_pretrained; the engine loads them from disk.
"""
import numpy as np
import pytest
import torch
from PIL import Image

from janus_reference import BOI, BOS, EOI, EOS, HF_CONFIGS, IMAGE, make_hf_janus
from unicorn import Engine, ImageGenParams, SamplingParams


@pytest.fixture(scope="module", params=sorted(HF_CONFIGS))
def saved(request, tmp_path_factory):
    model = make_hf_janus(request.param, seed=3)
    path = tmp_path_factory.mktemp(f"engine_{request.param}")
    model.save_pretrained(path)
    return model, str(path)


def image_prompt(length, seed):
    gen = torch.Generator().manual_seed(seed)
    return [BOS] + torch.randint(3, 240, (length - 2,), generator=gen).tolist() + [BOI]


def random_image(seed, size=32):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


def hf_image_tokens(model, ids, cfg_scale):
    from transformers import GenerationConfig

    config = GenerationConfig(**model.generation_config.to_dict())
    config.do_sample, config.guidance_scale, config.top_k = False, cfg_scale, None
    x = torch.tensor([ids])
    with torch.no_grad():
        return model.generate(input_ids=x, attention_mask=torch.ones_like(x), generation_mode="image",
                              generation_config=config)[0]


@pytest.mark.parametrize("block_size,cfg_head_mix", [(4, True), (16, True), (16, False)])
def test_greedy_cfg_images_match_transformers_in_a_mixed_length_batch(saved, block_size, cfg_head_mix):
    # cfg_head_mix (the default): CFG on the image head's last-layer input, one GEMM per image
    hf_model, path = saved
    engine = Engine(path, block_size=block_size, num_kv_blocks=256, cfg_head_mix=cfg_head_mix)
    prompts = [image_prompt(n, seed=n) for n in (5, 9, 14)]
    outputs = engine.generate_images(prompts, ImageGenParams(n=1, cfg_scale=4.0, temperature=0.0))
    for ids, out in zip(prompts, outputs):
        assert out.error is None
        expected = hf_image_tokens(hf_model, ids, 4.0)
        assert out.image_tokens[0].tolist() == expected.tolist()
        with torch.no_grad():
            hf_pixels = hf_model.decode_image_tokens(expected[None])[0]  # [H, W, 3]
        ours = engine.model.decode_image_tokens(out.image_tokens)[0].permute(1, 2, 0)
        torch.testing.assert_close(ours, hf_pixels, atol=1e-4, rtol=1e-4)
        assert out.images[0].size == (hf_pixels.shape[1], hf_pixels.shape[0])


def test_greedy_text_with_an_image_matches_transformers(saved):
    hf_model, path = saved
    engine = Engine(path, block_size=4, num_kv_blocks=256)
    n_img = engine.spec.num_image_tokens
    prompts = []
    for seed, tail in ((0, 4), (1, 9)):
        gen = torch.Generator().manual_seed(seed)
        text = torch.randint(3, 240, (3 + tail,), generator=gen).tolist()
        ids = [BOS] + text[:3] + [BOI] + [IMAGE] * n_img + [EOI] + text[3:]
        prompts.append({"prompt_token_ids": ids, "images": [random_image(seed)]})
    outputs = engine.generate(prompts, SamplingParams(temperature=0.0, max_tokens=10))
    for prompt, out in zip(prompts, outputs):
        ids = torch.tensor([prompt["prompt_token_ids"]])
        pixels = engine.model.preprocess_images(prompt["images"])
        with torch.no_grad():
            generated = hf_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels,
                                          do_sample=False, max_new_tokens=10, top_k=None)[0, ids.shape[1]:].tolist()
        expected = generated[: generated.index(EOS) + 1] if EOS in generated else generated  # then transformers pads
        assert out.token_ids == expected
        assert out.finish_reason == ("stop" if EOS in expected else "length")


def unguided_greedy_reference(model, ids, num_tokens):
    """A plain greedy loop over transformers' modules: the conditional row alone (transformers' generate
    cannot run image mode with guidance 1)."""
    inner = model.model
    embeds = inner.get_input_embeddings()(torch.tensor([ids]))
    past, tokens = None, []
    with torch.no_grad():
        for _ in range(num_tokens):
            out = inner.language_model(inputs_embeds=embeds, past_key_values=past, use_cache=True)
            past = out.past_key_values
            token = inner.generation_head(out.last_hidden_state[:, -1]).argmax(-1)
            tokens.append(int(token))
            embeds = model.prepare_embeddings_for_image_generation(token[:, None])
    return tokens


def test_cfg_scale_one_runs_without_the_unconditional_row(saved):
    hf_model, path = saved
    engine = Engine(path, block_size=8, num_kv_blocks=64)
    ids = image_prompt(7, seed=11)
    engine.submit_image(ids, ImageGenParams(n=1, cfg_scale=1.0, temperature=0.0))
    assert [len(r.rows) for r in engine.scheduler.waiting] == [1]
    out = list(engine.run().values())[0]
    assert out.image_tokens[0].tolist() == unguided_greedy_reference(hf_model, ids, engine.spec.num_image_tokens)
