"""Same-step prefix sharing on the embedded toy model: 64 judge-style requests with a common rubric, submitted
together with chunked prefill on, compute the rubric's blocks once, and their greedy outputs equal those of
the same prompts run one at a time without prefix caching."""
import pytest

from unicorn import Engine, SamplingParams
from unicorn.toyworld.model import default_model_path

RUBRIC = ("You are a careful judge. Score the drawing from 0 to 10 for how well it matches the caption, "
          "counting shapes, colours and positions. ")
PROMPTS = [RUBRIC + f"Caption {k}: {k % 7} red circles and {k % 5} blue squares." for k in range(64)]
GREEDY = SamplingParams(temperature=0.0, max_tokens=2, ignore_eos=True)
BLOCK = 16


@pytest.fixture(scope="module")
def model():
    return str(default_model_path())


def test_a_common_prefix_admitted_in_one_step_is_computed_once(model):
    engine = Engine(model, num_kv_blocks=1024, block_size=BLOCK, max_num_batched_tokens=1400, seed=0)
    ids = [engine.prompts.text(p)[0] for p in PROMPTS]
    common = 0
    while all(len(t) > common and t[common] == ids[0][common] for t in ids):
        common += 1
    shared_blocks = common // BLOCK
    assert shared_blocks >= 3  # a 48+ token rubric

    request_ids = [engine.submit_text(p, GREEDY) for p in PROMPTS]
    engine.step()
    admitted = len(engine.scheduler.running)
    assert admitted >= 60 and engine.scheduler.waiting  # most in the first step, the rest chunked / later
    results = engine.run()

    prompt_tokens = sum(len(t) for t in ids)
    saved = (len(PROMPTS) - 1) * shared_blocks * BLOCK
    assert engine.stats.prefix_hit_tokens == saved
    # Every token computed: prompts once each, minus the shared blocks of all but the first, plus the decode
    # tokens (the sampled tokens but the last).
    assert engine.stats.num_batched_tokens == prompt_tokens - saved + len(PROMPTS) * (GREEDY.max_tokens - 1)

    alone = Engine(model, num_kv_blocks=1024, block_size=BLOCK, enable_prefix_caching=False, seed=0)
    for rid, prompt in zip(request_ids, PROMPTS):
        assert results[rid].token_ids == alone.generate(prompt, GREEDY)[0].token_ids


def test_cfg_images_admitted_together_share_the_content_free_prompt(model):
    from unicorn import ImageGenParams

    prompts = ["a red circle", "a blue square", "a red square", "a blue circle"]
    params = [ImageGenParams(n=1, cfg_scale=4.0, temperature=0.0, seed=k) for k in range(len(prompts))]
    engine = Engine(model, num_kv_blocks=512, block_size=4, image_row_fraction=1.0, seed=0)
    ids = [engine.prompts.image(p) for p in prompts]
    assert len({len(t) for t in ids}) == 1  # one prompt length: one content-free unconditional prompt
    request_ids = [engine.submit_image(p, q) for p, q in zip(prompts, params)]
    requests = list(engine.scheduler.waiting)
    out = engine.scheduler.schedule()
    assert len(engine.scheduler.running) == len(prompts)  # all admitted in this one step
    length = len(ids[0])
    shared = (length - 1) // 4 * 4
    uncond_computed = [item.num_new_tokens for item in out.rows if item.seq.is_uncond]
    assert uncond_computed == [length] + [length - shared] * (len(prompts) - 1)
    assert [r.rows[1].num_cached_tokens for r in requests] == [0] + [shared] * (len(prompts) - 1)
    engine.scheduler.update(out, engine.runner.execute(out))
    results = engine.run()

    alone = Engine(model, num_kv_blocks=512, block_size=4, enable_prefix_caching=False, seed=0)
    for rid, prompt, q in zip(request_ids, prompts, params):
        expected = alone.generate_images(prompt, q)[0].image_tokens.tolist()
        assert results[rid].image_tokens.tolist() == expected
