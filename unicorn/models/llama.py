"""LLaMA language model (embeddings, decoder stack, final norm) over the paged KV cache or dense attention."""
from __future__ import annotations

import torch
from torch import nn

from unicorn.attention import AttentionMetadata, KVCache
from unicorn.models.janus_config import TextArch
from unicorn.models.layers import LlamaDecoderLayer, RMSNorm, RotaryEmbedding


class LlamaModel(nn.Module):
    def __init__(self, arch: TextArch):
        super().__init__()
        self.arch = arch
        self.embed_tokens = nn.Embedding(arch.vocab_size, arch.hidden_size)
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(
                arch.hidden_size,
                arch.intermediate_size,
                arch.num_attention_heads,
                arch.num_key_value_heads,
                arch.head_dim,
                arch.rms_norm_eps,
                arch.attention_bias,
                arch.mlp_bias,
            )
            for _ in range(arch.num_hidden_layers)
        )
        self.norm = RMSNorm(arch.hidden_size, arch.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(arch.head_dim, arch.rope_theta, arch.rope_scaling)

    def forward(
        self, inputs_embeds: torch.Tensor, positions: torch.Tensor, kv_caches: list[KVCache], meta: AttentionMetadata
    ) -> torch.Tensor:
        # inputs_embeds: [T, H] packed; positions: [T]
        assert len(kv_caches) == len(self.layers), (len(kv_caches), len(self.layers))
        cos, sin = self.rotary_emb(positions, inputs_embeds.dtype)
        x = inputs_embeds
        for layer, cache in zip(self.layers, kv_caches):
            x = layer(x, cos, sin, cache, meta)
        return self.norm(x)

    def forward_dense(
        self, inputs_embeds: torch.Tensor, positions: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        # inputs_embeds: [B, L, H]; positions: [B, L]; attention_mask: None (causal), [B, L] (1 = real token),
        # or a ready bool [B, 1, L, L] (True = attend; e.g. block-diagonal causal for packed training rows)
        cos, sin = self.rotary_emb(positions, inputs_embeds.dtype)
        mask = None
        if attention_mask is not None and attention_mask.dim() == 4:
            mask = attention_mask.bool()
        elif attention_mask is not None:
            length = inputs_embeds.shape[1]
            causal = torch.ones(length, length, dtype=torch.bool, device=inputs_embeds.device).tril()
            mask = causal[None] & attention_mask.bool()[:, None, :]
            # A padded query row that sees nothing would give NaN; let it see itself.
            mask = (mask | torch.eye(length, dtype=torch.bool, device=mask.device)[None])[:, None]
        x = inputs_embeds
        for layer in self.layers:
            x = layer.forward_dense(x, cos, sin, mask)
        return self.norm(x)
