"""The CPU KV pool: mapped lazily, page by page, unless populated (Engine(populate_kv_cache=True)), with the same
outputs either way."""
import os

import pytest
import torch

from unicorn import Engine, ImageGenParams, SamplingParams
from unicorn.engine.kv_cache import allocate_kv_caches, populate_kv_caches
from unicorn.models.janus_tiny import write_random_janus_checkpoint

POOL_SHAPE = dict(num_layers=2, num_blocks=512, block_size=16, num_kv_heads=4, head_dim=64)  # 32 MiB of fp32


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux's /proc to count resident pages")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float8_e4m3fn])
def test_the_pool_takes_ram_when_written_and_all_of_it_when_populated(dtype):
    before = resident_bytes()
    caches = allocate_kv_caches(**POOL_SHAPE, dtype=dtype, device=torch.device("cpu"))
    pool = sum(t.numel() * t.element_size() for c in caches for t in (c.key, c.value))
    assert resident_bytes() - before < pool // 8  # allocated, not yet touched
    populate_kv_caches(caches)
    assert resident_bytes() - before > pool * 9 // 10
    assert all(not t.view(torch.uint8).any() for c in caches for t in (c.key, c.value))  # still zeros


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_random_janus_checkpoint(str(tmp_path_factory.mktemp("pool") / "tiny"), preset="tiny", seed=0)


def _outputs(engine):
    text = [o.token_ids for o in engine.generate(["a long enough prompt about red circles", "hi"],
                                                 SamplingParams(temperature=1.0, max_tokens=8, seed=3))]
    image = engine.generate_images(["a red circle"], ImageGenParams(n=2, cfg_scale=3.0, temperature=1.0, seed=5,
                                                                    decode=False))[0]
    return text, image.image_tokens.tolist()


def test_a_populated_pool_gives_the_same_outputs_and_is_populated_again_on_wake_up(ckpt):
    lazy = Engine(ckpt, num_kv_blocks=64, block_size=4)
    populated = Engine(ckpt, num_kv_blocks=64, block_size=4, populate_kv_cache=True)
    assert lazy.stats.kv_populate_s == 0.0 and populated.stats.kv_populate_s > 0.0
    assert _outputs(populated) == _outputs(lazy)
    populated.sleep(1)
    first = populated.stats.kv_populate_s
    populated.wake_up()
    assert populated.stats.kv_populate_s > first
    assert _outputs(populated) == _outputs(lazy)


@pytest.mark.parametrize("flag", ["cfg_head_mix", "overlap_decode", "populate_kv_cache", "tune_host_malloc"])
def test_the_engine_flags_must_be_bools(ckpt, flag):
    with pytest.raises(ValueError, match=f"{flag} must be True or False, got 'yes'"):
        Engine(ckpt, num_kv_blocks=8, block_size=4, **{flag: "yes"})
