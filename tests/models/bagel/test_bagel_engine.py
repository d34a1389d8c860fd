"""BAGEL through the engine (paged KV cache, continuous batching) against the plain recompute reference of the
official inferencer (tests/models/bagel/bagel_reference.py), on the tiny fp32 checkpoint."""
import pytest
import torch

from bagel_reference import ReferenceBagel
from unicorn.engine.llm_engine import Engine
from unicorn.engine.params import SamplingParams
from unicorn.models import load_tokenizer


@pytest.fixture(scope="module")
def ref(bagel_tiny_path):
    return ReferenceBagel(bagel_tiny_path)


@pytest.fixture(scope="module")
def tok(bagel_tiny_path):
    return load_tokenizer(bagel_tiny_path)


def _image(h, w, seed):
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


UNDERSTANDING = [  # (images, texts): the message's parts in order
    ([(28, 56, 1)], ["What is in this picture?"]),
    ([], ["Score: 7. The image shows two red circles"]),
    ([(56, 42, 2)], ["Describe the image in detail."]),
    ([(28, 56, 1), (42, 42, 3)], ["Compare the two images.", "Which one is brighter?"]),
    ([], ["The quick brown fox"]),
]


def _messages(images, texts):
    parts = [{"type": "image", "image": _image(*spec)} for spec in images] + [{"type": "text", "text": t} for t in texts]
    return {"messages": [{"role": "user", "content": parts}]}


def _expected(ref, tok, images, texts, max_tokens):
    inputs = [_image(*spec) for spec in images] + [tok.encode(t, add_bos=False) for t in texts]
    return ref.interleave_inference(inputs, understanding_output=True, max_think_token_n=max_tokens)


@pytest.mark.parametrize("budget", [4096, 14])  # 14: chunked prefill; a chunk end would split a block
def test_engine_greedy_understanding_equals_reference(bagel_tiny_path, ref, tok, budget):
    expected = [_expected(ref, tok, images, texts, 10) for images, texts in UNDERSTANDING]
    assert sum(len(e) == 10 for e in expected) >= 2  # the random weights decode past a token or two
    with Engine(bagel_tiny_path, max_num_batched_tokens=budget, block_size=8, num_kv_blocks=256) as engine:
        outs = engine.generate([_messages(*case) for case in UNDERSTANDING], SamplingParams(temperature=0.0, max_tokens=10))
        eos = engine.spec.eos_token_id
    got = [[t for t in o.token_ids if t != eos] for o in outs]
    assert got == expected
    for o, e in zip(outs, expected):
        assert o.finish_reason == ("length" if len(e) == 10 else "stop")


def test_prefix_cache_keys_an_image_block_by_its_image(bagel_tiny_path, ref, tok):
    # The first KV block (8 tokens) ends with <|vision_start|>, whose K/V depends on the image after it (the block
    # is bidirectional): a request with another image must not reuse that block; one with the same image may.
    words = [40, 41, 42, 43, 44]
    cases = [((28, 56, 1), []), ((28, 56, 4), []), ((28, 56, 1), [50, 51])]  # image, then maybe one more text
    expected = [ref.interleave_inference([words, _image(*img)] + ([more] if more else []), understanding_output=True,
                                         max_think_token_n=6) for img, more in cases]
    assert expected[0] != expected[1]
    with Engine(bagel_tiny_path, block_size=8, num_kv_blocks=64) as engine:
        ids = engine.model.token_ids
        got = []
        for img, more in cases:
            prompt = [ids.im_start, *words, ids.im_end, ids.vision_start, *[ids.image_pad] * 8, ids.vision_end]
            prompt += ([ids.im_start, *more, ids.im_end] if more else []) + [ids.im_start]
            (out,) = engine.generate([{"prompt_token_ids": prompt, "images": [_image(*img)]}],
                                     SamplingParams(temperature=0.0, max_tokens=6))
            got.append([t for t in out.token_ids if t != ids.im_end])
            assert out.num_cached_tokens == (16 if more else 0)  # the same image: its blocks are reused
    assert got == expected


LATENT_TOL = dict(rtol=1e-4, atol=1e-5)

T2I_REQUESTS = [  # prompt, (height, width), ImageGenParams fields
    ("A mountain lake at sunrise.", (64, 64), dict(n=3, cfg_scale=[3.0, 5.5, 8.0], num_timesteps=5)),  # 3-branch formula
    ("Two red circles left of a blue square.", (32, 48),
     dict(n=2, cfg_scale=[4.0, 1.0], cfg_img_scale=1.0, num_timesteps=7, cfg_interval=(0.0, 1.0),
          cfg_renorm_type="channel", cfg_renorm_min=[0.5, 0.0])),
    ("A mountain lake at sunrise.", (48, 32),
     dict(n=1, cfg_scale=5.0, cfg_img_scale=2.0, num_timesteps=4, cfg_renorm_type="text_channel")),
]


def _noise(h, w, seed):  # the engine's documented initial noise: randn of a generator seeded with the image's seed
    return torch.randn((h // 16) * (w // 16), 64, generator=torch.Generator().manual_seed(seed))


def _reference_latents(ref, tok, prompt, size, fields, seeds):
    settings = dict(num_timesteps=fields["num_timesteps"], cfg_interval=fields.get("cfg_interval", (0.4, 1.0)),
                    cfg_renorm_type=fields.get("cfg_renorm_type", "global"), cfg_img_scale=fields.get("cfg_img_scale", 1.5))
    scales = fields["cfg_scale"] if isinstance(fields["cfg_scale"], list) else [fields["cfg_scale"]] * fields["n"]
    mins = fields.get("cfg_renorm_min", 0.0)
    mins = mins if isinstance(mins, list) else [mins] * fields["n"]
    ids = tok.encode(prompt, add_bos=False)
    return [ref.interleave_inference([ids], noise=_noise(*size, s), image_shapes=size, cfg_text_scale=scale,
                                     cfg_renorm_min=m, **settings) for scale, m, s in zip(scales, mins, seeds)]


def test_engine_t2i_batched_requests_equal_reference(bagel_tiny_path, ref, tok):
    from unicorn.engine.params import ImageGenParams

    params, expected = [], []
    for k, (prompt, size, fields) in enumerate(T2I_REQUESTS):
        seeds = [100 * k + i for i in range(fields["n"])]
        params.append(ImageGenParams(height=size[0], width=size[1], seed=seeds, **fields))
        expected.append(_reference_latents(ref, tok, prompt, size, fields, seeds))
    with Engine(bagel_tiny_path, block_size=8, num_kv_blocks=256) as engine:
        ids = [engine.submit_image(T2I_REQUESTS[k][0], params[k]) for k in range(2)]
        engine.step()  # both contexts prefill
        engine.step()  # both run their first denoising step
        ids.append(engine.submit_image(T2I_REQUESTS[2][0], params[2]))  # joins between steps
        outs = engine.run()
        steps = engine.stats.num_steps
    for k, request_id in enumerate(ids):
        out = outs[request_id]
        assert out.error is None and out.finish_reasons == ["length"] * T2I_REQUESTS[k][2]["n"]
        for i, exp in enumerate(expected[k]):
            torch.testing.assert_close(out.latents[i], exp, **LATENT_TOL)
        h, w = T2I_REQUESTS[k][1]
        assert out.pixel_values.shape == (len(expected[k]), 3, h, w) and out.images[0].size == (w, h)
    pixels = (outs[ids[1]].pixel_values[0] * 0.5 + 0.5).clamp(0, 1) * 255
    torch.testing.assert_close(pixels, ref.decode_image(expected[1][0], 32, 48), rtol=1e-4, atol=1e-3)
    # denoising steps of the three requests ran together (4 + 6 + 3 steps and 3 prefills)
    assert steps == 1 + 6  # the longest request (6 steps) after the shared prefill step; C fits inside


def test_engine_t2i_preempted_and_next_to_text_equals_reference(bagel_tiny_path, ref, tok):
    # A small KV pool: the text requests (priority 0) grow and preempt the flow request (priority 1) mid-way; it
    # drops its blocks, keeps its latents and resumes at its step after recomputing its context.
    from unicorn.engine.params import ImageGenParams

    prompt, size, fields = T2I_REQUESTS[0]
    fields = dict(fields, num_timesteps=16)  # still denoising when the text rows run out of blocks
    seeds = [7, 8, 9]
    expected = _reference_latents(ref, tok, prompt, size, fields, seeds)
    texts = [_messages([], [f"Tell me a long story about {w}."]) for w in ("cats", "rivers", "the moon")]
    text_params = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)
    with Engine(bagel_tiny_path, block_size=8, num_kv_blocks=256) as engine:
        expected_text = [o.token_ids for o in engine.generate(texts, text_params)]
    with Engine(bagel_tiny_path, block_size=8, num_kv_blocks=24, image_row_fraction=1.0) as engine:
        image_id = engine.submit_image(prompt, ImageGenParams(height=size[0], width=size[1], seed=seeds, **fields),
                                       priority=1)
        engine.step()
        text_ids = [engine.submit_text(t, text_params) for t in texts]
        outs = engine.run()
        assert engine.stats.num_preemptions > 0
    assert [outs[i].token_ids for i in text_ids] == expected_text
    for got, exp in zip(outs[image_id].latents, expected):
        torch.testing.assert_close(got, exp, **LATENT_TOL)


def test_engine_flow_bad_input_is_one_line_error(bagel_tiny_path):
    from unicorn.engine.params import ImageGenParams

    with Engine(bagel_tiny_path, num_kv_blocks=64) as engine:
        (odd,) = engine.generate_images(["a cat"], ImageGenParams(height=40, width=64, num_timesteps=3))
        (large,) = engine.generate_images(["a cat"], ImageGenParams(height=512, width=64, num_timesteps=3))
        (renorm,) = engine.generate_images(["a cat"], ImageGenParams(num_timesteps=3, cfg_renorm_type="pixel"))
    assert "multiple of 16" in odd.error and "\n" not in odd.error
    assert "latent_pos_embed" in large.error
    assert "cfg_renorm_type" in renorm.error


def test_engine_image_conditioned_generation_equals_reference(bagel_tiny_path, ref, tok):
    """Editing (reflection's loser -> winner): the context image as VAE latents and ViT tokens, then the text; the
    text-unconditional context holds the image, the image-unconditional one the text (official
    interleave_inference); batched next to a plain T2I request."""
    from unicorn.engine.params import ImageGenParams

    image, vit_image = _image(32, 48, 5), _image(28, 42, 8)
    prompt = "Make the sky blue."
    settings = dict(num_timesteps=5, cfg_interval=(0.0, 1.0), cfg_renorm_type="text_channel")
    scales = [(4.0, 2.0), (3.0, 1.0)]  # 3 branches, then 2 (image CFG off)
    seeds = [11, 12]
    expected = [ref.interleave_inference([(image, vit_image), tok.encode(prompt, add_bos=False)],
                                         noise=_noise(32, 48, s), cfg_text_scale=t, cfg_img_scale=i, **settings)
                for (t, i), s in zip(scales, seeds)]
    edit = ImageGenParams(n=2, seed=seeds, cfg_scale=[t for t, _ in scales], cfg_img_scale=[i for _, i in scales],
                          **settings)
    t2i = ImageGenParams(n=1, height=32, width=32, seed=[3], num_timesteps=4, cfg_scale=4.0, cfg_img_scale=1.0)
    with Engine(bagel_tiny_path, block_size=8, num_kv_blocks=256) as engine:
        ids = [engine.submit_image({"prompt": prompt, "images": [(image, vit_image)]}, edit),
               engine.submit_image("A red circle.", t2i)]
        outs = engine.run()
    out = outs[ids[0]]
    assert out.error is None and out.pixel_values.shape == (2, 3, 32, 48)  # the context image's size
    for got, exp in zip(out.latents, expected):
        torch.testing.assert_close(got, exp, **LATENT_TOL)
    assert outs[ids[1]].error is None
    want_t2i = ref.interleave_inference([tok.encode("A red circle.", add_bos=False)], noise=_noise(32, 32, 3),
                                        image_shapes=(32, 32), num_timesteps=4, cfg_text_scale=4.0, cfg_img_scale=1.0)
    torch.testing.assert_close(outs[ids[1]].latents[0], want_t2i, **LATENT_TOL)


def test_engine_image_conditioned_bad_input_is_one_line_error(bagel_tiny_path):
    from unicorn.engine.params import ImageGenParams

    params = ImageGenParams(num_timesteps=3)
    with Engine(bagel_tiny_path, block_size=8, num_kv_blocks=64) as engine:
        odd, empty, vit = engine.generate_images([
            {"prompt": "x", "images": [(_image(40, 48, 1), _image(28, 42, 2))]},
            {"prompt": "x", "images": []},
            {"prompt": "x", "images": [(_image(32, 48, 1), _image(30, 42, 2))]},
        ], params)
    assert "image height 40 is not a positive multiple of 16" in odd.error
    assert "'images': [one or more images]" in empty.error
    assert "multiples of 14" in vit.error
    assert all("\n" not in o.error for o in (odd, empty, vit))


def test_engine_understanding_takes_a_pil_image_by_the_official_vit_transform(bagel_tiny_path):
    """A drawing as the engine returns it (a PIL image of any size, e.g. 64x64, not a multiple of 14) goes through the
    official ViT resize and normalization: the same tokens as the tensor that transform gives, given by hand."""
    import PIL.Image

    from unicorn.models import load_model
    from unicorn.models.bagel_image import to_tensor, vit_size

    arch = load_model(bagel_tiny_path).arch
    image = PIL.Image.fromarray((torch.rand(64, 48, 3, generator=torch.Generator().manual_seed(0)) * 255)
                                .to(torch.uint8).numpy())
    size = vit_size(arch, *image.size)
    assert size[0] % 14 == 0 and size[1] % 14 == 0 and size != image.size

    def ask(img):
        return {"messages": [{"role": "user", "content": [{"type": "image", "image": img},
                                                          {"type": "text", "text": "Score it."}]}]}

    params = SamplingParams(temperature=0.0, max_tokens=6)
    with Engine(bagel_tiny_path, block_size=8, num_kv_blocks=64) as engine:
        pil, tensor = engine.generate([ask(image), ask(to_tensor(image, size))], params)
    assert pil.error is None and tensor.error is None
    assert pil.token_ids == tensor.token_ids and len(pil.token_ids) == 6
