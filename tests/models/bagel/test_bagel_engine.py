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
