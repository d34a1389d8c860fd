"""Our Janus against transformers' JanusForConditionalGeneration on tiny random checkpoints (fp32, CPU)."""
import pytest
import torch

from unicorn.attention import AttentionMetadata
from unicorn.models import load_model

from janus_reference import IMAGE, make_caches, prompt_with_image, run_paged_in_steps

ATOL = 1e-4


@pytest.fixture(scope="module")
def pair(hf_checkpoint):
    hf, path = hf_checkpoint
    return hf, load_model(path)


def _prompt_embeds(model, ids, pixel_values):
    embeds = model.embed_text(ids)
    features = model.encode_images(pixel_values).reshape(-1, embeds.shape[-1])
    embeds = embeds.clone()
    embeds[ids == model.spec.image_token_id] = features
    return embeds


@torch.no_grad()
def test_text_logits_with_image_match(pair):
    hf, ours = pair
    ids = prompt_with_image()
    pixels = torch.randn(1, 3, 32, 32)
    ref = hf(input_ids=ids[None], pixel_values=pixels).logits[0]
    embeds = _prompt_embeds(ours, ids, pixels)
    meta = AttentionMetadata.build(query_lens=[len(ids)], seq_lens=[len(ids)], block_tables=[[1, 2, 3, 4]], block_size=8)
    hidden = ours(embeds, torch.arange(len(ids)), make_caches(ours.spec, 5, 8), meta)
    torch.testing.assert_close(ours.text_logits(hidden), ref, atol=ATOL, rtol=1e-4)


@torch.no_grad()
def test_image_generation_head_and_embeddings_match(pair):
    hf, ours = pair
    image_ids = torch.randint(0, ours.spec.image_vocab_size, (9,))
    torch.testing.assert_close(ours.embed_image_tokens(image_ids), hf.prepare_embeddings_for_image_generation(image_ids))
    prompt = torch.tensor([1, 40, 41, 42, 251])
    embeds = torch.cat([ours.embed_text(prompt), ours.embed_image_tokens(image_ids)])
    ref_hidden = hf.model.language_model(inputs_embeds=embeds[None]).last_hidden_state[0]
    ref = hf.model.generation_head(ref_hidden)
    hidden = ours.forward_dense(embeds[None], torch.arange(len(embeds))[None])[0]
    torch.testing.assert_close(ours.image_logits(hidden), ref, atol=ATOL, rtol=1e-4)


@torch.no_grad()
def test_vision_features_match(pair):
    hf, ours = pair
    pixels = torch.randn(3, 3, 32, 32)
    ref = hf.model.get_image_features(pixels).pooler_output
    torch.testing.assert_close(ours.encode_images(pixels), ref, atol=ATOL, rtol=1e-4)


@torch.no_grad()
def test_vq_decode_and_encode_match(pair):
    hf, ours = pair
    ids = torch.randint(0, ours.spec.image_vocab_size, (2, ours.spec.num_image_tokens))
    ref = hf.decode_image_tokens(ids).permute(0, 3, 1, 2)
    assert torch.equal(ours.decode_image_tokens(ids), ref)  # the same ops in the same order: bit-identical
    pixels = torch.randn(2, 3, 32, 32)
    ref_ids = hf.model.vqmodel.encode(pixels).image_tokens.view(2, -1)
    assert torch.equal(ours.encode_pixels_to_tokens(pixels, l2_normalized=False), ref_ids)
    assert ours.encode_pixels_to_tokens(pixels).shape == (2, ours.spec.num_image_tokens)


@torch.no_grad()
def test_paged_chunks_and_decode_equal_dense(pair):
    _, ours = pair
    lengths = [23, 18]
    gen = torch.Generator().manual_seed(1)
    embeds = [ours.embed_text(torch.randint(0, 240, (n,), generator=gen)) for n in lengths]
    # prefill in two chunks (uneven across sequences), then single-token decode steps; block_size 4
    steps = [[9, 5], [10, 9], [1, 1], [1, 1], [1, 0], [1, 1], [0, 1]]
    assert [sum(s[i] for s in steps) for i in range(2)] == lengths
    paged = run_paged_in_steps(ours, embeds, steps, block_size=4)
    for e, p in zip(embeds, paged):
        dense = ours.forward_dense(e[None], torch.arange(len(e))[None])[0]
        torch.testing.assert_close(p, dense, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_dense_with_left_padding_matches_unpadded(pair):
    _, ours = pair
    ids = torch.randint(3, 240, (6,))
    embeds = ours.embed_text(ids)
    ref = ours.forward_dense(embeds[None], torch.arange(6)[None])[0]
    padded = torch.cat([torch.zeros(3, embeds.shape[1]), embeds])[None]
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1]])
    positions = torch.clamp(torch.arange(9) - 3, min=0)[None]
    out = ours.forward_dense(padded, positions, mask)[0, 3:]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_spec_reads_special_ids(pair):
    hf, ours = pair
    spec = ours.spec
    assert (spec.bos_token_id, spec.eos_token_id, spec.pad_token_id) == (1, 2, 0)
    assert (spec.image_token_id, spec.boi_token_id, spec.eoi_token_id) == (IMAGE, 251, 252)
    assert spec.num_image_tokens == 16 and spec.image_size == 32
    assert spec.num_kv_heads == hf.config.text_config.num_key_value_heads
    tied = ours.lm_head.weight.data_ptr() == ours.language_model.embed_tokens.weight.data_ptr()
    assert tied == hf.config.tie_word_embeddings
