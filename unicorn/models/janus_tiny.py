"""Random-weight Janus checkpoints in transformers' layout, for tests and GPU benchmarks (no transformers import).

    write_random_janus_checkpoint("/tmp/janus-tiny", preset="tiny", seed=0)
    write_random_janus_checkpoint("/tmp/janus-7b", preset="janus-pro-7b", dtype=torch.bfloat16)
    write_janus_files("/tmp/janus-7b", preset="janus-pro-7b")          # config and tokenizer only, then
    model = build_random_janus("/tmp/janus-7b", device="cuda", dtype=torch.bfloat16)   # weights on the device
"""
from __future__ import annotations

import copy
import json
import os
import zlib

import torch

from unicorn.models.janus import JanusModel
from unicorn.models.janus_config import janus_arch_from_hf_config
from unicorn.models.spec import SpecialTokenIds
from unicorn.models.tokenizer import DEFAULT_SPECIAL_TOKENS

_SIGLIP_L = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, image_size=384, patch_size=16, mlp_ratio=4)
_VQ16 = dict(embed_dim=8, num_embeddings=16384, latent_channels=256, base_channels=128,
             channel_multiplier=[1, 1, 2, 2, 4], num_res_blocks=2)

PRESETS: dict[str, dict] = {
    # Fast CPU tests: GQA, non-power-of-two hidden, 32 px images in 16 tokens (VQ downsamples by 8 = patch size).
    "tiny": dict(
        text=dict(vocab_size=384, hidden_size=48, intermediate_size=88, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512),
        vision=dict(hidden_size=40, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
                    mlp_ratio=2),
        vq=dict(embed_dim=8, num_embeddings=96, latent_channels=16, base_channels=32,
                channel_multiplier=[1, 1, 1, 2], num_res_blocks=1),
    ),
    "janus-mid": dict(
        text=dict(vocab_size=16384, hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                  num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=4096),
        vision=dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, image_size=384, patch_size=16,
                    mlp_ratio=4),
        vq=dict(embed_dim=8, num_embeddings=16384, latent_channels=64, base_channels=32,
                channel_multiplier=[1, 1, 2, 2, 4], num_res_blocks=2),
    ),
    "janus-pro-1b": dict(
        text=dict(vocab_size=102400, hidden_size=2048, intermediate_size=5632, num_hidden_layers=24,
                  num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=16384),
        vision=_SIGLIP_L,
        vq=_VQ16,
    ),
    "janus-pro-7b": dict(
        text=dict(vocab_size=102400, hidden_size=4096, intermediate_size=11008, num_hidden_layers=30,
                  num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=16384),
        vision=_SIGLIP_L,
        vq=_VQ16,
    ),
}

_CORPUS = [
    "A photo of a cat sitting on a red sofa next to a window.",
    "Describe the image in detail. What colours do you see?",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Generate an image of a mountain lake at sunrise, with mist over the water.",
    "<|User|>: What is in this picture?\n\n<|Assistant|>: A small boat on a calm sea.",
    "Numbers 0 1 2 3 4 5 6 7 8 9 and punctuation , . ; : ! ? ( ) [ ] { } - _ + = / \\ ' \" are common.",
    "Unified multimodal models read and write both text and images, one token at a time.",
] * 4


SPECIAL_NAMES = ("bos_token", "eos_token", "pad_token", "image_token", "boi_token", "eoi_token")  # ids 0..5


def train_tokenizer(vocab_size: int, corpus: list[str] | None = None):
    """A byte-level BPE over ``corpus`` (default: a built-in one), with Janus' special tokens (ids 0..5).

    Deterministic for a given corpus (order included) and vocab size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = [DEFAULT_SPECIAL_TOKENS[k] for k in SPECIAL_NAMES]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS if corpus is None else corpus, trainer)
    assert tok.get_vocab_size() <= vocab_size, (tok.get_vocab_size(), vocab_size)
    return tok


def janus_hf_config(preset: str = "tiny", *, text=None, vision=None, vq=None, special_ids: SpecialTokenIds,
                    tie_word_embeddings: bool = False, dtype: torch.dtype = torch.float32) -> dict:
    """config.json in transformers' Janus format for a preset, with optional overrides per section."""
    p = copy.deepcopy(PRESETS[preset])
    text_cfg = {**p["text"], **(text or {}), "model_type": "llama", "hidden_act": "silu", "rms_norm_eps": 1e-6,
                "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
                "bos_token_id": special_ids.bos_token_id, "eos_token_id": special_ids.eos_token_id,
                "pad_token_id": special_ids.pad_token_id, "tie_word_embeddings": False}
    vision_cfg = {**p["vision"], **(vision or {}), "model_type": "janus_vision_model", "hidden_act": "gelu", "depth": 2}
    vision_cfg["projection_dim"] = text_cfg["hidden_size"]
    vision_cfg["num_image_tokens"] = (vision_cfg["image_size"] // vision_cfg["patch_size"]) ** 2
    # num_patches: codes per side of a drawn image; the understanding grid unless ``vq`` sets it
    vq_cfg = {"num_patches": vision_cfg["image_size"] // vision_cfg["patch_size"], **p["vq"], **(vq or {}),
              "model_type": "janus_vqgan", "hidden_act": "gelu", "num_hidden_layers": 2,
              "projection_dim": text_cfg["hidden_size"], "image_token_embed_dim": text_cfg["hidden_size"]}
    return {
        "architectures": ["JanusForConditionalGeneration"],
        "model_type": "janus",
        "dtype": str(dtype).removeprefix("torch."),
        "image_token_id": special_ids.image_token_id,
        "tie_word_embeddings": tie_word_embeddings,
        "text_config": text_cfg,
        "vision_config": vision_cfg,
        "vq_config": vq_cfg,
    }


def _mean_std(name: str, shape: torch.Size) -> tuple[float, float]:
    if name.endswith("bias"):
        return 0.0, 0.02
    if len(shape) == 1:  # RMSNorm / LayerNorm / GroupNorm scales
        return 1.0, 0.05
    if "quantize.embedding" in name:
        return 0.0, 1.0
    if len(shape) == 4:  # convolutions: keep activations O(1) through the VQ stack
        return 0.0, shape[1:].numel() ** -0.5
    return 0.0, 0.02


def _random_tensor(name: str, shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
    mean, std = _mean_std(name, shape)
    tensor = torch.randn(shape, generator=gen) * std
    return tensor + mean if mean else tensor


def fill_random_(name: str, tensor: torch.Tensor, seed: int = 0) -> None:
    """Fills ``tensor`` (a parameter named ``name`` in JanusModel's terms) in place, on its device and in its dtype,
    from a generator seeded by (seed, name): the same name, shape, dtype and device give the same values whatever
    module holds the tensor (the bench fills transformers' model by mapping its keys to these names)."""
    mean, std = _mean_std(name, tensor.shape)
    gen = torch.Generator(device=tensor.device).manual_seed((seed << 32) + zlib.crc32(name.encode()))
    with torch.no_grad():
        tensor.normal_(mean, std, generator=gen)


def _write_json(path: str, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)


def write_janus_files(
    path: str,
    *,
    preset: str = "tiny",
    text: dict | None = None,
    vision: dict | None = None,
    vq: dict | None = None,
    tie_word_embeddings: bool = False,
    dtype: torch.dtype = torch.float32,
) -> tuple[dict, SpecialTokenIds]:
    """Writes everything of a checkpoint but its weights: config.json, generation_config.json, tokenizer.json
    (+ tokenizer_config.json, special_tokens_map.json) and preprocessor_config.json; returns (config, special ids)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    os.makedirs(path, exist_ok=True)
    vocab_size = {**PRESETS[preset]["text"], **(text or {})}["vocab_size"]
    tok = train_tokenizer(min(vocab_size, 4096))
    tok.save(os.path.join(path, "tokenizer.json"))
    names = DEFAULT_SPECIAL_TOKENS
    ids = SpecialTokenIds(
        bos_token_id=tok.token_to_id(names["bos_token"]),
        eos_token_id=tok.token_to_id(names["eos_token"]),
        pad_token_id=tok.token_to_id(names["pad_token"]),
        image_token_id=tok.token_to_id(names["image_token"]),
        boi_token_id=tok.token_to_id(names["boi_token"]),
        eoi_token_id=tok.token_to_id(names["eoi_token"]),
    )
    config = janus_hf_config(preset, text=text, vision=vision, vq=vq, special_ids=ids,
                             tie_word_embeddings=tie_word_embeddings, dtype=dtype)
    _write_json(os.path.join(path, "config.json"), config)
    _write_json(os.path.join(path, "generation_config.json"), {
        "bos_token_id": ids.bos_token_id, "eos_token_id": ids.eos_token_id, "pad_token_id": ids.pad_token_id,
        "generation_kwargs": {"boi_token_id": ids.boi_token_id},
    })
    _write_json(os.path.join(path, "tokenizer_config.json"), {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": names["bos_token"], "eos_token": names["eos_token"], "pad_token": names["pad_token"],
        "add_bos_token": True, "model_max_length": config["text_config"]["max_position_embeddings"],
        "extra_special_tokens": {k: names[k] for k in ("image_token", "boi_token", "eoi_token")},
    })
    _write_json(os.path.join(path, "special_tokens_map.json"), {
        "bos_token": names["bos_token"], "eos_token": names["eos_token"], "pad_token": names["pad_token"],
        "additional_special_tokens": [names[k] for k in ("image_token", "boi_token", "eoi_token")],
    })
    image_size = config["vision_config"]["image_size"]
    _write_json(os.path.join(path, "preprocessor_config.json"), {
        "image_processor_type": "JanusImageProcessor", "size": {"height": image_size, "width": image_size},
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "rescale_factor": 1 / 255, "min_size": 14,
        "do_resize": True, "do_rescale": True, "do_normalize": True, "do_pad": True, "resample": 3,
    })
    return config, ids


def write_random_janus_checkpoint(
    path: str,
    *,
    preset: str = "tiny",
    seed: int = 0,
    text: dict | None = None,
    vision: dict | None = None,
    vq: dict | None = None,
    tie_word_embeddings: bool = False,
    dtype: torch.dtype = torch.float32,
    max_shard_bytes: int = 2 << 30,
) -> str:
    """Writes the files of :func:`write_janus_files` and (sharded) model.safetensors with transformers' key names."""
    from safetensors.torch import save_file

    config, ids = write_janus_files(path, preset=preset, text=text, vision=vision, vq=vq,
                                    tie_word_embeddings=tie_word_embeddings, dtype=dtype)
    arch = janus_arch_from_hf_config(config)
    with torch.device("meta"):
        shapes = [(n, p.shape) for n, p in JanusModel(arch, ids).named_parameters()]
    if tie_word_embeddings:
        shapes = [(n, s) for n, s in shapes if n != "lm_head.weight"]
    gen = torch.Generator().manual_seed(seed)
    shards: list[dict[str, torch.Tensor]] = [{}]
    shard_bytes = 0
    for name, shape in shapes:
        tensor = _random_tensor(name, shape, gen).to(dtype)
        size = tensor.numel() * tensor.element_size()
        if shards[-1] and shard_bytes + size > max_shard_bytes:
            shards.append({})
            shard_bytes = 0
        key = name if name == "lm_head.weight" else "model." + name
        shards[-1][key] = tensor.contiguous()
        shard_bytes += size
    if len(shards) == 1:
        save_file(shards[0], os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
        return path
    weight_map = {}
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.path.join(path, file), metadata={"format": "pt"})
        weight_map.update({k: file for k in shard})
    _write_json(os.path.join(path, "model.safetensors.index.json"), {"metadata": {}, "weight_map": weight_map})
    return path


def build_random_janus(path: str, *, device="cpu", dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> JanusModel:
    """A JanusModel for the files :func:`write_janus_files` wrote to ``path``, allocated once on ``device`` in
    ``dtype`` and filled there by :func:`fill_random_` (no weights file, nothing materialised on the host first)."""
    from unicorn.models.janus_checkpoint import resolve_special_ids
    from unicorn.models.janus_image import ImageProcessing

    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    arch = janus_arch_from_hf_config(config)
    processing = ImageProcessing.from_checkpoint(path, arch.vision.image_size)
    with torch.device("meta"):
        model = JanusModel(arch, resolve_special_ids(path, config), processing, dtype=dtype)
    model = model.to(dtype=dtype).to_empty(device=device)
    model.language_model.rotary_emb.reset_inv_freq()
    for name, p in model.named_parameters():
        fill_random_(name, p, seed)
    if arch.tie_word_embeddings:
        model.tie_lm_head()
    return model.eval()
