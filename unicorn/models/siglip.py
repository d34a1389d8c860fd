"""SigLIP-style vision encoder and the MLP aligners of Janus (module names follow transformers' Janus)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unicorn.models.activations import get_activation
from unicorn.models.janus_config import VisionArch
from unicorn.models.layers import Linear


class VisionEmbeddings(nn.Module):
    def __init__(self, arch: VisionArch):
        super().__init__()
        self.patch_embedding = nn.Conv2d(arch.num_channels, arch.hidden_size, arch.patch_size, arch.patch_size)
        self.position_embedding = nn.Embedding(arch.num_image_tokens, arch.hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))
        patches = patches.flatten(2).transpose(1, 2)  # [N, grid*grid, D]
        if patches.shape[1] != self.position_embedding.num_embeddings:
            raise ValueError(
                f"pixel_values give {patches.shape[1]} patches, the vision tower expects "
                f"{self.position_embedding.num_embeddings} (resize images to the model's image_size)"
            )
        return patches + self.position_embedding.weight


class VisionAttention(nn.Module):
    def __init__(self, arch: VisionArch):
        super().__init__()
        self.num_heads = arch.num_attention_heads
        self.head_dim = arch.hidden_size // arch.num_attention_heads
        d = arch.hidden_size
        self.q_proj = Linear(d, d, bias=arch.attention_bias)
        self.k_proj = Linear(d, d, bias=arch.attention_bias)
        self.v_proj = Linear(d, d, bias=arch.attention_bias)
        self.projection_layer = Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, d = x.shape

        def heads(t):
            return t.view(n, length, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        out = F.scaled_dot_product_attention(q, k, v, scale=self.head_dim**-0.5)  # bidirectional
        return self.projection_layer(out.transpose(1, 2).reshape(n, length, d))


class VisionMLP(nn.Module):
    def __init__(self, arch: VisionArch):
        super().__init__()
        self.act = get_activation(arch.hidden_act)
        self.fc1 = Linear(arch.hidden_size, int(arch.hidden_size * arch.mlp_ratio))
        self.fc2 = Linear(int(arch.hidden_size * arch.mlp_ratio), arch.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VisionEncoderLayer(nn.Module):
    def __init__(self, arch: VisionArch):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(arch.hidden_size, eps=arch.layer_norm_eps)
        self.self_attn = VisionAttention(arch)
        self.layer_norm2 = nn.LayerNorm(arch.hidden_size, eps=arch.layer_norm_eps)
        self.mlp = VisionMLP(arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class VisionEncoder(nn.Module):
    def __init__(self, arch: VisionArch):
        super().__init__()
        self.layers = nn.ModuleList(VisionEncoderLayer(arch) for _ in range(arch.num_hidden_layers))


class VisionModel(nn.Module):
    """Patch embedding + pre-norm ViT + final LayerNorm; returns every patch's feature (no pooling)."""

    def __init__(self, arch: VisionArch):
        super().__init__()
        self.embeddings = VisionEmbeddings(arch)
        self.encoder = VisionEncoder(arch)
        self.post_layernorm = nn.LayerNorm(arch.hidden_size, eps=arch.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # pixel_values: [N, 3, S, S] -> last_hidden_state [N, (S/patch)^2, D]
        x = self.embeddings(pixel_values)
        for layer in self.encoder.layers:
            x = layer(x)
        return self.post_layernorm(x)


class MLPAligner(nn.Module):
    """fc1, then (act, linear) per extra layer: the understanding and generation aligners."""

    def __init__(self, in_dim: int, out_dim: int, num_layers: int, act: str):
        super().__init__()
        self.act = get_activation(act)
        self.fc1 = Linear(in_dim, out_dim)
        self.hidden_layers = nn.ModuleList(Linear(out_dim, out_dim) for _ in range(1, num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        for layer in self.hidden_layers:
            x = layer(self.act(x))
        return x


class GenerationHead(nn.Module):
    """LM hidden -> image-token logits (replaces lm_head while generating images)."""

    def __init__(self, in_dim: int, inner_dim: int, num_embeddings: int, act: str):
        super().__init__()
        self.act = get_activation(act)
        self.proj_out = Linear(in_dim, inner_dim)
        self.vision_head = Linear(inner_dim, num_embeddings)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The input of the last (linear) layer: an affine map of them gives the logits."""
        return self.act(self.proj_out(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vision_head(self.features(x))
