"""A drawn image may have more codes than an understood image has features (vq_config.num_patches): the toy model
draws 16x16 codes and reads 8x8 features. The engine, the decoder and the trainer each use the right count."""
import json

import pytest
import torch

from unicorn import Engine, ImageGenParams, SamplingParams
from unicorn.cpr.schema import ImageRef, RecordError, T2IRecord
from unicorn.models import load_model, load_tokenizer
from unicorn.models.errors import CheckpointError
from unicorn.models.janus_tiny import write_random_janus_checkpoint
from unicorn.training.data import SampleEncoder, VQCodeSource


@pytest.fixture(scope="module")
def draw8_model(tmp_path_factory):
    """tiny preset: 32 px, 8 px understanding patches (4x4 = 16 features); the VQ downsamples by 4 (8x8 = 64 codes)."""
    path = str(tmp_path_factory.mktemp("draw8"))
    write_random_janus_checkpoint(path, preset="tiny", vq=dict(channel_multiplier=[1, 1, 2], num_patches=8))
    return path


def test_spec_counts_and_decoder_size(draw8_model):
    model = load_model(draw8_model)
    assert model.spec.num_image_tokens == 16 and model.spec.num_generated_image_tokens == 64
    pixels = model.decode_image_tokens(torch.zeros(2, 64, dtype=torch.long))
    assert tuple(pixels.shape) == (2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"\[batch, 64\]"):
        model.decode_image_tokens(torch.zeros(2, 16, dtype=torch.long))
    assert model.encode_pixels_to_tokens(pixels).shape == (2, 64)
    assert model.encode_images(pixels).shape[:2] == (2, 16)


def test_engine_draws_the_vq_grid_and_reads_the_vision_grid(draw8_model):
    engine = Engine(draw8_model, num_kv_blocks=64, seed=0)
    out = engine.generate_images("a red circle", ImageGenParams(n=2, cfg_scale=[1.0, 3.0], seed=0))[0]
    assert tuple(out.image_tokens.shape) == (2, 64) and out.images[0].size == (32, 32)
    ask = {"messages": [{"role": "user", "content": [{"type": "image", "image": out.pixel_values[0]},
                                                     {"type": "text", "text": "What is it?"}]}]}
    ids, placed = engine.prompts.text(ask)
    assert sum(t == engine.spec.image_token_id for t in ids) == 16
    reply = engine.generate([ask], SamplingParams(temperature=0.0, max_tokens=4))[0]
    assert reply.error is None and len(reply.token_ids) >= 1


def test_trainer_wants_the_generated_count(draw8_model, tmp_path):
    model = load_model(draw8_model)
    encoder = SampleEncoder(load_tokenizer(draw8_model), model.spec, str(tmp_path),
                            VQCodeSource(model.vqmodel, model.image_processing, model.spec))
    good = T2IRecord(id="a", category="c", prompt="a red circle", image=ImageRef(vq_codes=tuple(range(64))))
    assert encoder.length(good) == len(load_tokenizer(draw8_model).encode(
        encoder._prompt_and_target(good)[0], add_bos=True)) + 64
    bad = T2IRecord(id="b", category="c", prompt="a red circle", image=ImageRef(vq_codes=tuple(range(16))))
    with pytest.raises(RecordError, match="has 16 codes, the model uses 64"):
        encoder.length(bad)


def test_num_patches_that_contradict_the_image_size_are_refused(tmp_path):
    """9 codes x 4x downsampling = 36 px, but the tiny preset reads 32 px images: refused at load, naming the field."""
    write_random_janus_checkpoint(str(tmp_path), preset="tiny", vq=dict(channel_multiplier=[1, 1, 2], num_patches=8))
    config = json.loads((tmp_path / "config.json").read_text())
    config["vq_config"]["num_patches"] = 9
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"vq_config.num_patches=9 .* 36 px, but vision_config.image_size is 32"):
        load_model(str(tmp_path))
