"""Engine behaviour on a tiny random checkpoint: batch invariance, prefix sharing, preemption, bad input."""
import pytest

from unicorn import Engine, ImageGenParams, SamplingParams
from unicorn.models.janus_tiny import write_random_janus_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "janus"
    write_random_janus_checkpoint(path, preset="tiny", seed=0)
    return str(path)


def image_tokens(outputs):
    return [o.image_tokens.tolist() for o in outputs]


def test_same_seed_same_output_alone_and_in_a_busy_batch(ckpt):
    probe_image = ("a red circle", ImageGenParams(n=2, cfg_scale=5.0, temperature=1.0, top_k=40, seed=7))
    probe_text = ("describe a square", SamplingParams(temperature=0.9, top_p=0.9, max_tokens=12, seed=8))

    alone = Engine(ckpt, num_kv_blocks=512)
    alone_image = alone.generate_images(*probe_image)[0]
    alone_text = alone.generate(*probe_text)[0]

    busy = Engine(ckpt, num_kv_blocks=512, max_num_batched_tokens=48)  # chunked prefill, other batch shapes
    ids = []
    for k in range(3):
        ids.append(busy.submit_image(f"noise prompt number {k} with more words", ImageGenParams(n=3, seed=100 + k)))
        ids.append(busy.submit_text(f"another question {k}", SamplingParams(max_tokens=20, seed=200 + k)))
    image_id = busy.submit_image(*probe_image)
    text_id = busy.submit_text(*probe_text)
    results = busy.run()
    assert results[image_id].image_tokens.tolist() == alone_image.image_tokens.tolist()
    assert results[text_id].token_ids == alone_text.token_ids
    assert busy.stats.num_steps > 0 and all(results[i].error is None for i in ids)


def test_rollouts_share_the_prompt_and_unconditional_prompts_share_across_requests(ckpt):
    engine = Engine(ckpt, num_kv_blocks=512, block_size=4)
    prompts = ["a blue square next to a small green triangle", "three yellow stars in a row on black"]
    ids = [engine.prompts.image(p) for p in prompts]
    engine.submit_image(prompts[0], ImageGenParams(n=4, seed=1))
    out = engine.scheduler.schedule()
    # Before the fork only the two template rows (cond, uncond) compute the prompt.
    assert [item.num_new_tokens for item in out.rows] == [len(ids[0]), len(ids[0])]
    sampled = engine.runner.execute(out)
    engine.scheduler.update(out, sampled)
    request = engine.scheduler.running[0]
    assert len(request.rows) == 8
    full_prompt_blocks = len(ids[0]) // 4
    cond_tables = [request.sample_rows(i)[0].block_table for i in range(4)]
    for b in range(full_prompt_blocks):
        assert len({t[b] for t in cond_tables}) == 1
        assert engine.block_manager.ref_count(cond_tables[0][b]) == 4
    engine.run()
    # A second request whose prompt has the same length hits the cached content-free unconditional prompt.
    other = engine.spec.content_free(engine.prompts.image(prompts[1]))
    first = engine.spec.content_free(ids[0])
    engine.submit_image(prompts[1], ImageGenParams(n=1, seed=2))
    request = engine.scheduler.waiting[0]
    engine.step()
    uncond = request.rows[1]
    shared = 0
    while shared < min(len(first), len(other)) and first[shared] == other[shared]:
        shared += 1
    assert uncond.num_cached_tokens == (min(shared, len(other) - 1) // 4) * 4 > 0


def test_a_pool_too_small_for_the_load_preempts_and_still_gives_the_same_outputs(ckpt):
    prompts = [f"prompt {k} about shapes and colours" for k in range(4)]
    params = ImageGenParams(n=2, seed=5)
    roomy = Engine(ckpt, num_kv_blocks=1024, block_size=4)
    expected = image_tokens(roomy.generate_images(prompts, params))
    assert roomy.stats.num_preemptions == 0
    prompt_len = len(roomy.prompts.image(prompts[0]))
    one_request = 4 * -(-(prompt_len + roomy.spec.num_image_tokens) // 4)  # 2 samples x (cond, uncond) rows
    # Room for little more than one request, and no image reservation, so admitted requests must be preempted.
    tight = Engine(ckpt, num_kv_blocks=one_request + 8, block_size=4, image_row_fraction=1.0)
    got = image_tokens(tight.generate_images(prompts, params))
    assert tight.stats.num_preemptions > 0
    assert got == expected
    assert tight.block_manager.num_free_blocks == one_request + 8


def test_bad_requests_fail_alone_with_a_reason(ckpt):
    engine = Engine(ckpt, num_kv_blocks=256, max_model_len=64)
    long_prompt = "word " * 200
    outputs = engine.generate(["hello", long_prompt, "there"], SamplingParams(max_tokens=4, temperature=0))
    assert outputs[0].error is None and outputs[2].error is None
    assert "context" in outputs[1].error and outputs[1].samples == []
    images = engine.generate_images(["a cat", [1, 2, 99999]], ImageGenParams(n=1, seed=0))
    assert images[0].error is None and len(images[0].images) == 1
    assert "vocabulary" in images[1].error


@pytest.mark.parametrize("kwargs,match", [
    (dict(n=0), "n must be"),
    (dict(temperature=-1.0), "temperature"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_k=-2), "top_k"),
])
def test_bad_params(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplingParams(**kwargs)
    with pytest.raises(ValueError, match=match):
        ImageGenParams(**kwargs)


def test_fp8_kv_cache_runs_and_stays_close(ckpt):
    import torch

    from unicorn.kernels import cpu_ops

    exact = Engine(ckpt, num_kv_blocks=256, kernels="torch")
    fp8 = Engine(ckpt, num_kv_blocks=256, kv_cache_dtype="fp8_e4m3")
    # on the C++ decode kernel when it builds (it reads fp8 caches), else the torch reference
    assert fp8.runner.kv_caches[0].key.dtype == torch.float8_e4m3fn
    assert fp8.kernels == ("cpu" if cpu_ops.available() else "torch")
    prompt = {"prompt_token_ids": exact.prompts.image("a red circle")}
    ids = prompt["prompt_token_ids"]
    # Same first-step image logits within fp8 rounding; whole generations run to completion.
    a = exact.generate_images(ids, ImageGenParams(n=2, temperature=0.0))[0]
    b = fp8.generate_images(ids, ImageGenParams(n=2, temperature=0.0))[0]
    assert a.image_tokens.shape == b.image_tokens.shape
    assert (a.image_tokens[:, :4] == b.image_tokens[:, :4]).float().mean() >= 0.5
    with pytest.raises(ValueError, match="kv_cache_dtype"):
        Engine(ckpt, num_kv_blocks=8, kv_cache_dtype="int4")
