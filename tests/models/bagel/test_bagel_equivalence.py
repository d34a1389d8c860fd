"""unicorn's BAGEL (cached contexts, batched rows and CFG branches) against the plain recompute reference of the
official inferencer, on the tiny fp32 checkpoint."""
import pytest
import torch

from bagel_reference import ReferenceBagel
from unicorn.models import load_tokenizer
from unicorn.models.bagel_flow import FlowParams
from unicorn.models.bagel_infer import BagelInference, ImageJob

LATENT_TOL = dict(rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def ref(bagel_tiny_path):
    return ReferenceBagel(bagel_tiny_path)


@pytest.fixture(scope="module")
def tok(bagel_tiny_path):
    return load_tokenizer(bagel_tiny_path)


def _image(h, w, seed):
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _noise(h, w, seed):
    return torch.randn((h // 16) * (w // 16), 64, generator=torch.Generator().manual_seed(seed))


def test_greedy_understanding_equals_reference_batched(bagel_tiny, ref, tok):
    requests = [
        (_image(28, 56, 1), tok.encode("What is in this picture?", add_bos=False)),
        (_image(56, 42, 2), tok.encode("Describe the image in detail.", add_bos=False)),
        (None, tok.encode("Score: 7. The image shows two red circles", add_bos=False)),
    ]
    expected = [ref.interleave_inference(([img] if img is not None else []) + [ids], understanding_output=True,
                                         max_think_token_n=10) for img, ids in requests]
    assert any(len(e) == 10 for e in expected)  # random weights still decode more than a token or two
    infer = BagelInference(bagel_tiny)
    contexts = [infer.new_context() for _ in requests]
    with_image = [i for i, (img, _) in enumerate(requests) if img is not None]
    infer.add_vit_images([contexts[i] for i in with_image], [requests[i][0] for i in with_image])
    infer.add_text(contexts, [ids for _, ids in requests])
    assert infer.generate_text(contexts, max_tokens=10) == expected


T2I_CASES = {
    "2 branches (notebook T2I)": dict(cfg_text_scale=4.0, cfg_img_scale=1.0),
    "3 branches (official default)": dict(cfg_text_scale=4.0, cfg_img_scale=1.5),
    "3 branches, channel renorm": dict(cfg_text_scale=3.0, cfg_img_scale=2.0, cfg_renorm_type="channel",
                                       cfg_renorm_min=0.5, cfg_interval=(0.0, 1.0)),
    "text_channel renorm": dict(cfg_text_scale=5.0, cfg_img_scale=1.5, cfg_renorm_type="text_channel"),
}


@pytest.mark.parametrize("case", sorted(T2I_CASES))
def test_t2i_final_latents_equal_reference(bagel_tiny, ref, tok, case):
    settings = dict(num_timesteps=6, timestep_shift=3.0, **T2I_CASES[case])
    ids = tok.encode("A photo of a cat sitting on a red sofa.", add_bos=False)
    noise = _noise(64, 48, 3)
    ref.num_forwards = 0
    expected = ref.interleave_inference([ids], noise=noise, image_shapes=(64, 48), **settings)
    infer = BagelInference(bagel_tiny)
    ctx, uncond = infer.new_context(), infer.new_context()
    infer.add_text([ctx], [ids])
    (got,) = infer.generate_images([ImageJob(ctx, uncond, 64, 48, noise, FlowParams(**settings))])
    torch.testing.assert_close(got, expected, **LATENT_TOL)
    assert infer.num_forwards == 1 + 5  # the prefill, then one forward per step for all branches
    before = infer.num_forwards
    (sequential,) = infer.generate_images_sequential([ImageJob(ctx, uncond, 64, 48, noise, FlowParams(**settings))])
    torch.testing.assert_close(sequential, expected, **LATENT_TOL)
    assert infer.num_forwards - before == ref.num_forwards  # one per branch and step, as the official loop
    assert not torch.allclose(got, noise, atol=1e-2)


def test_batched_requests_of_different_resolutions_and_settings(bagel_tiny, ref, tok):
    jobs_spec = [
        ("A mountain lake at sunrise.", (64, 64), dict(num_timesteps=5, cfg_text_scale=4.0, cfg_img_scale=1.5)),
        ("Two red circles left of a blue square.", (32, 48), dict(num_timesteps=7, cfg_text_scale=8.0, cfg_img_scale=1.0,
                                                                   cfg_interval=(0.0, 1.0))),
        ("A mountain lake at sunrise.", (64, 64), dict(num_timesteps=5, cfg_text_scale=3.0, cfg_img_scale=1.0)),
    ]
    expected, jobs = [], []
    infer = BagelInference(bagel_tiny)
    uncond = infer.new_context()  # the empty text-unconditional context, shared by every request
    for k, (prompt, (h, w), settings) in enumerate(jobs_spec):
        ids = tok.encode(prompt, add_bos=False)
        noise = _noise(h, w, 10 + k)
        expected.append(ref.interleave_inference([ids], noise=noise, image_shapes=(h, w), **settings))
        ctx = infer.new_context()
        infer.add_text([ctx], [ids])
        jobs.append(ImageJob(ctx, uncond, h, w, noise, FlowParams(**settings)))
    for got, exp in zip(infer.generate_images(jobs), expected):
        torch.testing.assert_close(got, exp, **LATENT_TOL)


def test_image_conditioned_generation_and_decode(bagel_tiny, ref, tok):
    image = _image(32, 48, 5)
    vit_image = _image(28, 42, 8)  # what the ViT transform makes of it (stride 14)
    vae_noise = torch.randn(16, 4, 6, generator=torch.Generator().manual_seed(6))
    ids = tok.encode("Make the sky blue.", add_bos=False)
    settings = dict(num_timesteps=5, cfg_text_scale=4.0, cfg_img_scale=2.0, cfg_interval=(0.0, 1.0),
                    cfg_renorm_type="text_channel")
    noise = _noise(32, 48, 7)
    expected = ref.interleave_inference([(image, vit_image), ids], noise=noise, vae_noises=[vae_noise], **settings)
    infer = BagelInference(bagel_tiny)
    ctx = infer.new_context()
    infer.add_vae_images([ctx], [image], [vae_noise])
    infer.add_vit_images([ctx], [vit_image])
    text_uncond = ctx.fork()
    img_uncond = infer.new_context()
    infer.add_text([ctx, img_uncond], [ids, ids])
    (got,) = infer.generate_images([ImageJob(ctx, text_uncond, 32, 48, noise, FlowParams(**settings), img_uncond)])
    torch.testing.assert_close(got, expected, **LATENT_TOL)
    pixels = (bagel_tiny.decode_latents(got, 32, 48) * 0.5 + 0.5).clamp(0, 1) * 255
    torch.testing.assert_close(pixels, ref.decode_image(expected, 32, 48), rtol=1e-4, atol=1e-3)
