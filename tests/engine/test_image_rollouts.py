"""Per-rollout settings inside one image request (ImageGenParams lists): the prompt is computed once and
forked, and image i equals a separate n=1 request with image i's settings."""
import pytest

from unicorn import Engine, ImageGenParams
from unicorn.toyworld.model import default_model_path

SCALES = [3.0, 3.5, 4.0, 5.0, 5.5, 6.0, 7.0, 8.0]  # the official recipe spreads CFG 3..8 over 8 rollouts
SEEDS = [11, 12, 13, 14, 15, 16, 17, 18]


@pytest.fixture(scope="module")
def toy():
    return str(default_model_path())


def separate(path, settings):
    """Each settings dict as its own n=1 request (all in one fresh engine, batch invariance holds)."""
    engine = Engine(path, num_kv_blocks=1024, block_size=4)
    ids = [engine.submit_image(PROMPT, ImageGenParams(n=1, **kw)) for kw in settings]
    results = engine.run()
    return [results[i].image_tokens[0].tolist() for i in ids]


PROMPT = "a red circle above a blue square"


def test_eight_cfg_scales_in_one_request_share_the_prompt_and_equal_eight_requests(toy):
    temps = [1.0, 0.9, 1.0, 0.8, 1.0, 1.0, 0.7, 1.0]
    top_k = [0, 0, 50, 0, 0, 20, 0, 0]
    top_p = [1.0, 1.0, 1.0, 0.9, 1.0, 1.0, 1.0, 0.95]
    params = ImageGenParams(n=8, cfg_scale=SCALES, temperature=temps, top_k=top_k, top_p=top_p, seed=SEEDS)
    engine = Engine(toy, num_kv_blocks=1024, block_size=4)
    prompt_len = len(engine.prompts.image(PROMPT))
    free_before = engine.block_manager.num_free_blocks
    request_id = engine.submit_image(PROMPT, params)
    request = engine.scheduler.waiting[0]
    engine.step()
    # One prefill of the prompt (cond) and of its unconditional form, then 8 images x (cond, uncond) rows.
    assert engine.stats.num_batched_tokens == 2 * prompt_len
    assert len(request.rows) == 16
    full = prompt_len // 4
    for k in (0, 1):  # cond rows, uncond rows
        tables = [request.sample_rows(i)[k].block_table for i in range(8)]
        for b in range(full):
            assert len({t[b] for t in tables}) == 1
            assert engine.block_manager.ref_count(tables[0][b]) == 8
    # The prompt's blocks are held once per template; after the next step each row owns only its tail block.
    used = lambda: free_before - engine.block_manager.num_free_blocks  # noqa: E731
    assert used() == 2 * -(-prompt_len // 4)
    engine.step()
    assert prompt_len % 4 and used() == 2 * full + 16
    got = engine.run()[request_id].image_tokens.tolist()
    settings = [dict(cfg_scale=SCALES[i], temperature=temps[i], top_k=top_k[i], top_p=top_p[i], seed=SEEDS[i])
                for i in range(8)]
    assert got == separate(toy, settings)


def test_scale_one_in_a_list_uses_the_conditional_logits_as_an_unguided_request(toy):
    params = ImageGenParams(n=3, cfg_scale=[1.0, 5.0, 1.0], seed=[4, 5, 6], temperature=1.0)
    engine = Engine(toy, num_kv_blocks=1024, block_size=4)
    got = engine.generate_images(PROMPT, params)[0].image_tokens.tolist()
    assert got == separate(toy, [dict(cfg_scale=1.0, seed=4), dict(cfg_scale=5.0, seed=5), dict(cfg_scale=1.0, seed=6)])
    # All scales 1.0: no unconditional rows at all.
    engine.submit_image(PROMPT, ImageGenParams(n=2, cfg_scale=[1.0, 1.0]))
    assert len(engine.scheduler.waiting[0].rows) == 1


@pytest.mark.parametrize("kwargs,match", [
    (dict(n=2, cfg_scale=[5.0]), r"cfg_scale has 1 values but n is 2"),
    (dict(n=2, seed=[1, 2, 3]), r"seed has 3 values but n is 2"),
    (dict(n=2, cfg_scale=[5.0, -1.0]), r"cfg_scale\[1\] must be >= 0"),
    (dict(n=2, temperature=[1.0, -0.5]), r"temperature\[1\] must be >= 0"),
    (dict(n=2, top_k=[1, 2.5]), r"top_k\[1\] must be an integer"),
    (dict(n=2, top_p=[0.0, 1.0]), r"top_p\[0\] must be in \(0, 1\]"),
    (dict(n=2, seed=[1, None]), r"seed\[1\] must be a non-negative integer"),
    (dict(n=2, seed=[1, -3]), r"seed\[1\] must be a non-negative integer"),
    (dict(n=1, cfg_scale="5"), r"cfg_scale must be a number"),
    (dict(decode="yes"), r"decode must be True or False"),
])
def test_bad_per_rollout_lists_fail_with_one_line_naming_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        ImageGenParams(**kwargs)
    assert "\n" not in str(err.value) and "ImageGenParams." in str(err.value)


def test_lists_are_stored_as_tuples_and_read_per_image():
    params = ImageGenParams(n=2, cfg_scale=[3, 8], top_k=[0, 5])
    assert params.cfg_scale == (3, 8) and params.value("cfg_scale", 1) == 8 and params.value("temperature", 1) == 1.0
    assert params.seeds is None and ImageGenParams(n=2, seed=[1, 2]).seeds == (1, 2)
    assert params.uses_cfg and not ImageGenParams(cfg_scale=1.0).uses_cfg
