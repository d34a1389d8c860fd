"""Loading Janus checkpoints: transformers' layout (``model_type: janus``) and DeepSeek's original
(``model_type: multi_modality``). Key facts from transformers' convert_janus_weights_to_hf.py and
deepseek-ai/Janus janus/models/*.py.
"""
from __future__ import annotations

import json
import os
import re

import torch

from unicorn.models.errors import CheckpointError
from unicorn.models.janus import JanusModel
from unicorn.models.janus_config import JanusArch, VisionArch, VQArch, janus_arch_from_hf_config, text_arch_from_dict
from unicorn.models.janus_image import ImageProcessing
from unicorn.models.spec import SpecialTokenIds
from unicorn.models.tokenizer import Tokenizer
from unicorn.models.weights import find_weight_shards, load_weights

_DROPPED_SUFFIXES = ("rotary_emb.inv_freq",)

# ---- transformers layout ------------------------------------------------------------------------------------


def hf_key_to_name(key: str, tensor: torch.Tensor):
    if key.endswith(_DROPPED_SUFFIXES):
        return []
    if key == "lm_head.weight":
        return [(key, tensor)]
    if key.startswith("model."):
        return [(key[len("model.") :], tensor)]
    return None


def name_to_hf_key(name: str) -> str:
    return name if name == "lm_head.weight" else "model." + name


# ---- DeepSeek original layout -------------------------------------------------------------------------------

# timm SigLIP ViT (vision_model.vision_tower.*) -> our vision_model.*
_VISION_RULES = [
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.layers.\1.layer_norm1."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.layers.\1.layer_norm2."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.\1.self_attn.projection_layer."),
    (r"^blocks\.(\d+)\.mlp\.", r"encoder.layers.\1.mlp."),
    (r"^patch_embed\.proj\.", "embeddings.patch_embedding."),
    (r"^norm\.", "post_layernorm."),
]
# VQ-16 (gen_vision_model.*) -> our vqmodel.*
_VQ_RULES = [
    (r"^encoder\.conv_blocks\.", "encoder.down."),
    (r"^decoder\.conv_blocks\.", "decoder.up."),
    (r"\.res\.", ".block."),
    (r"\.mid\.0\.", ".mid.block_1."),
    (r"\.mid\.1\.", ".mid.attn_1."),
    (r"\.mid\.2\.", ".mid.block_2."),
]


def _aligner_name(prefix: str, rest: str) -> str | None:
    # MlpProjector nn.Sequential: layers.0 = first Linear, layers.{2k} = k-th hidden Linear (odd ones are GELU).
    m = re.match(r"^layers\.(\d+)\.(weight|bias)$", rest)
    if not m or int(m.group(1)) % 2:
        return None
    index = int(m.group(1))
    return f"{prefix}.fc1.{m.group(2)}" if index == 0 else f"{prefix}.hidden_layers.{index // 2 - 1}.{m.group(2)}"


def deepseek_key_to_name(key: str, tensor: torch.Tensor):
    if key.endswith(_DROPPED_SUFFIXES):
        return []
    if key.startswith("language_model.model."):
        return [("language_model." + key[len("language_model.model.") :], tensor)]
    if key == "language_model.lm_head.weight":
        return [("lm_head.weight", tensor)]
    if key.startswith("vision_model.vision_tower."):
        rest = key[len("vision_model.vision_tower.") :]
        if rest.startswith("attn_pool."):  # SigLIP MAP head, unused by Janus
            return []
        if rest == "pos_embed":
            return [("vision_model.embeddings.position_embedding.weight", tensor.squeeze(0))]
        m = re.match(r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", rest)
        if m:
            q, k, v = tensor.chunk(3, dim=0)
            base = f"vision_model.encoder.layers.{m.group(1)}.self_attn"
            return [(f"{base}.{p}_proj.{m.group(2)}", t) for p, t in zip("qkv", (q, k, v))]
        for pattern, repl in _VISION_RULES:
            if re.match(pattern, rest):
                return [("vision_model." + re.sub(pattern, repl, rest), tensor)]
        return None
    if key.startswith("gen_vision_model."):
        rest = key[len("gen_vision_model.") :]
        if rest == "quantize.codebook_used":
            return []
        for pattern, repl in _VQ_RULES:
            rest = re.sub(pattern, repl, rest)
        return [("vqmodel." + rest, tensor)]
    for prefix, ours in (("aligner.", "aligner"), ("gen_aligner.", "generation_aligner")):
        if key.startswith(prefix):
            name = _aligner_name(ours, key[len(prefix) :])
            return None if name is None else [(name, tensor)]
    if key.startswith("gen_head.output_mlp_projector."):
        return [("generation_head.proj_out." + key.rsplit(".", 1)[1], tensor)]
    if key.startswith("gen_head.vision_head."):
        return [("generation_head.vision_head." + key.rsplit(".", 1)[1], tensor)]
    if key == "gen_embed.weight":
        return [("generation_embeddings.weight", tensor)]
    return None


# SigLIP towers named in deepseek-ai/Janus janus/models/siglip_vit.py (SigLIP_MODEL_CONFIG).
SIGLIP_TOWERS = {
    "siglip_so400m_patch14_384": dict(width=1152, layers=27, heads=16, mlp_ratio=3.7362, patch_size=14),
    "siglip_so400m_patch14_224": dict(width=1152, layers=27, heads=16, mlp_ratio=3.7362, patch_size=14),
    "siglip_large_patch16_384": dict(width=1024, layers=24, heads=16, mlp_ratio=4, patch_size=16),
}
# VQ-16 in janus/models/vq_model.py is built with fixed sizes; the keys below may override them (an unicorn
# extension, used to describe small test models in the original layout).
VQ16_DEFAULTS = dict(ch=128, ch_mult=[1, 1, 2, 2, 4], z_channels=256, num_res_blocks=2)
DEEPSEEK_SECTIONS = (
    "language_config",
    "vision_config",
    "aligner_config",
    "gen_vision_config",
    "gen_aligner_config",
    "gen_head_config",
)


def _mlp_gelu_params(config: dict, section: str) -> dict:
    params = config[section].get("params", {})
    if params.get("projector_type", "mlp_gelu") != "mlp_gelu":
        raise CheckpointError(f"{section}.params.projector_type {params['projector_type']!r} is not supported")
    return params


def janus_arch_from_deepseek_config(config: dict) -> JanusArch:
    """Reads an original DeepSeek (``model_type: multi_modality``) config.json."""
    absent = [s for s in DEEPSEEK_SECTIONS if not isinstance(config.get(s), dict)]
    if absent:
        raise CheckpointError(f"multi_modality config.json lacks sections: {', '.join(absent)}")
    language = config["language_config"]
    text = text_arch_from_dict(language)

    vision_cfg = config["vision_config"]
    if "CLIPVisionTower" not in vision_cfg.get("cls", ""):
        raise CheckpointError(f"vision_config.cls {vision_cfg.get('cls')!r} is not supported (CLIPVisionTower only)")
    vp = vision_cfg.get("params", {})
    model_name = vp.get("model_name", "siglip_large_patch16_384")
    if model_name not in SIGLIP_TOWERS:
        raise CheckpointError(f"vision tower {model_name!r} unknown; known: {', '.join(SIGLIP_TOWERS)}")
    if vp.get("pixel_mean") is not None or vp.get("pixel_std") is not None:
        raise CheckpointError("vision_config.params pixel_mean/pixel_std (in-tower normalization) is not supported")
    tower = {**SIGLIP_TOWERS[model_name], **{k: vp[k] for k in ("width", "layers", "heads", "mlp_ratio", "patch_size") if k in vp}}
    select_layer = vp.get("select_layer", -1)
    layers = tower["layers"]
    layers = min(layers, layers + select_layer + 1) if select_layer <= 0 else min(layers, select_layer)
    aligner = _mlp_gelu_params(config, "aligner_config")
    vision = VisionArch(
        hidden_size=tower["width"],
        num_hidden_layers=layers,
        num_attention_heads=tower["heads"],
        image_size=vp.get("image_size", 384),
        patch_size=tower["patch_size"],
        mlp_ratio=tower["mlp_ratio"],
        hidden_act="gelu",
        projection_dim=aligner.get("n_embed", text.hidden_size),
        depth=aligner.get("depth", 1),
    )

    gen_vision = config["gen_vision_config"]
    if gen_vision.get("cls", "VQ-16") != "VQ-16":
        raise CheckpointError(f"gen_vision_config.cls {gen_vision.get('cls')!r} is not supported (VQ-16 only)")
    gp = gen_vision.get("params", {})
    vq_sizes = {**VQ16_DEFAULTS, **{k: gp[k] for k in VQ16_DEFAULTS if k in gp}}
    gen_aligner = _mlp_gelu_params(config, "gen_aligner_config")
    head = config["gen_head_config"].get("params", {})
    vq = VQArch(
        embed_dim=gp.get("n_embed", 8),
        num_embeddings=gp.get("image_token_size", 16384),
        latent_channels=vq_sizes["z_channels"],
        base_channels=vq_sizes["ch"],
        channel_multiplier=tuple(vq_sizes["ch_mult"]),
        num_res_blocks=vq_sizes["num_res_blocks"],
        projection_dim=gen_aligner.get("n_embed", text.hidden_size),
        num_hidden_layers=gen_aligner.get("depth", 1),
        hidden_act="gelu",
        image_token_embed_dim=head.get("n_embed", text.hidden_size),
        head_inner_dim=head.get("image_token_embed", text.hidden_size),
    )
    if head.get("image_token_size", vq.num_embeddings) != vq.num_embeddings:
        raise CheckpointError("gen_head_config image_token_size differs from gen_vision_config image_token_size")
    return JanusArch(text=text, vision=vision, vq=vq, tie_word_embeddings=bool(language.get("tie_word_embeddings", False)))


# ---- special ids ---------------------------------------------------------------------------------------------


def _read_json(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _first(value):
    return value[0] if isinstance(value, list) and value else value


def resolve_special_ids(path: str, config: dict) -> SpecialTokenIds:
    """generation_config.json, then config.json, then the tokenizer files (first one that names the id wins).

    An id none of them names is None: as in transformers, it is needed only by the prompt forms that use it
    (the engine says so for a request that needs it), not to load the checkpoint."""
    gen = _read_json(os.path.join(path, "generation_config.json"))
    text_cfg = config.get("text_config") or config.get("language_config") or {}
    tokenizer = Tokenizer(path) if os.path.exists(os.path.join(path, "tokenizer.json")) else None

    def pick(name: str, *candidates) -> int | None:
        for value in candidates:
            value = _first(value)
            if value is not None:
                return int(value)
        if tokenizer is not None:
            value = getattr(tokenizer, name)
            if value is not None:
                return value
        return None

    gen_kwargs = gen.get("generation_kwargs") or {}
    return SpecialTokenIds(
        bos_token_id=pick("bos_token_id", gen.get("bos_token_id"), text_cfg.get("bos_token_id")),
        eos_token_id=pick("eos_token_id", gen.get("eos_token_id"), text_cfg.get("eos_token_id")),
        pad_token_id=pick("pad_token_id", gen.get("pad_token_id"), text_cfg.get("pad_token_id")),
        image_token_id=pick("image_token_id", config.get("image_token_id")),
        boi_token_id=pick("boi_token_id", gen_kwargs.get("boi_token_id")),
        eoi_token_id=pick("eoi_token_id", gen_kwargs.get("eoi_token_id")),
    )


# ---- builders (registered in unicorn.models.registry) --------------------------------------------------------


def _build_and_load(path, config, parse_arch, map_key, describe, model_type, device, dtype) -> JanusModel:
    shards = find_weight_shards(path)  # first, so an empty directory says which files it needs
    arch: JanusArch = parse_arch(config)
    special_ids = resolve_special_ids(path, config)
    processing = ImageProcessing.from_checkpoint(path, arch.vision.image_size)
    with torch.device("meta"):
        model = JanusModel(arch, special_ids, processing, dtype=dtype, model_type=model_type)
    # Allocate once, at the target dtype and device; weights are then copied in shard by shard.
    model = model.to(dtype=dtype).to_empty(device=device)
    model.language_model.rotary_emb.reset_inv_freq()
    loaded = load_weights(model, shards, map_key, optional={"lm_head.weight"}, describe=describe)
    if "lm_head.weight" not in loaded:
        if not arch.tie_word_embeddings:
            raise CheckpointError(f"missing tensor {describe('lm_head.weight')!r} and the config does not tie it")
        model.tie_lm_head()
    return model.eval()


def load_janus_hf(path: str, config: dict, device="cpu", dtype=torch.float32) -> JanusModel:
    return _build_and_load(path, config, janus_arch_from_hf_config, hf_key_to_name, name_to_hf_key, "janus", device, dtype)


def load_janus_deepseek(path: str, config: dict, device="cpu", dtype=torch.float32) -> JanusModel:
    return _build_and_load(path, config, janus_arch_from_deepseek_config, deepseek_key_to_name, lambda n: n, "multi_modality", device, dtype)
