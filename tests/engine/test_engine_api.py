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


def test_step_streams_text_tokens_and_returns_each_request_once_when_finished(ckpt):
    engine = Engine(ckpt, num_kv_blocks=512)
    params = SamplingParams(n=2, max_tokens=9, seed=11, temperature=1.0, ignore_eos=True)
    text_id = engine.submit_text("stream this", params)
    image_id = engine.submit_image("an image beside it", ImageGenParams(n=1, seed=12))
    rejected_id = engine.submit_image("x", ImageGenParams(n=10_000))  # more rows than max_num_seqs: rejected
    streamed = {0: [], 1: []}
    finals = {}
    partial_steps = 0
    while engine.has_unfinished():
        outputs = engine.step()
        ids = [o.request_id for o in outputs]
        assert len(ids) == len(set(ids))
        for out in outputs:
            assert out.request_id not in finals
            if out.finished:
                finals[out.request_id] = out
            if out.request_id == text_id:
                for i, sample in enumerate(out.samples):
                    streamed[i] += sample.new_token_ids
                    assert streamed[i] == sample.token_ids
                partial_steps += not out.finished
    assert set(finals) == {text_id, image_id, rejected_id}
    assert finals[rejected_id].error is not None and finals[rejected_id].finished
    assert partial_steps == params.max_tokens - 1  # one output per step that gave the request a token
    alone = Engine(ckpt, num_kv_blocks=512).generate("stream this", params)[0]
    assert [s.token_ids for s in finals[text_id].samples] == [s.token_ids for s in alone.samples]
    assert finals[image_id].finish_reasons == ["length"] and len(finals[image_id].images) == 1
    assert engine.step() == []


def test_a_driver_queues_a_judge_request_the_moment_an_image_arrives(ckpt):
    engine = Engine(ckpt, num_kv_blocks=1024)
    judge_params = SamplingParams(max_tokens=6, seed=21, ignore_eos=True)
    image_ids = [engine.submit_image(f"picture {k}", ImageGenParams(n=1, seed=30 + k)) for k in range(3)]
    # A later image request, so the first images finish while others are still being drawn.
    image_ids.append(engine.submit_image("a late picture", ImageGenParams(n=2, seed=40)))
    judge_of: dict[int, int] = {}
    judged: dict[int, object] = {}
    images_done: list[int] = []
    images_in_flight_at_judge = []
    for _ in range(10_000):
        if not engine.has_unfinished():
            break
        for out in engine.step():
            if not out.finished:
                continue
            if out.request_id in image_ids:
                assert len(out.images) == len(out.image_tokens) > 0
                judge_of[engine.submit_text(f"judge image {out.request_id}", judge_params)] = out.request_id
                images_done.append(out.request_id)
                images_in_flight_at_judge.append(len(image_ids) - len(images_done))
            else:
                judged[judge_of[out.request_id]] = out
    assert set(judged) == set(image_ids)
    assert max(images_in_flight_at_judge) > 0  # a judge was queued while images were still being drawn
    reference = Engine(ckpt, num_kv_blocks=1024)
    for image_id, out in judged.items():
        assert out.token_ids == reference.generate(f"judge image {image_id}", judge_params)[0].token_ids


def test_abort_ends_a_running_request_and_frees_its_blocks(ckpt):
    engine = Engine(ckpt, num_kv_blocks=512)
    free_before = engine.block_manager.num_free_blocks
    params = SamplingParams(n=2, max_tokens=40, seed=5, ignore_eos=True)
    text_id = engine.submit_text("to be aborted", params)
    image_id = engine.submit_image("an image to abort", ImageGenParams(n=2, seed=6))
    for _ in range(4):
        engine.step()
    queued_id = engine.submit_text("never scheduled", params)
    out = engine.abort(text_id)
    assert out.finished and [s.finish_reason for s in out.samples] == ["abort", "abort"]
    full = Engine(ckpt, num_kv_blocks=512).generate("to be aborted", params)[0]
    for sample, whole in zip(out.samples, full.samples):
        assert 0 < len(sample.token_ids) < 40 and whole.token_ids[: len(sample.token_ids)] == sample.token_ids
    image = engine.abort(image_id)
    assert image.finish_reasons == ["abort", "abort"] and image.images == []
    assert image.image_tokens.shape[0] == 2 and image.image_tokens.shape[1] < engine.spec.num_image_tokens
    assert engine.abort(text_id) is None and engine.abort(10**9) is None
    assert engine.abort(queued_id).samples[0].token_ids == []
    assert engine.block_manager.num_free_blocks == free_before
    assert not engine.has_unfinished() and engine.run() == {}


def test_priority_is_validated_and_reaches_the_request(ckpt):
    engine = Engine(ckpt, num_kv_blocks=512)
    engine.submit_text("urgent", priority=-3)
    engine.submit_image("later", priority=7)
    assert [r.priority for r in engine.scheduler.waiting] == [-3, 7]
    for bad in (1.5, "high", True, None):
        with pytest.raises(ValueError, match="priority"):
            engine.submit_text("x", priority=bad)
        with pytest.raises(ValueError, match="priority"):
            engine.submit_image("x", priority=bad)
