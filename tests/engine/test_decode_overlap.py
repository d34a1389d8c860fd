"""VQ decoding off the step loop: outputs identical with overlap_decode on or off, decode=False gives codes
only, and a failing decoder becomes the requests' error (never a hang)."""
import pytest
import torch

from unicorn import Engine, ImageGenParams, SamplingParams
from unicorn.models.janus_tiny import write_random_janus_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "janus"
    write_random_janus_checkpoint(path, preset="tiny", seed=0)
    return str(path)


def workload(engine, decode=True):
    ids = [engine.submit_image(f"picture {k}", ImageGenParams(n=1 + k % 3, seed=k, decode=decode)) for k in range(5)]
    text = engine.submit_text("and a question", SamplingParams(max_tokens=40, seed=9, ignore_eos=True))
    results = engine.run()
    return [results[i] for i in ids], results[text]


def test_outputs_are_identical_with_the_overlap_on_or_off(ckpt):
    with Engine(ckpt, num_kv_blocks=512, overlap_decode=True) as on, \
            Engine(ckpt, num_kv_blocks=512, overlap_decode=False) as off:
        images_on, text_on = workload(on)
        images_off, text_off = workload(off)
        assert on.decoder.overlap and on.decoder._thread is not None and off.decoder._thread is None
    assert text_on.token_ids == text_off.token_ids
    for a, b in zip(images_on, images_off):
        assert a.error is None and b.error is None
        assert torch.equal(a.image_tokens, b.image_tokens)
        assert a.pixel_values.shape[0] == a.image_tokens.shape[0] == len(a.images)
        assert torch.equal(a.pixel_values, b.pixel_values)
        assert [im.tobytes() for im in a.images] == [im.tobytes() for im in b.images]
    assert not on.decoder._thread.is_alive()  # closed by the with block


def test_decode_false_gives_the_codes_only(ckpt):
    engine = Engine(ckpt, num_kv_blocks=512)
    codes_only, _ = workload(engine, decode=False)
    decoded, _ = workload(Engine(ckpt, num_kv_blocks=512, overlap_decode=False))
    assert engine.decoder._thread is None  # nothing was handed to the decoder
    for a, b in zip(codes_only, decoded):
        assert a.pixel_values is None and a.images == [] and torch.equal(a.image_tokens, b.image_tokens)


@pytest.mark.parametrize("overlap", [True, False])
def test_a_failing_decoder_is_the_requests_error(ckpt, overlap):
    engine = Engine(ckpt, num_kv_blocks=512, overlap_decode=overlap)

    def broken(codes):
        raise RuntimeError("decoder out of memory")

    engine.model.decode_image_tokens = broken
    [out] = engine.generate_images("a cat", ImageGenParams(n=2, seed=1))
    assert out.error == "image decoding failed: RuntimeError: decoder out of memory"
    assert out.image_tokens.shape[0] == 2 and out.pixel_values is None
    assert not engine.has_unfinished()


def test_sleep_waits_for_the_images_still_decoding(ckpt):
    import time

    reference = Engine(ckpt, num_kv_blocks=512, overlap_decode=False).generate_images("a cat", ImageGenParams(n=2, seed=3))[0]
    engine = Engine(ckpt, num_kv_blocks=512, overlap_decode=True)
    real = engine.model.decode_image_tokens
    engine.model.decode_image_tokens = lambda codes: time.sleep(1.0) or real(codes)  # slower than the steps
    request_id = engine.submit_image("a cat", ImageGenParams(n=2, seed=3))
    while engine.scheduler.has_unfinished():
        assert engine.step() == []  # the image is not returned before its pixels exist
    assert engine.decoder.num_pending == 1
    engine.sleep(level=1)  # waits for the decode (it reads the codec's weights) before moving them
    assert engine.decoder.num_pending == 0
    engine.wake_up()
    out = engine.run()[request_id]
    assert out.error is None and torch.equal(out.pixel_values, reference.pixel_values)
    engine.close()
