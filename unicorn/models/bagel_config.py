"""BAGEL hyper-parameters, read from the official directory layout (``llm_config.json``, ``vit_config.json``, an
optional ``config.json``) and checked against the tensors of the weight files.

The official scripts fix part of the model in code rather than in the files; those facts live here:
``qk_norm=True``, untied ``lm_head``, a MoT decoder, ViT without rope and with one layer fewer than
``vit_config.json`` says (the checkpoint holds ``num_hidden_layers - 1``), ``vit_max_num_patch_per_side=70``,
``latent_patch_size=2``, connector ``gelu_pytorch_tanh``, and ``max_latent_size=64`` (the HF ``config.json``
may say 32, so the size is read from the ``latent_pos_embed.pos_embed`` tensor). The FLUX VAE is built from
the shapes in ``ae.safetensors`` (its scale and shift are FLUX constants).
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass

import torch

from unicorn.models.errors import CheckpointError

FLUX_SCALE_FACTOR = 0.3611
FLUX_SHIFT_FACTOR = 0.1159
TIMESTEP_FREQUENCY_DIM = 256  # DiT timestep embedder's sinusoid width


@dataclass(frozen=True)
class LLMArch:
    """Qwen2 decoder geometry (one expert; the MoT doubles every per-layer weight)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int = 32768
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1e6

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise CheckpointError(
                f"llm_config.json: hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise CheckpointError(
                f"llm_config.json: num_attention_heads {self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads {self.num_key_value_heads}"
            )


@dataclass(frozen=True)
class ViTArch:
    """SigLIP NaViT encoder: patches as a linear layer, learned 2-D positions indexed ``row * side + col``."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int  # layers actually present (vit_config.json's count minus one in the official files)
    num_attention_heads: int
    patch_size: int
    image_size: int  # position table side = image_size // patch_size
    num_channels: int = 3
    layer_norm_eps: float = 1e-6
    hidden_act: str = "gelu_pytorch_tanh"

    @property
    def num_positions(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class VAEArch:
    """FLUX autoencoder (encoder outputs mean and log-variance, ``2 * z_channels``)."""

    ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    z_channels: int
    in_channels: int = 3
    out_ch: int = 3
    scale_factor: float = FLUX_SCALE_FACTOR
    shift_factor: float = FLUX_SHIFT_FACTOR

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


@dataclass(frozen=True)
class BagelArch:
    llm: LLMArch
    vit: ViTArch
    vae: VAEArch
    max_latent_size: int  # latent position table side (tokens per image side)
    vit_max_num_patch_per_side: int = 70
    latent_patch_size: int = 2
    connector_act: str = "gelu_pytorch_tanh"
    interpolate_pos: bool = False
    # Image preprocessing limits of the official transforms (app.py / inferencer): the VAE path resizes to a long
    # edge <= max_latent_size * latent_downsample and a short edge >= vae_min_image_size, the ViT path to a long
    # edge <= vit_max_num_patch_per_side * patch and a short edge >= vit_min_image_size.
    vae_min_image_size: int = 512
    vit_min_image_size: int = 224

    @property
    def latent_downsample(self) -> int:
        """Pixels per latent token side (VAE downsample x patch)."""
        return self.vae.downsample * self.latent_patch_size

    @property
    def patch_latent_dim(self) -> int:
        return self.latent_patch_size**2 * self.vae.z_channels

    @property
    def max_image_size(self) -> int:
        return self.max_latent_size * self.latent_downsample

    def check_image_size(self, height: int, width: int) -> None:
        """Raises ValueError unless (height, width) is a generable resolution."""
        step = self.latent_downsample
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or value <= 0 or value % step:
                raise ValueError(f"image {name} {value!r} is not a positive multiple of {step} (latent_downsample)")
            if value > self.max_image_size:
                raise ValueError(
                    f"image {name} {value} is above the latent position table ({self.max_latent_size} tokens x "
                    f"{step} px = {self.max_image_size} px, latent_pos_embed.pos_embed)"
                )


# ---- reading the files ---------------------------------------------------------------------------------------


def read_json(path: str, name: str, required: bool = True) -> dict:
    file = os.path.join(path, name)
    if not os.path.exists(file):
        if required:
            raise CheckpointError(f"{path}: missing {name} (a BAGEL directory holds llm_config.json, "
                                  "vit_config.json, ema.safetensors or model.safetensors, ae.safetensors and the "
                                  "Qwen2 tokenizer files)")
        return {}
    try:
        with open(file, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        if not required:
            return {}  # the official config.json is informative only
        raise CheckpointError(f"{file} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{file} does not hold a JSON object")
    return data


def _field(cfg: dict, file: str, key: str, kind=int, default=None):
    value = cfg.get(key, default)
    if value is None:
        raise CheckpointError(f"{file}: missing field {key!r}")
    if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise CheckpointError(f"{file}: field {key!r} must be a positive integer, got {value!r}")
    return kind(value)


def llm_arch_from_config(cfg: dict) -> LLMArch:
    f = "llm_config.json"
    rope_theta = cfg.get("rope_theta")
    if rope_theta is None and isinstance(cfg.get("rope_parameters"), dict):
        rope_theta = cfg["rope_parameters"].get("rope_theta")
    scaling = cfg.get("rope_scaling")
    if scaling and (scaling.get("rope_type") or scaling.get("type")) not in (None, "default"):
        raise CheckpointError(f"{f}: rope_scaling {scaling!r} is not supported (plain rope only)")
    if cfg.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"{f}: hidden_act {cfg['hidden_act']!r} is not supported (only 'silu')")
    heads = _field(cfg, f, "num_attention_heads")
    return LLMArch(
        vocab_size=_field(cfg, f, "vocab_size"),
        hidden_size=_field(cfg, f, "hidden_size"),
        intermediate_size=_field(cfg, f, "intermediate_size"),
        num_hidden_layers=_field(cfg, f, "num_hidden_layers"),
        num_attention_heads=heads,
        num_key_value_heads=_field(cfg, f, "num_key_value_heads", default=heads),
        max_position_embeddings=_field(cfg, f, "max_position_embeddings", default=32768),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        rope_theta=float(rope_theta if rope_theta is not None else 10000.0),
    )


_LLM_LAYER = re.compile(r"^language_model\.model\.layers\.(\d+)\.")
_VIT_LAYER = re.compile(r"^vit_model\.vision_model\.encoder\.layers\.(\d+)\.")


def _layer_count(shapes: dict[str, torch.Size], pattern: re.Pattern) -> int:
    found = {int(m.group(1)) for key in shapes if (m := pattern.match(key))}
    return max(found) + 1 if found else 0


def _shape(shapes: dict[str, torch.Size], key: str, weights_file: str) -> torch.Size:
    if key not in shapes:
        raise CheckpointError(f"{weights_file}: missing tensor {key!r}")
    return shapes[key]


def _check_llm_against_weights(llm: LLMArch, shapes: dict[str, torch.Size], weights_file: str) -> None:
    embed = _shape(shapes, "language_model.model.embed_tokens.weight", weights_file)
    q = _shape(shapes, "language_model.model.layers.0.self_attn.q_proj.weight", weights_file)
    k = _shape(shapes, "language_model.model.layers.0.self_attn.k_proj.weight", weights_file)
    up = _shape(shapes, "language_model.model.layers.0.mlp.up_proj.weight", weights_file)
    head_dim = llm.head_dim
    claims = [
        ("vocab_size", llm.vocab_size, embed[0], "language_model.model.embed_tokens.weight rows"),
        ("hidden_size", llm.hidden_size, embed[1], "language_model.model.embed_tokens.weight columns"),
        ("num_hidden_layers", llm.num_hidden_layers, _layer_count(shapes, _LLM_LAYER), "decoder layers"),
        ("intermediate_size", llm.intermediate_size, up[0], "mlp.up_proj.weight rows"),
        ("num_attention_heads", llm.num_attention_heads * head_dim, q[0], "self_attn.q_proj.weight rows (x head_dim)"),
        ("num_key_value_heads", llm.num_key_value_heads * head_dim, k[0], "self_attn.k_proj.weight rows (x head_dim)"),
    ]
    for name, claimed, actual, what in claims:
        if claimed != actual:
            raise CheckpointError(
                f"llm_config.json: {name} gives {claimed}, but {weights_file} has {actual} ({what})"
            )


def vit_arch_from_config(cfg: dict, shapes: dict[str, torch.Size], weights_file: str) -> ViTArch:
    f = "vit_config.json"
    declared = _field(cfg, f, "num_hidden_layers")
    present = _layer_count(shapes, _VIT_LAYER)
    if present not in (declared - 1, declared):
        raise CheckpointError(
            f"{f}: num_hidden_layers {declared}, but {weights_file} holds {present} ViT layers "
            f"(expected {declared - 1}: the official checkpoints drop the last one)"
        )
    arch = ViTArch(
        hidden_size=_field(cfg, f, "hidden_size"),
        intermediate_size=_field(cfg, f, "intermediate_size"),
        num_hidden_layers=present,
        num_attention_heads=_field(cfg, f, "num_attention_heads"),
        patch_size=_field(cfg, f, "patch_size"),
        image_size=_field(cfg, f, "image_size"),
        num_channels=_field(cfg, f, "num_channels", default=3),
        layer_norm_eps=float(cfg.get("layer_norm_eps", 1e-6)),
        hidden_act=cfg.get("hidden_act", "gelu_pytorch_tanh"),
    )
    patch = _shape(shapes, "vit_model.vision_model.embeddings.patch_embedding.weight", weights_file)
    flat = arch.num_channels * arch.patch_size**2
    if tuple(patch) not in ((arch.hidden_size, flat), (arch.hidden_size, arch.num_channels, arch.patch_size, arch.patch_size)):
        raise CheckpointError(
            f"{f}: hidden_size {arch.hidden_size} / patch_size {arch.patch_size} give a patch embedding of "
            f"({arch.hidden_size}, {flat}), but {weights_file} has {tuple(patch)}"
        )
    pos = _shape(shapes, "vit_model.vision_model.embeddings.position_embedding.weight", weights_file)
    if pos[0] != arch.num_positions:
        raise CheckpointError(
            f"{f}: image_size {arch.image_size} / patch_size {arch.patch_size} give {arch.num_positions} positions, "
            f"but {weights_file} has {pos[0]} (vit_model...position_embedding.weight)"
        )
    return arch


def vae_arch_from_shapes(shapes: dict[str, torch.Size], file: str = "ae.safetensors") -> VAEArch:
    """The FLUX AE geometry from its tensor shapes (official: ch 128, ch_mult 1,2,4,4, 2 res blocks, z 16)."""
    conv_in = _shape(shapes, "encoder.conv_in.weight", file)
    ch = conv_in[0]
    levels = sorted({int(m.group(1)) for k in shapes if (m := re.match(r"^encoder\.down\.(\d+)\.", k))})
    if not levels:
        raise CheckpointError(f"{file}: no encoder.down.* tensors")
    blocks = {int(m.group(1)) for k in shapes if (m := re.match(r"^encoder\.down\.0\.block\.(\d+)\.", k))}
    ch_mult = tuple(_shape(shapes, f"encoder.down.{i}.block.0.conv1.weight", file)[0] // ch for i in levels)
    z2 = _shape(shapes, "encoder.conv_out.weight", file)[0]
    z = _shape(shapes, "decoder.conv_in.weight", file)[1]
    if z2 != 2 * z:
        raise CheckpointError(f"{file}: encoder.conv_out gives {z2} channels, expected 2 x decoder z_channels {z}")
    return VAEArch(ch=ch, ch_mult=ch_mult, num_res_blocks=len(blocks), z_channels=z,
                   in_channels=conv_in[1], out_ch=_shape(shapes, "decoder.conv_out.weight", file)[0])


def bagel_arch_from_files(
    llm_cfg: dict, vit_cfg: dict, config: dict, shapes: dict[str, torch.Size], ae_shapes: dict[str, torch.Size],
    weights_file: str,
) -> BagelArch:
    """Builds and checks the architecture; every contradiction raises a one-line CheckpointError."""
    llm = llm_arch_from_config(llm_cfg)
    _check_llm_against_weights(llm, shapes, weights_file)
    for key in ("language_model.model.layers.0.self_attn.q_proj_moe_gen.weight",
                "language_model.model.layers.0.self_attn.q_norm.weight"):
        _shape(shapes, key, weights_file)  # a MoT checkpoint with qk norms
    vit = vit_arch_from_config(vit_cfg, shapes, weights_file)
    vae = vae_arch_from_shapes(ae_shapes)
    latent_rows = _shape(shapes, "latent_pos_embed.pos_embed", weights_file)[0]
    side = math.isqrt(latent_rows)
    if side * side != latent_rows:
        raise CheckpointError(f"{weights_file}: latent_pos_embed.pos_embed has {latent_rows} rows, not a square")
    vit_rows = _shape(shapes, "vit_pos_embed.pos_embed", weights_file)[0]
    vit_side = math.isqrt(vit_rows)
    if vit_side * vit_side != vit_rows:
        raise CheckpointError(f"{weights_file}: vit_pos_embed.pos_embed has {vit_rows} rows, not a square")
    if vit.image_size // vit.patch_size != vit_side:
        raise CheckpointError(
            f"vit_config.json: image_size {vit.image_size} / patch_size {vit.patch_size} give a position table side "
            f"of {vit.image_size // vit.patch_size}, but {weights_file}'s vit_pos_embed.pos_embed has side {vit_side}"
        )
    patch_dim = _shape(shapes, "vae2llm.weight", weights_file)[1]
    latent_patch = config.get("latent_patch_size", 2)
    if patch_dim != latent_patch**2 * vae.z_channels:
        raise CheckpointError(
            f"{weights_file}: vae2llm.weight takes {patch_dim} inputs, but latent_patch_size {latent_patch} and "
            f"ae.safetensors' {vae.z_channels} latent channels give {latent_patch**2 * vae.z_channels}"
        )
    if config.get("interpolate_pos"):
        raise CheckpointError("config.json: interpolate_pos=True is not supported (the official models extrapolate)")
    limits = config.get("unicorn_image_limits") or {}
    return BagelArch(
        llm=llm, vit=vit, vae=vae, max_latent_size=side, vit_max_num_patch_per_side=vit_side,
        latent_patch_size=latent_patch,
        connector_act=config.get("connector_act", "gelu_pytorch_tanh"),
        vae_min_image_size=int(limits.get("vae_min_image_size", 512)),
        vit_min_image_size=int(limits.get("vit_min_image_size", 224)),
    )
