"""Loading BAGEL from the official directory layout.

    llm_config.json, vit_config.json, config.json (optional, informative)
    ema.safetensors  -- or a fine-tuned model.safetensors / model.safetensors.index.json + shards
    ae.safetensors   -- the FLUX VAE, keys encoder.* / decoder.* without a prefix
    tokenizer.json (+ tokenizer_config.json, vocab.json, merges.txt): Qwen2, with <|im_start|>, <|im_end|>,
    <|vision_start|>, <|vision_end|>

Key names are the module names of unicorn.models.bagel (they mirror the official ones); the VAE's gain ``vae.``.
"""
from __future__ import annotations

import os

import torch

from unicorn.models.bagel import BagelModel, BagelTokenIds
from unicorn.models.bagel_config import BagelArch, bagel_arch_from_files, read_json
from unicorn.models.errors import CheckpointError
from unicorn.models.tokenizer import Tokenizer
from unicorn.models.weights import WeightShard, find_weight_shards, iter_shard_shapes, load_weights

LAYOUT_FILES = ("llm_config.json", "vit_config.json")  # what marks a directory as BAGEL's layout
AE_FILE = "ae.safetensors"
EMA_FILE = "ema.safetensors"
SPECIAL_TOKENS = dict(im_start="<|im_start|>", im_end="<|im_end|>", vision_start="<|vision_start|>",
                      vision_end="<|vision_end|>")
PAD_TOKEN = "<|endoftext|>"
IMAGE_PAD_TOKEN = "<|image_pad|>"  # the engine's image placeholder (Qwen2.5's tokenizer has it); optional
_VIT_PATCH = "vit_model.vision_model.embeddings.patch_embedding.weight"
_DROPPED = ("rotary_emb.inv_freq",)


def is_bagel_dir(path: str) -> bool:
    return all(os.path.exists(os.path.join(path, f)) for f in LAYOUT_FILES)


def key_to_name(key: str, tensor: torch.Tensor):
    """A KeyMapper (unicorn.models.weights) for ema/model.safetensors and ae.safetensors keys."""
    if key.endswith(_DROPPED):
        return []
    if key.startswith(("encoder.", "decoder.")):
        return [("vae." + key, tensor)]
    if key == _VIT_PATCH and tensor.dim() == 4:  # a conv kernel [D, C, p, p]: flatten as (row, col, channel)
        return [(key, tensor.permute(0, 2, 3, 1).reshape(tensor.shape[0], -1))]
    return [(key, tensor)]


def name_to_key(name: str) -> str:
    return name[len("vae."):] if name.startswith("vae.") else name


def weight_shards(path: str) -> list[WeightShard]:
    """ema.safetensors, else a fine-tuned model.safetensors[.index.json]; then ae.safetensors."""
    ema = os.path.join(path, EMA_FILE)
    shards = [WeightShard(ema, None)] if os.path.exists(ema) else find_weight_shards(path)
    ae = os.path.join(path, AE_FILE)
    if not os.path.exists(ae):
        raise CheckpointError(f"{path}: missing {AE_FILE} (the FLUX VAE that BAGEL generates and reads images with)")
    return shards + [WeightShard(ae, None)]


def _shapes(shards: list[WeightShard]) -> dict[str, torch.Size]:
    return {key: t.shape for shard in shards for key, t in iter_shard_shapes(shard)}


def resolve_token_ids(tokenizer: Tokenizer, vocab_size: int, path: str) -> BagelTokenIds:
    ids = {}
    for field, token in SPECIAL_TOKENS.items():
        value = tokenizer.token_to_id(token)
        if value is None:
            raise CheckpointError(f"{path}/tokenizer.json: no token {token!r} (BAGEL frames text and images with it)")
        if value >= vocab_size:
            raise CheckpointError(f"{path}/tokenizer.json: {token!r} has id {value}, outside llm_config.json's "
                                  f"vocab_size {vocab_size}")
        ids[field] = value
    image_pad = tokenizer.token_to_id(IMAGE_PAD_TOKEN)
    if image_pad is not None and image_pad >= vocab_size:
        image_pad = None  # no placeholder: the engine refuses image parts with a one-line error
    return BagelTokenIds(**ids, pad=tokenizer.token_to_id(PAD_TOKEN), image_pad=image_pad)


def read_bagel_arch(path: str) -> tuple[BagelArch, list[WeightShard]]:
    """The architecture of the BAGEL directory ``path`` (from its configs and tensor shapes) and its weight files."""
    llm_cfg = read_json(path, "llm_config.json")
    vit_cfg = read_json(path, "vit_config.json")
    config = read_json(path, "config.json", required=False)
    shards = weight_shards(path)
    shapes = _shapes(shards[:-1])
    ae_shapes = _shapes(shards[-1:])
    weights_file = os.path.basename(shards[0].file) if len(shards) == 2 else "the model.safetensors shards"
    return bagel_arch_from_files(llm_cfg, vit_cfg, config, shapes, ae_shapes, weights_file), shards


def load_bagel(path: str, config: dict | None = None, device="cpu", dtype=torch.float32) -> BagelModel:
    """Builds BagelModel for the directory ``path`` and loads ema (or model) and ae weights into it."""
    arch, shards = read_bagel_arch(path)
    token_ids = resolve_token_ids(Tokenizer(path), arch.llm.vocab_size, path)
    with torch.device("meta"):
        model = BagelModel(arch, token_ids, dtype=dtype)
    model = model.to(dtype=dtype).to_empty(device=device)
    model.language_model.model.rotary_emb.reset_inv_freq()
    load_weights(model, shards, key_to_name, describe=name_to_key)
    return model.eval()
