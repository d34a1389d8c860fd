"""Checkpoint layouts (our writer read by transformers, DeepSeek's original), tokenizer, image processing, errors."""
import json
import os
import shutil

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file, save_file

from unicorn.models import CheckpointError, load_model, load_tokenizer
from unicorn.models.janus_chat import generation_prompt, understanding_prompt
from unicorn.models.janus_tiny import write_random_janus_checkpoint

from janus_reference import make_hf_janus, prompt_with_image


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return write_random_janus_checkpoint(str(tmp_path_factory.mktemp("tiny")), preset="tiny", seed=3)


def _full_prompt_logits(model, ids, pixels):
    embeds = model.embed_text(ids).clone()
    embeds[ids == model.spec.image_token_id] = model.encode_images(pixels).reshape(-1, embeds.shape[-1])
    hidden = model.forward_dense(embeds[None], torch.arange(len(ids))[None])[0]
    return model.text_logits(hidden)


@torch.no_grad()
def test_our_tiny_checkpoint_loads_in_transformers(tiny_path):
    from transformers import JanusForConditionalGeneration

    hf, info = JanusForConditionalGeneration.from_pretrained(tiny_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ours = load_model(tiny_path)
    spec = ours.spec
    ids = torch.tensor([spec.bos_token_id, 40, 41, spec.boi_token_id] + [spec.image_token_id] * spec.num_image_tokens
                       + [spec.eoi_token_id, 50, 51])
    pixels = torch.randn(1, 3, spec.image_size, spec.image_size)
    ref = hf.eval()(input_ids=ids[None], pixel_values=pixels).logits[0]
    torch.testing.assert_close(_full_prompt_logits(ours, ids, pixels), ref, atol=1e-4, rtol=1e-4)
    image_ids = torch.randint(0, spec.image_vocab_size, (2, spec.num_image_tokens))
    torch.testing.assert_close(ours.decode_image_tokens(image_ids), hf.decode_image_tokens(image_ids).permute(0, 3, 1, 2),
                               atol=1e-4, rtol=1e-4)


def test_sharded_safetensors_and_bf16(tmp_path):
    path = write_random_janus_checkpoint(str(tmp_path), preset="tiny", max_shard_bytes=100_000)
    assert os.path.exists(os.path.join(path, "model.safetensors.index.json"))
    model = load_model(path, dtype=torch.bfloat16)
    assert model.lm_head.weight.dtype == torch.bfloat16 and model.spec.dtype == torch.bfloat16
    assert model.language_model.rotary_emb.inv_freq.dtype == torch.float32


# ---- DeepSeek original layout --------------------------------------------------------------------------------

def _to_deepseek(state: dict) -> dict:
    out = {}
    for key, t in state.items():
        if key == "lm_head.weight":
            out["language_model.lm_head.weight"] = t
        elif key.startswith("model.language_model."):
            out["language_model.model." + key[len("model.language_model."):]] = t
        elif key.startswith("model.vision_model."):
            rest = key[len("model.vision_model."):]
            if rest == "embeddings.position_embedding.weight":
                out["vision_model.vision_tower.pos_embed"] = t[None]
            elif rest.startswith("embeddings.patch_embedding."):
                out["vision_model.vision_tower.patch_embed.proj." + rest.rsplit(".", 1)[1]] = t
            elif rest.startswith("post_layernorm."):
                out["vision_model.vision_tower.norm." + rest.rsplit(".", 1)[1]] = t
            else:
                layer, sub = rest[len("encoder.layers."):].split(".", 1)
                base = f"vision_model.vision_tower.blocks.{layer}."
                kind = sub.rsplit(".", 1)[1]
                if sub.startswith("self_attn.q_proj"):
                    k = key.replace("q_proj", "k_proj")
                    v = key.replace("q_proj", "v_proj")
                    out[base + "attn.qkv." + kind] = torch.cat([t, state[k], state[v]])
                elif sub.startswith(("self_attn.k_proj", "self_attn.v_proj")):
                    continue
                else:
                    sub = sub.replace("self_attn.projection_layer", "attn.proj").replace("layer_norm", "norm")
                    out[base + sub] = t
        elif key.startswith("model.vqmodel."):
            rest = key[len("model.vqmodel."):]
            rest = rest.replace("encoder.down.", "encoder.conv_blocks.").replace("decoder.up.", "decoder.conv_blocks.")
            rest = rest.replace(".block.", ".res.").replace("mid.block_1", "mid.0").replace("mid.attn_1", "mid.1")
            out["gen_vision_model." + rest.replace("mid.block_2", "mid.2")] = t
        else:
            rest = key[len("model."):]
            for ours, theirs in (("generation_aligner.", "gen_aligner."), ("aligner.", "aligner.")):
                if rest.startswith(ours):
                    rest = theirs + rest[len(ours):].replace("fc1", "layers.0").replace("hidden_layers.0", "layers.2")
                    break
            rest = rest.replace("generation_head.proj_out", "gen_head.output_mlp_projector")
            rest = rest.replace("generation_head.vision_head", "gen_head.vision_head")
            out[rest.replace("generation_embeddings", "gen_embed")] = t
    out["gen_vision_model.quantize.codebook_used"] = torch.zeros(65536)
    out["vision_model.vision_tower.attn_pool.latent"] = torch.zeros(1, 1, 4)
    return out


def _deepseek_config(hf_cfg) -> dict:
    t, v, q = hf_cfg.text_config, hf_cfg.vision_config, hf_cfg.vq_config
    mlp = lambda i, o: {"cls": "MlpProjector", "params": {"projector_type": "mlp_gelu", "depth": 2, "input_dim": i, "n_embed": o}}
    return {
        "model_type": "multi_modality",
        "architectures": ["MultiModalityCausalLM"],
        "language_config": {"model_type": "llama", "vocab_size": t.vocab_size, "hidden_size": t.hidden_size,
                            "intermediate_size": t.intermediate_size, "num_hidden_layers": t.num_hidden_layers,
                            "num_attention_heads": t.num_attention_heads, "num_key_value_heads": t.num_key_value_heads,
                            "max_position_embeddings": t.max_position_embeddings},
        "vision_config": {"cls": "CLIPVisionTower", "params": {
            "model_name": "siglip_large_patch16_384", "image_size": v.image_size, "select_feature": "same",
            "select_layer": -1, "width": v.hidden_size, "layers": v.num_hidden_layers, "heads": v.num_attention_heads,
            "mlp_ratio": v.mlp_ratio, "patch_size": v.patch_size}},
        "aligner_config": mlp(v.hidden_size, t.hidden_size),
        "gen_vision_config": {"cls": "VQ-16", "params": {
            "image_token_size": q.num_embeddings, "n_embed": q.embed_dim, "ch": q.base_channels,
            "ch_mult": list(q.channel_multiplier), "z_channels": q.latent_channels, "num_res_blocks": q.num_res_blocks}},
        "gen_aligner_config": mlp(q.embed_dim, t.hidden_size),
        "gen_head_config": {"cls": "vision_head", "params": {
            "n_embed": t.hidden_size, "image_token_embed": t.hidden_size, "image_token_size": q.num_embeddings}},
    }


@torch.no_grad()
def test_deepseek_original_layout_bin_shards(tmp_path, tiny_path):
    hf = make_hf_janus("mha40", seed=5)
    state = _to_deepseek(hf.state_dict())
    shards = {"pytorch_model-00001-of-00002.bin": {k: v for k, v in state.items() if k.startswith("language_model.")},
              "pytorch_model-00002-of-00002.bin": {k: v for k, v in state.items() if not k.startswith("language_model.")}}
    weight_map = {}
    for name, part in shards.items():
        torch.save(part, tmp_path / name)
        weight_map.update({k: name for k in part})
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (tmp_path / "config.json").write_text(json.dumps(_deepseek_config(hf.config)))
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(os.path.join(tiny_path, f), tmp_path / f)

    ours = load_model(str(tmp_path))
    assert ours.spec.model_type == "multi_modality"
    ids = prompt_with_image()
    ids = torch.where(ids == 250, torch.tensor(ours.spec.image_token_id), ids)
    pixels = torch.randn(1, 3, 32, 32)
    hf_ids = torch.where(ids == ours.spec.image_token_id, torch.tensor(250), ids)
    ref = hf(input_ids=hf_ids[None], pixel_values=pixels).logits[0]
    torch.testing.assert_close(_full_prompt_logits(ours, ids, pixels), ref, atol=1e-4, rtol=1e-4)
    image_ids = torch.randint(0, 64, (5,))
    embeds = ours.embed_image_tokens(image_ids)
    torch.testing.assert_close(embeds, hf.prepare_embeddings_for_image_generation(image_ids))
    torch.testing.assert_close(ours.image_logits(embeds), hf.model.generation_head(embeds))
    codes = torch.randint(0, 64, (1, 16))
    torch.testing.assert_close(ours.decode_image_tokens(codes), hf.decode_image_tokens(codes).permute(0, 3, 1, 2),
                               atol=1e-4, rtol=1e-4)


# ---- tokenizer, chat format, image processing ------------------------------------------------------------------

def test_tokenizer_round_trip_and_special_ids(tiny_path):
    tok = load_tokenizer(tiny_path)
    text = "A photo of a cat sitting on a red sofa."
    ids = tok.encode(text)
    assert ids[0] == tok.bos_token_id and tok.decode(ids) == text
    assert tok.encode(text, add_bos=False) == ids[1:]
    model_spec = load_model(tiny_path).spec
    assert tok.image_token_id == model_spec.image_token_id
    assert (tok.boi_token_id, tok.eoi_token_id) == (model_spec.boi_token_id, model_spec.eoi_token_id)
    prompt = understanding_prompt([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]}],
                                  num_image_tokens=16)
    ids = tok.encode(prompt)
    assert ids.count(tok.image_token_id) == 16
    first = ids.index(tok.image_token_id)
    assert ids[first - 1] == tok.boi_token_id and ids[first + 16] == tok.eoi_token_id
    gen = tok.encode(generation_prompt("a red cat"))
    assert gen[-1] == tok.boi_token_id
    assert generation_prompt("a red cat") == "<|User|>: a red cat\n\n<|Assistant|>:<begin_of_image>"


def test_image_pre_and_postprocessing_match_transformers(tiny_path):
    from transformers.models.janus.image_processing_pil_janus import JanusImageProcessorPil

    model = load_model(tiny_path)
    rng = np.random.default_rng(0)
    images = [PIL.Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((50, 30), (20, 64), (32, 32))]
    proc = JanusImageProcessorPil(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    ref = proc(images, return_tensors="pt")["pixel_values"]
    ours = model.preprocess_images(images)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)
    decoded = torch.randn(2, 3, 32, 32) * 0.7
    ref_images = proc.postprocess(list(decoded), return_tensors="PIL.Image.Image")["pixel_values"]
    for a, b in zip(model.postprocess(decoded), ref_images):
        assert np.array_equal(np.asarray(a), np.asarray(b))


# ---- bad input ---------------------------------------------------------------------------------------------------

def test_missing_directory_and_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(str(tmp_path / "nope"))
    with pytest.raises(CheckpointError, match="expected config.json"):
        load_model(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "janus"}))
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*pytorch_model\.bin"):
        load_model(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt9"}))
    with pytest.raises(CheckpointError, match="unsupported model_type 'gpt9'"):
        load_model(str(tmp_path))


def _edit_weights(src, dst, edit):
    shutil.copytree(src, dst)
    file = os.path.join(dst, "model.safetensors")
    state = load_file(file)
    edit(state)
    save_file(state, file)
    return str(dst)


def test_missing_wrong_shape_and_unexpected_tensors(tmp_path, tiny_path):
    key = "model.language_model.layers.1.mlp.up_proj.weight"
    path = _edit_weights(tiny_path, tmp_path / "missing", lambda s: s.pop(key))
    with pytest.raises(CheckpointError, match=rf"missing tensor '{key}' \(not in model.safetensors\)"):
        load_model(path)

    def reshape(s):
        s[key] = s[key][:, :-1].contiguous()
    path = _edit_weights(tiny_path, tmp_path / "shape", reshape)
    with pytest.raises(CheckpointError, match=rf"'{key}' in model.safetensors has shape \(88, 47\), expected \(88, 48\)"):
        load_model(path)

    def extra(s):
        s["model.language_model.layers.9.mlp.up_proj.weight"] = torch.zeros(2)
    path = _edit_weights(tiny_path, tmp_path / "extra", extra)
    with pytest.raises(CheckpointError, match="unexpected tensor.*layers.9.mlp.up_proj.weight"):
        load_model(path)


def test_missing_shard_is_named(tmp_path):
    path = write_random_janus_checkpoint(str(tmp_path), preset="tiny", max_shard_bytes=100_000)
    second = next(f for f in os.listdir(path) if f.startswith("model-00002-of-"))
    os.remove(os.path.join(path, second))
    with pytest.raises(CheckpointError, match="shards listed in model.safetensors.index.json are missing: model-00002"):
        load_model(path)


def _write_deepseek(path, hf, tokenizer_from):
    state = _to_deepseek(hf.state_dict())
    torch.save({k: v.contiguous() for k, v in state.items()}, path / "pytorch_model.bin")
    (path / "config.json").write_text(json.dumps(_deepseek_config(hf.config)))
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(os.path.join(tokenizer_from, f), path / f)
    return str(path)


@torch.no_grad()
def test_weights_load_in_place_from_deepseek_and_transformers_layouts(tmp_path, tiny_path):
    from unicorn.models.weight_update import load_weights_in_place

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _write_deepseek(tmp_path / "a", make_hf_janus("mha40", seed=5), tiny_path)
    hf_b = make_hf_janus("mha40", seed=6)
    b = _write_deepseek(tmp_path / "b", hf_b, tiny_path)
    hf_b.save_pretrained(tmp_path / "b_hf")
    model = load_model(a)
    pointers = {n: p.data_ptr() for n, p in model.named_parameters()}
    want = load_model(b).state_dict()
    assert any(not torch.equal(v, want[k]) for k, v in model.state_dict().items())
    for source in (b, str(tmp_path / "b_hf")):  # DeepSeek's layout (qkv split, pos_embed squeezed), transformers'
        load_weights_in_place(model, a)
        load_weights_in_place(model, source)
        for k, v in model.state_dict().items():
            torch.testing.assert_close(v, want[k], rtol=0, atol=0, msg=k)
    assert {n: p.data_ptr() for n, p in model.named_parameters()} == pointers
    other = load_model(tiny_path)  # another architecture: refused by shape, nothing copied
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(CheckpointError, match="has shape"):
        load_weights_in_place(other, b)
    assert all(torch.equal(v, before[k]) for k, v in other.state_dict().items())
