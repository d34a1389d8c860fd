"""SigLIP NaViT encoder of BAGEL: images of any size (multiples of the patch) packed into one sequence.

Module names follow ``vit_model.vision_model.*`` in ``ema.safetensors``. The patch embedding is a linear layer
over patches flattened as (row, col, channel) -- the official checkpoint stores the converted conv that way.
Positions index a learned table by ``row * max_patches_per_side + col`` (extrapolation, no rope).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unicorn.models.activations import get_activation
from unicorn.models.bagel_config import ViTArch


def patchify(image: torch.Tensor, patch: int) -> torch.Tensor:
    """[C, H, W] -> [(H/p)*(W/p), p*p*C], row-major patches, each flattened (row, col, channel)."""
    c, h, w = image.shape
    if h % patch or w % patch:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {patch}")
    x = image.reshape(c, h // patch, patch, w // patch, patch)
    return x.permute(1, 3, 2, 4, 0).reshape(-1, patch * patch * c)


def flattened_positions(height: int, width: int, patch: int, side: int) -> torch.Tensor:
    """Position ids of a height x width image's patches in a side x side table (row * side + col)."""
    rows, cols = height // patch, width // patch
    if rows > side or cols > side:
        raise ValueError(
            f"image of {height}x{width} px has {rows}x{cols} patches of {patch}, above the {side}x{side} position table"
        )
    return (torch.arange(rows)[:, None] * side + torch.arange(cols)[None, :]).flatten()


class NaViTAttention(nn.Module):
    def __init__(self, arch: ViTArch):
        super().__init__()
        d = arch.hidden_size
        self.num_heads = arch.num_attention_heads
        self.head_dim = d // self.num_heads
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, seq_lens: list[int]) -> torch.Tensor:
        # x: [N, D] patches of all images back to back; attention stays inside each image.
        n = x.shape[0]
        q, k, v = (p(x).view(n, self.num_heads, self.head_dim).transpose(0, 1) for p in (self.q_proj, self.k_proj, self.v_proj))
        outs, start = [], 0
        for length in seq_lens:
            sl = slice(start, start + length)
            outs.append(F.scaled_dot_product_attention(q[:, sl], k[:, sl], v[:, sl], scale=self.head_dim**-0.5))
            start += length
        out = torch.cat(outs, dim=1).transpose(0, 1).reshape(n, -1)
        return self.out_proj(out)


class NaViTMLP(nn.Module):
    def __init__(self, arch: ViTArch):
        super().__init__()
        self.act = get_activation(arch.hidden_act)
        self.fc1 = nn.Linear(arch.hidden_size, arch.intermediate_size)
        self.fc2 = nn.Linear(arch.intermediate_size, arch.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class NaViTLayer(nn.Module):
    def __init__(self, arch: ViTArch):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(arch.hidden_size, eps=arch.layer_norm_eps)
        self.self_attn = NaViTAttention(arch)
        self.layer_norm2 = nn.LayerNorm(arch.hidden_size, eps=arch.layer_norm_eps)
        self.mlp = NaViTMLP(arch)

    def forward(self, x: torch.Tensor, seq_lens: list[int]) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), seq_lens)
        return x + self.mlp(self.layer_norm2(x))


class NaViTEmbeddings(nn.Module):
    def __init__(self, arch: ViTArch):
        super().__init__()
        self.patch_embedding = nn.Linear(arch.num_channels * arch.patch_size**2, arch.hidden_size)
        self.position_embedding = nn.Embedding(arch.num_positions, arch.hidden_size)


class NaViTEncoder(nn.Module):
    def __init__(self, arch: ViTArch):
        super().__init__()
        self.layers = nn.ModuleList(NaViTLayer(arch) for _ in range(arch.num_hidden_layers))


class NaViTTransformer(nn.Module):
    def __init__(self, arch: ViTArch):
        super().__init__()
        self.embeddings = NaViTEmbeddings(arch)
        self.encoder = NaViTEncoder(arch)
        self.post_layernorm = nn.LayerNorm(arch.hidden_size, eps=arch.layer_norm_eps)

    def forward(self, patches: torch.Tensor, position_ids: torch.Tensor, seq_lens: list[int]) -> torch.Tensor:
        # patches: [N, p*p*C]; position_ids: [N]; seq_lens: patches per image -> [N, D]
        x = self.embeddings.patch_embedding(patches.to(self.embeddings.patch_embedding.weight.dtype))
        x = x + self.embeddings.position_embedding(position_ids)
        for layer in self.encoder.layers:
            x = layer(x, seq_lens)
        return self.post_layernorm(x)


class NaViT(nn.Module):
    """``vit_model``: holds ``vision_model`` so parameter names match the checkpoint."""

    def __init__(self, arch: ViTArch):
        super().__init__()
        self.arch = arch
        self.vision_model = NaViTTransformer(arch)

    def forward(self, patches: torch.Tensor, position_ids: torch.Tensor, seq_lens: list[int]) -> torch.Tensor:
        return self.vision_model(patches, position_ids, seq_lens)
