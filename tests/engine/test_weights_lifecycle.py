"""Weights between rounds: Engine.update_weights (directory / state dict), sleep(level) / wake_up.

Two tiny random checkpoints A and B (same architecture and tokenizer, different seeds); an engine on A updated to B
must give token-exact the outputs of a fresh engine on B, and none of A's cached KV blocks may be reused after.
"""
import gc
import os
import shutil
import weakref

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from unicorn import Engine, ImageGenParams, SamplingParams
from unicorn.engine.device_memory import is_discarded
from unicorn.models import CheckpointError
from unicorn.models.janus_tiny import write_random_janus_checkpoint

TEXT = SamplingParams(temperature=0.0, max_tokens=6)
IMAGE = ImageGenParams(n=2, cfg_scale=3.0, temperature=0.0)  # greedy: random tiny logits are near-flat
RUBRIC = "judge the picture of a red circle above a blue square carefully"  # long enough for full cached blocks
KW = dict(num_kv_blocks=160, block_size=4)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    return (write_random_janus_checkpoint(str(root / "a"), preset="tiny", seed=0),
            write_random_janus_checkpoint(str(root / "b"), preset="tiny", seed=1))


def _image(seed=0, size=32):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8))


def outputs(engine):
    """Greedy text (plain and with an image), CFG image codes and their decoded pixels."""
    look = {"messages": [{"role": "user", "content": [{"type": "image", "image": _image()},
                                                      {"type": "text", "text": "what is this"}]}]}
    text = [o.token_ids for o in engine.generate([RUBRIC, look], TEXT)]
    image = engine.generate_images(["a red circle"], IMAGE)[0]
    return text, image.image_tokens.tolist(), engine.model.decode_image_tokens(image.image_tokens)


def assert_same(got, expected):
    assert got[:2] == expected[:2]
    torch.testing.assert_close(got[2], expected[2], rtol=0, atol=0)


@pytest.fixture(scope="module")
def expected(ckpts):
    return tuple(outputs(Engine(path, **KW)) for path in ckpts)


def snapshot(engine):
    return {k: v.clone() for k, v in engine.model.state_dict().items()}


def test_expected_outputs_of_a_and_b_differ(expected):
    a, b = expected
    assert a[0][0] != b[0][0] and a[0][1] != b[0][1] and a[1] != b[1]


def test_update_from_a_directory_equals_a_fresh_engine_and_reuses_no_block_computed_before(ckpts, expected):
    engine = Engine(ckpts[0], **KW)
    assert_same(outputs(engine), expected[0])
    again = engine.generate([RUBRIC], TEXT)[0]
    assert again.num_cached_tokens > 0  # A's blocks of the rubric are in the prefix cache
    params = [p for p in engine.model.parameters()]
    pointers = [p.data_ptr() for p in params]

    engine.update_weights(ckpts[1])
    after = engine.generate([RUBRIC], TEXT)[0]
    assert after.num_cached_tokens == 0  # none of A's blocks is reused
    assert after.token_ids == expected[1][0][0]
    assert_same(outputs(engine), expected[1])
    assert [p.data_ptr() for p in engine.model.parameters()] == pointers  # copied in place
    assert engine.generate([RUBRIC], TEXT)[0].num_cached_tokens > 0  # the cache works again, with B's blocks


def test_update_from_a_state_dict_with_or_without_the_frozen_codec(ckpts, expected):
    engine = Engine(ckpts[0], **KW)
    a_codec = {k: v.clone() for k, v in engine.model.vqmodel.state_dict().items()}
    b_state = Engine(ckpts[1], num_kv_blocks=8).model.state_dict()
    # The trainer's state dict (Trainer.full_janus_state_dict) has no VQ codec: it keeps A's.
    engine.update_weights({k: v for k, v in b_state.items() if not k.startswith("vqmodel.")})
    got = outputs(engine)
    assert got[:2] == expected[1][:2]
    for k, v in engine.model.vqmodel.state_dict().items():
        assert torch.equal(v, a_codec[k])
    engine.update_weights({k: v.double() for k, v in b_state.items()})  # cast to the engine's dtype on copy
    assert engine.model.lm_head.weight.dtype == torch.float32
    assert_same(outputs(engine), expected[1])


def _bad_state_dicts(state):
    keys = list(state)
    last = keys[-1]
    yield {**state, "model.lm_head.weight": state["lm_head.weight"]}, "unknown state-dict key 'model.lm_head.weight'"
    yield {k: v for k, v in state.items() if k != "lm_head.weight"}, "missing tensor 'lm_head.weight'"
    yield {**state, last: torch.zeros(2, 3)}, f"state-dict tensor '{last}' has shape (2, 3)"
    yield {**state, last: "weights"}, f"state-dict entry '{last}' is a str"


def test_bad_weights_say_which_tensor_and_leave_the_engine_as_it_was(ckpts, expected, tmp_path):
    engine = Engine(ckpts[0], **KW)
    before = snapshot(engine)
    b_state = Engine(ckpts[1], num_kv_blocks=8).model.state_dict()
    for bad, message in _bad_state_dicts(b_state):
        with pytest.raises(CheckpointError) as err:
            engine.update_weights(bad)
        assert message in str(err.value) and "\n" not in str(err.value)

    # A directory whose last tensor (in file order) has the wrong shape: nothing before it may have been copied.
    broken = tmp_path / "broken"
    shutil.copytree(ckpts[1], broken)
    tensors = load_file(broken / "model.safetensors")
    last = sorted(tensors)[-1]
    tensors[last] = torch.zeros(3)
    save_file(tensors, broken / "model.safetensors")
    with pytest.raises(CheckpointError, match=f"tensor '{last}' in model.safetensors has shape \\(3,\\)"):
        engine.update_weights(str(broken))
    del tensors[last]
    lost = sorted(k for k in tensors if not k.startswith("model.vqmodel."))[-1]  # (the codec may be left out)
    del tensors[lost]
    save_file(tensors, broken / "model.safetensors")
    with pytest.raises(CheckpointError, match=f"missing tensor '{lost}'"):
        engine.update_weights(str(broken))
    tensors[lost] = b_state[lost[len("model."):]]
    tensors["model.extra.weight"] = torch.zeros(1)
    save_file(tensors, broken / "model.safetensors")
    with pytest.raises(CheckpointError, match="unknown tensor 'model.extra.weight' in model.safetensors"):
        engine.update_weights(str(broken))

    for k, v in engine.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert_same(outputs(engine), expected[0])


def test_update_sleep_and_wake_are_refused_while_requests_are_in_flight(ckpts):
    engine = Engine(ckpts[0], **KW)
    engine.submit_text(RUBRIC, TEXT)
    for call in (lambda: engine.update_weights(ckpts[1]), lambda: engine.sleep(1), lambda: engine.sleep(2)):
        with pytest.raises(RuntimeError, match="needs an idle engine: 0 running and 1 waiting"):
            call()
    assert engine.sleep_level == 0
    with pytest.raises(RuntimeError, match="not asleep"):
        engine.wake_up()
    with pytest.raises(ValueError, match="sleep level"):
        Engine(ckpts[0], num_kv_blocks=8).sleep(3)


def test_sleep_level_1_frees_the_kv_pool_and_wakes_to_the_same_outputs(ckpts, expected):
    engine = Engine(ckpts[0], **KW)
    assert_same(outputs(engine), expected[0])
    shape, dtype = engine.runner.kv_caches[0].key.shape, engine.runner.kv_caches[0].key.dtype
    refs = [weakref.ref(t) for c in engine.runner.kv_caches for t in (c.key, c.value)]

    engine.sleep(1)
    gc.collect()
    assert engine.sleep_level == 1 and engine.runner.kv_caches == []
    assert all(r() is None for r in refs)  # no reference to the pool's tensors is left: their memory is freed
    assert not engine.block_manager.cached_blocks
    for call in (lambda: engine.submit_text(RUBRIC, TEXT), lambda: engine.submit_image("a cat", IMAGE),
                 lambda: engine.submit_text([10 ** 6], TEXT), engine.step, lambda: engine.generate([RUBRIC], TEXT)):
        with pytest.raises(RuntimeError, match=r"asleep \(level 1\): call wake_up\(\)"):
            call()
    with pytest.raises(RuntimeError, match="already asleep"):
        engine.sleep(2)

    engine.wake_up()
    assert engine.sleep_level == 0
    assert [(c.key.shape, c.key.dtype) for c in engine.runner.kv_caches] == [(shape, dtype)] * engine.spec.num_layers
    assert engine.generate([RUBRIC], TEXT)[0].num_cached_tokens == 0  # the old pool's blocks are gone
    assert_same(outputs(engine), expected[0])


def test_update_while_asleep_at_level_1_or_on_wake(ckpts, expected):
    engine = Engine(ckpts[0], **KW)
    engine.sleep(1)
    engine.update_weights(ckpts[1])
    engine.wake_up()
    assert_same(outputs(engine), expected[1])
    engine.sleep(1)
    engine.wake_up(weights=ckpts[0])
    assert_same(outputs(engine), expected[0])


def test_sleep_level_2_discards_the_weights_and_wakes_from_the_last_directory_or_given_weights(ckpts, expected):
    engine = Engine(ckpts[0], **KW)
    engine.generate([RUBRIC], TEXT)
    engine.sleep(2)
    lm_head = engine.model.lm_head.weight
    assert is_discarded(lm_head) and lm_head.untyped_storage().nbytes() == 0 and lm_head.shape == (384, 48)
    assert not any(is_discarded(t) for t in engine.model.vqmodel.state_dict().values())  # frozen: kept on host
    with pytest.raises(RuntimeError, match="wake_up\\(weights=...\\)"):
        engine.update_weights(ckpts[1])
    engine.wake_up()  # reloads model_path
    assert not any(is_discarded(t) for t in engine.model.state_dict().values())
    assert engine.generate([RUBRIC], TEXT)[0].num_cached_tokens == 0
    assert_same(outputs(engine), expected[0])

    b_state = Engine(ckpts[1], num_kv_blocks=8).model.state_dict()
    trainer_like = {k: v for k, v in b_state.items() if not k.startswith("vqmodel.")}
    engine.update_weights(trainer_like)
    engine.sleep(2)
    with pytest.raises(ValueError, match="needs weights="):
        engine.wake_up()  # the last weights came from a state dict
    with pytest.raises(CheckpointError, match="missing tensor 'lm_head.weight'"):
        engine.wake_up(weights={k: v for k, v in trainer_like.items() if k != "lm_head.weight"})
    assert engine.sleep_level == 2 and is_discarded(engine.model.lm_head.weight)  # still asleep, nothing allocated
    engine.wake_up(weights=trainer_like)
    assert outputs(engine)[:2] == expected[1][:2]  # A's codec was kept: same codes as B, A's pixels
    engine.sleep(2)
    engine.wake_up(weights=ckpts[1])
    assert_same(outputs(engine), expected[1])


def test_tied_lm_head_updates_through_either_name(tmp_path):
    paths = [write_random_janus_checkpoint(str(tmp_path / f"t{seed}"), preset="tiny", seed=seed,
                                           tie_word_embeddings=True) for seed in (0, 1)]
    engine = Engine(paths[0], num_kv_blocks=64)
    model = engine.model
    assert model.lm_head.weight is model.language_model.embed_tokens.weight
    fresh = Engine(paths[1], num_kv_blocks=64)
    want = fresh.generate([RUBRIC], TEXT)[0].token_ids
    engine.update_weights(paths[1])  # the tied export has no lm_head.weight
    assert engine.generate([RUBRIC], TEXT)[0].token_ids == want
    state = fresh.model.state_dict()  # both names
    engine.update_weights(paths[0])
    engine.update_weights({k: v for k, v in state.items() if k != "language_model.embed_tokens.weight"})
    assert engine.generate([RUBRIC], TEXT)[0].token_ids == want
    assert model.lm_head.weight is model.language_model.embed_tokens.weight
    other = state["lm_head.weight"] + 1
    with pytest.raises(CheckpointError, match="are tied but differ"):
        engine.update_weights({**state, "lm_head.weight": other})


def test_reset_prefix_cache_and_reseed_make_a_kept_engine_answer_as_a_fresh_one(ckpts):
    """What ``unicorn improve`` does before each stage on its kept engine: requests without a seed of their own and
    prompts seen before then get what a fresh ``Engine(..., seed=s)`` gives them."""
    sampled = SamplingParams(temperature=1.0, max_tokens=6)  # no seed: drawn from the engine's seed stream
    fresh = Engine(ckpts[0], seed=7, **KW).generate([RUBRIC, RUBRIC], sampled)
    engine = Engine(ckpts[0], seed=0, **KW)
    engine.generate([RUBRIC], sampled)
    assert engine.generate([RUBRIC], TEXT)[0].num_cached_tokens > 0
    engine.reseed(7)
    engine.reset_prefix_cache()
    got = engine.generate([RUBRIC, RUBRIC], sampled)
    assert [o.token_ids for o in got] == [o.token_ids for o in fresh]
    assert got[0].num_cached_tokens == 0
    engine.submit_text(RUBRIC, TEXT)
    with pytest.raises(RuntimeError, match="reset_prefix_cache needs an idle engine"):
        engine.reset_prefix_cache()
