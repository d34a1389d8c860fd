"""The public engine API the self-play loop drives: generate beside submit_*, streaming step(), abort, priority."""
import pytest

from unicorn import Engine, ImageGenParams, SamplingParams
from unicorn.models.janus_tiny import write_random_janus_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "janus"
    write_random_janus_checkpoint(path, preset="tiny", seed=0)
    return str(path)


def test_generate_runs_only_its_own_requests_and_keeps_the_others_results(ckpt):
    engine = Engine(ckpt, num_kv_blocks=512)
    reference = Engine(ckpt, num_kv_blocks=512)
    text_params = SamplingParams(max_tokens=30, seed=3, ignore_eos=True)
    image_params = ImageGenParams(n=2, seed=4)
    text_id = engine.submit_text("a queued question", text_params)
    image_id = engine.submit_image("a queued image", image_params)
    rejected_id = engine.submit_text(list(range(10_000)))  # longer than the context: rejected
    quick = engine.generate("a quick one", SamplingParams(max_tokens=2, seed=5, ignore_eos=True))
    assert len(quick) == 1 and len(quick[0].token_ids) == 2
    assert engine.scheduler.has_unfinished()  # generate() returned before the queued requests finished
    images = engine.generate_images("another image", ImageGenParams(n=1, seed=6))
    assert images[0].error is None
    results = engine.run()
    assert set(results) == {text_id, image_id, rejected_id}
    assert results[rejected_id].error is not None
    assert results[text_id].token_ids == reference.generate("a queued question", text_params)[0].token_ids
    expected = reference.generate_images("a queued image", image_params)[0].image_tokens
    assert results[image_id].image_tokens.tolist() == expected.tolist()
    assert engine.run() == {}
