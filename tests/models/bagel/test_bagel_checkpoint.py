"""Loading the official BAGEL directory layout: configs, tensor-derived quirks, one-line errors."""
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from unicorn.models import CheckpointError, load_model, load_tokenizer
from unicorn.models.bagel import BagelModel, BagelTokenIds
from unicorn.models.bagel_tiny import arch_for_preset


def _copy(src, tmp_path) -> str:
    dst = str(tmp_path / "ckpt")
    shutil.copytree(src, dst)
    return dst


def _edit_json(path, name, **changes):
    file = os.path.join(path, name)
    with open(file) as f:
        data = json.load(f)
    data.update(changes)
    with open(file, "w") as f:
        json.dump(data, f)


def test_layout_and_quirks(bagel_tiny_path, bagel_tiny):
    files = set(os.listdir(bagel_tiny_path))
    assert {"llm_config.json", "vit_config.json", "config.json", "ema.safetensors", "ae.safetensors",
            "tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"} <= files
    with open(os.path.join(bagel_tiny_path, "config.json")) as f:
        stale = json.load(f)["max_latent_size"]
    with open(os.path.join(bagel_tiny_path, "vit_config.json")) as f:
        declared_vit_layers = json.load(f)["num_hidden_layers"]
    arch = bagel_tiny.arch
    assert arch.max_latent_size == 4 != stale  # from latent_pos_embed.pos_embed, not config.json
    assert arch.vit.num_hidden_layers == declared_vit_layers - 1 == len(bagel_tiny.vit_model.vision_model.encoder.layers)
    assert arch.latent_downsample == 16 and arch.patch_latent_dim == 64 and arch.vae.z_channels == 16
    ema = load_file(os.path.join(bagel_tiny_path, "ema.safetensors"))
    ae = load_file(os.path.join(bagel_tiny_path, "ae.safetensors"))
    state = bagel_tiny.state_dict()
    for key in ("language_model.model.layers.1.self_attn.k_proj_moe_gen.bias", "latent_pos_embed.pos_embed",
                "vit_model.vision_model.embeddings.patch_embedding.weight", "language_model.lm_head.weight"):
        torch.testing.assert_close(state[key], ema[key], rtol=0, atol=0)
    torch.testing.assert_close(state["vae.decoder.up.0.block.1.conv2.weight"], ae["decoder.up.0.block.1.conv2.weight"])
    ids = bagel_tiny.token_ids
    tok = load_tokenizer(bagel_tiny_path)
    assert [tok.token_to_id(t) for t in ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>")] == [
        ids.im_start, ids.im_end, ids.vision_start, ids.vision_end]


def test_tokenizer_is_qwen2_format(bagel_tiny_path):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(bagel_tiny_path)
    ours = load_tokenizer(bagel_tiny_path)
    text = "Describe the image: 2 red circles, left of a blue square!"
    assert hf.encode(text) == ours.encode(text, add_bos=False)
    assert hf.eos_token == "<|im_end|>" and hf.convert_tokens_to_ids("<|vision_start|>") == ours.token_to_id("<|vision_start|>")


def test_sharded_model_safetensors_loads_the_same(bagel_tiny_path, bagel_tiny, tmp_path):
    path = _copy(bagel_tiny_path, tmp_path)
    ema = load_file(os.path.join(path, "ema.safetensors"))
    os.remove(os.path.join(path, "ema.safetensors"))
    keys = sorted(ema)
    halves = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for file, ks in halves.items():
        save_file({k: ema[k] for k in ks}, os.path.join(path, file))
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"weight_map": {k: file for file, ks in halves.items() for k in ks}}, f)
    model = load_model(path)
    for (name, a), (_, b) in zip(model.state_dict().items(), bagel_tiny.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_missing_ae_safetensors(bagel_tiny_path, tmp_path):
    path = _copy(bagel_tiny_path, tmp_path)
    os.remove(os.path.join(path, "ae.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing ae\.safetensors"):
        load_model(path)


@pytest.mark.parametrize("field, value", [("hidden_size", 48), ("num_hidden_layers", 3), ("vocab_size", 600),
                                          ("num_key_value_heads", 4), ("intermediate_size", 96)])
def test_llm_config_contradicting_weights(bagel_tiny_path, tmp_path, field, value):
    path = _copy(bagel_tiny_path, tmp_path)
    _edit_json(path, "llm_config.json", **{field: value})
    with pytest.raises(CheckpointError, match=rf"^llm_config\.json: {field} gives .* but ema\.safetensors has") as err:
        load_model(path)
    assert "\n" not in str(err.value)


def test_vit_config_layer_count_checked(bagel_tiny_path, tmp_path):
    path = _copy(bagel_tiny_path, tmp_path)
    _edit_json(path, "vit_config.json", num_hidden_layers=7)
    with pytest.raises(CheckpointError, match=r"vit_config\.json: num_hidden_layers 7, but ema\.safetensors holds 2"):
        load_model(path)


@pytest.mark.parametrize("height, width, message", [
    (40, 64, r"height 40 is not a positive multiple of 16"),
    (64, 80, r"width 80 is above the latent position table \(4 tokens x 16 px = 64 px"),
])
def test_bad_resolution(bagel_tiny, height, width, message):
    with pytest.raises(ValueError, match=message):
        bagel_tiny.latent_positions(height, width)


def test_full_size_shapes_on_meta():
    arch = arch_for_preset("bagel-7b-mot")
    with torch.device("meta"):
        model = BagelModel(arch, BagelTokenIds(0, 1, 2, 3))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # engine-notes §1.1: two experts' decoder layers + embeddings + lm_head = 14.14 B; ViT ~0.4 B; FLUX AE ~84 M.
    assert abs(count(model.language_model) / 14.14e9 - 1) < 0.005
    assert 0.38e9 < count(model.vit_model) < 0.42e9
    assert 80e6 < count(model.vae) < 88e6
    assert model.spec.kv_bytes_per_token == 28 * 2 * 4 * 128 * 4  # fp32 here; 56 KiB per token at bf16
