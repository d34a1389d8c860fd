"""Janus architecture hyper-parameters, independent of the checkpoint layout they were read from.

Defaults follow transformers' LlamaConfig / JanusVisionConfig / JanusVQVAEConfig, because ``save_pretrained``
may leave keys at their defaults out of config.json.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from unicorn.models.errors import CheckpointError


@dataclass(frozen=True)
class TextArch:
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    attention_bias: bool = False
    mlp_bias: bool = False

    def __post_init__(self):
        if self.num_key_value_heads is None:
            object.__setattr__(self, "num_key_value_heads", self.num_attention_heads)
        if self.head_dim is None:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
        if self.hidden_act != "silu":
            raise CheckpointError(f"text hidden_act {self.hidden_act!r} is not supported (only 'silu')")
        if self.num_attention_heads % self.num_key_value_heads:
            raise CheckpointError(
                f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads {self.num_key_value_heads}"
            )


@dataclass(frozen=True)
class VisionArch:
    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    num_channels: int = 3
    image_size: int = 384
    patch_size: int = 16
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    mlp_ratio: float = 4.0
    attention_bias: bool = True
    projection_dim: int = 2048  # aligner width; must equal the text hidden size
    depth: int = 2  # aligner linear layers

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_image_tokens(self) -> int:
        return self.grid**2


@dataclass(frozen=True)
class VQArch:
    embed_dim: int = 8
    num_embeddings: int = 16384
    latent_channels: int = 256
    in_channels: int = 3
    out_channels: int = 3
    base_channels: int = 128
    channel_multiplier: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    projection_dim: int = 2048  # generation aligner width (= text hidden) and generation head inner width
    num_hidden_layers: int = 2  # generation aligner linear layers
    hidden_act: str = "gelu"
    image_token_embed_dim: int = 2048  # generation head input width (= text hidden)
    head_inner_dim: int | None = None  # generation head inner width; transformers ties it to projection_dim
    num_patches: int | None = None  # codes per side of a drawn image (transformers' field); None: the vision grid

    def __post_init__(self):
        object.__setattr__(self, "channel_multiplier", tuple(self.channel_multiplier))
        if self.head_inner_dim is None:
            object.__setattr__(self, "head_inner_dim", self.projection_dim)
        bad = [self.base_channels * m for m in self.channel_multiplier if (self.base_channels * m) % 32]
        if bad:
            raise CheckpointError(f"VQ channel counts {bad} are not multiples of 32 (GroupNorm has 32 groups)")


@dataclass(frozen=True)
class JanusArch:
    text: TextArch
    vision: VisionArch
    vq: VQArch
    tie_word_embeddings: bool = True
    extra: dict = field(default_factory=dict)

    @property
    def generation_grid(self) -> int:
        """Codes per side of a drawn image: vq_config.num_patches, else the understanding grid (as in Janus-Pro)."""
        return self.vq.num_patches or self.vision.grid

    def __post_init__(self):
        hidden = self.text.hidden_size
        checks = {
            "vision projection_dim (aligner output)": self.vision.projection_dim,
            "vq image_token_embed_dim (generation head input)": self.vq.image_token_embed_dim,
            "vq projection_dim (generation aligner output)": self.vq.projection_dim,
        }
        for name, value in checks.items():
            if value != hidden:
                raise CheckpointError(f"{name} is {value}, but the text hidden size is {hidden}")


def _pick(cls, values: dict) -> dict:
    names = set(cls.__dataclass_fields__)
    return {k: v for k, v in values.items() if k in names and v is not None}


def text_arch_from_dict(cfg: dict) -> TextArch:
    values = dict(cfg)
    rope = values.get("rope_parameters")
    if isinstance(rope, dict):  # transformers >= 5 keeps theta and scaling together
        values["rope_theta"] = rope.get("rope_theta", values.get("rope_theta", 10000.0))
        rope_type = rope.get("rope_type", "default")
        values["rope_scaling"] = None if rope_type == "default" else dict(rope)
    elif isinstance(values.get("rope_scaling"), dict):
        values["rope_scaling"] = dict(values["rope_scaling"])
    return TextArch(**_pick(TextArch, values))


def janus_arch_from_hf_config(config: dict) -> JanusArch:
    """Reads a transformers-layout (``model_type: janus``) config.json."""
    text = text_arch_from_dict(config.get("text_config") or {})
    vision_cfg = dict(config.get("vision_config") or {})
    if vision_cfg.get("use_qk_norm"):
        raise CheckpointError("vision_config.use_qk_norm=True is not supported")
    for key in ("image_size", "patch_size"):
        if isinstance(vision_cfg.get(key), (list, tuple)):
            h, w = vision_cfg[key]
            if h != w:
                raise CheckpointError(f"non-square vision {key} {vision_cfg[key]} is not supported")
            vision_cfg[key] = h
    vision = VisionArch(**_pick(VisionArch, vision_cfg))
    vq_cfg = dict(config.get("vq_config") or {})
    if vq_cfg.get("double_latent"):
        raise CheckpointError("vq_config.double_latent=True is not supported")
    vq = VQArch(**_pick(VQArch, vq_cfg))
    drawn = vq.num_patches and vq.num_patches * 2 ** (len(vq.channel_multiplier) - 1)
    if drawn and drawn != vision.image_size:  # else drawings would decode at another size than understanding reads
        raise CheckpointError(
            f"vq_config.num_patches={vq.num_patches} x the VQ's {drawn // vq.num_patches}x downsampling = {drawn} px, "
            f"but vision_config.image_size is {vision.image_size}"
        )
    declared = vision_cfg.get("num_image_tokens")
    if declared is not None and declared != vision.num_image_tokens:
        raise CheckpointError(
            f"vision_config.num_image_tokens={declared} but (image_size/patch_size)^2={vision.num_image_tokens}"
        )
    return JanusArch(text=text, vision=vision, vq=vq, tie_word_embeddings=bool(config.get("tie_word_embeddings", True)))
