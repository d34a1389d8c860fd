"""Shared transformer layers: RMSNorm, rotary embedding, and a LLaMA decoder layer on the paged KV cache.

``rms_norm``, ``apply_rope`` and ``silu_and_mul`` are small free functions on purpose: the kernels task swaps
them for Triton launchers without touching the modules.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from unicorn.attention import AttentionMetadata, KVCache, paged_attention
from unicorn.kernels import cpu_fused, cpu_linear, dispatch


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm (fp32 statistics, cast back before the weight); a Triton kernel on CUDA at inference."""
    return dispatch.rms_norm(x, weight, eps)


def silu_and_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return dispatch.swiglu(gate, up)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [..., heads, head_dim]; cos, sin: [..., head_dim] (one row per token, broadcast over heads). On fp32 CPU
    tensors at inference, one pass in C++ (unicorn.kernels.cpu_fused, the same bits)."""
    if x.dim() == 3 and cos.dim() == 2 and x.stride(-1) == 1 and cpu_fused.usable(x, cos, sin):
        return cpu_fused.rope(x, cos, sin)
    return apply_rope_ref(x, cos, sin)


def apply_rope_ref(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    cos = cos.unsqueeze(-2)
    sin = sin.unsqueeze(-2)
    return x * cos + _rotate_half(x) * sin


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def rope_inv_freq(head_dim: int, rope_theta: float, rope_scaling: dict | None) -> torch.Tensor:
    """Inverse frequencies of LLaMA rope ([head_dim // 2], fp32), with the "linear" and "llama3" scalings."""
    inv_freq = 1.0 / (rope_theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    rope_type = (rope_scaling or {}).get("rope_type", (rope_scaling or {}).get("type", "default"))
    if rope_type == "default":
        return inv_freq
    if rope_type == "linear":
        return inv_freq / float(rope_scaling["factor"])
    if rope_type == "llama3":
        factor = float(rope_scaling["factor"])
        low_freq_factor = float(rope_scaling["low_freq_factor"])
        high_freq_factor = float(rope_scaling["high_freq_factor"])
        old_context = float(rope_scaling["original_max_position_embeddings"])
        low_freq_wavelen = old_context / low_freq_factor
        high_freq_wavelen = old_context / high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
        return torch.where(is_medium, smoothed, scaled)
    raise NotImplementedError(
        f"rope scaling type {rope_type!r} is not implemented (supported: default, linear, llama3)"
    )


class RotaryEmbedding(nn.Module):
    """cos/sin tables for explicit per-token positions (positions are tracked apart from cache length)."""

    def __init__(self, head_dim: int, rope_theta: float = 10000.0, rope_scaling: dict | None = None):
        super().__init__()
        self.head_dim = head_dim
        self.rope_theta = rope_theta
        self.rope_scaling = rope_scaling
        self.register_buffer("inv_freq", rope_inv_freq(head_dim, rope_theta, rope_scaling), persistent=False)

    def reset_inv_freq(self) -> None:
        """Recomputes the fp32 table (after the module was built on the meta device or cast to low precision)."""
        self.inv_freq = rope_inv_freq(self.head_dim, self.rope_theta, self.rope_scaling).to(self.inv_freq.device)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # positions: [...] int -> cos, sin: [..., head_dim]
        freqs = positions.float()[..., None] * self.inv_freq.float()
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)


class Linear(nn.Linear):
    """nn.Linear (same parameters and state dict) whose fp32 CPU inference runs oneDNN's GEMM on a packed copy of
    the weight (unicorn.kernels.cpu_linear); F.linear everywhere else."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.packed_weight = cpu_linear.PackedWeight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.packed_weight(x, self.weight, self.bias)


class FusedLinears:
    """One GEMM for linear layers that read the same input (q/k/v, gate/up) in the engine's paged forward.

    The weights are concatenated once and the layers' parameters re-pointed at slices of the concatenation
    (``param.data``; the Parameter objects, names and state dict stay), so no second copy is kept and an in-place
    weight update lands in the fused weight too. If a parameter's storage is replaced (sleep/wake, a reload,
    ``.to()``) the concatenation is rebuilt at the next call. Outside inference mode (training, evaluation under
    no_grad, wrapped or sharded parameters) the layers run apart and nothing is re-pointed."""

    def __init__(self, *linears: nn.Linear) -> None:
        self.linears = linears
        self.sizes = [layer.out_features for layer in linears]
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None
        self._pointers: tuple = ()
        self.enabled = True  # False: the layers apart (bench/janus_images.py --compare times the previous path)
        self.packed_weight = cpu_linear.PackedWeight()

    def _params(self) -> list[torch.Tensor]:
        return [layer.weight for layer in self.linears] + [layer.bias for layer in self.linears
                                                           if layer.bias is not None]

    def _current(self) -> tuple:
        return tuple(p.data_ptr() for p in self._params())  # a new dtype or device is a new storage too

    def _build(self) -> None:
        # Outside inference mode: the parameters become views of these tensors and training may use them later.
        with torch.inference_mode(False), torch.no_grad():
            self.weight = torch.cat([layer.weight.detach() for layer in self.linears])
            biases = [layer.bias for layer in self.linears]
            self.bias = None if any(b is None for b in biases) else torch.cat([b.detach() for b in biases])
            for layer, weight in zip(self.linears, self.weight.split(self.sizes)):
                layer.weight.data = weight
            if self.bias is not None:
                for layer, bias in zip(self.linears, self.bias.split(self.sizes)):
                    layer.bias.data = bias
        self._pointers = self._current()

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not (self.enabled and torch.is_inference_mode_enabled()):
            return tuple(layer(x) for layer in self.linears)
        if self._current() != self._pointers:
            self._build()
        return self.packed(x).split(self.sizes, dim=-1)

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        """The layers' outputs side by side in one tensor [..., sum of out_features]."""
        if not (self.enabled and torch.is_inference_mode_enabled()):
            return torch.cat([layer(x) for layer in self.linears], dim=-1)
        if self._current() != self._pointers:
            self._build()
        return self.packed_weight(x, self.weight, self.bias, parts=tuple(self._params()))


class LlamaAttention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int, head_dim: int, bias: bool = False):
        super().__init__()
        assert num_heads % num_kv_heads == 0, (num_heads, num_kv_heads)
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.scale = head_dim**-0.5
        self.q_proj = Linear(hidden_size, num_heads * head_dim, bias=bias)
        self.k_proj = Linear(hidden_size, num_kv_heads * head_dim, bias=bias)
        self.v_proj = Linear(hidden_size, num_kv_heads * head_dim, bias=bias)
        self.o_proj = Linear(num_heads * head_dim, hidden_size, bias=bias)
        self.qkv = FusedLinears(self.q_proj, self.k_proj, self.v_proj)

    def _qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, fused: bool = False):
        lead = x.shape[:-1]
        q, k, v = self.qkv(x) if fused else (self.q_proj(x), self.k_proj(x), self.v_proj(x))
        q = q.view(*lead, self.num_heads, self.head_dim)
        k = k.view(*lead, self.num_kv_heads, self.head_dim)
        v = v.view(*lead, self.num_kv_heads, self.head_dim)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache, meta: AttentionMetadata
    ) -> torch.Tensor:
        # x: [T, H] packed tokens of all sequences
        q, k, v = self._qkv(x, cos, sin, fused=True)
        out = paged_attention(q, k, v, cache, meta, self.scale)
        return self.o_proj(out.reshape(x.shape[0], self.num_heads * self.head_dim))

    def forward_dense(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attn_mask: torch.Tensor | None
    ) -> torch.Tensor:
        # x: [B, L, H]; attn_mask: None (plain causal) or bool [B, 1, L, L], True = attend
        batch, length, _ = x.shape
        q, k, v = (t.transpose(1, 2) for t in self._qkv(x, cos, sin))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=attn_mask is None, scale=self.scale,
            enable_gqa=self.num_heads != self.num_kv_heads,
        )
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim))


class LlamaMLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool = False):
        super().__init__()
        self.gate_proj = Linear(hidden_size, intermediate_size, bias=bias)
        self.up_proj = Linear(hidden_size, intermediate_size, bias=bias)
        self.down_proj = Linear(intermediate_size, hidden_size, bias=bias)
        self.gate_up = FusedLinears(self.gate_proj, self.up_proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(silu_and_mul(self.gate_proj(x), self.up_proj(x)))

    def forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        """As forward, with gate and up in one GEMM under inference mode (see FusedLinears)."""
        gate, up = self.gate_up(x)
        if torch.is_inference_mode_enabled() and gate.device.type == "cpu":
            # the GEMM's output is scratch: silu and the product in place save two [T, I] buffers
            if gate.dim() == 2 and cpu_fused.usable(gate, up):
                return self.down_proj(cpu_fused.silu_mul_(gate, up))  # one pass, the same bits
            return self.down_proj(F.silu(gate, inplace=True).mul_(up))
        return self.down_proj(silu_and_mul(gate, up))


class LlamaDecoderLayer(nn.Module):
    """Pre-norm attention + SwiGLU MLP; module names follow transformers' LlamaDecoderLayer."""

    def __init__(
        self,
        hidden_size: int,
        intermediate_size: int,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        rms_norm_eps: float = 1e-6,
        attention_bias: bool = False,
        mlp_bias: bool = False,
    ):
        super().__init__()
        self.self_attn = LlamaAttention(hidden_size, num_heads, num_kv_heads, head_dim, bias=attention_bias)
        self.mlp = LlamaMLP(hidden_size, intermediate_size, bias=mlp_bias)
        self.input_layernorm = RMSNorm(hidden_size, rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(hidden_size, rms_norm_eps)

    def forward(self, x, cos, sin, cache: KVCache, meta: AttentionMetadata) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, meta)
        return x + self.mlp.forward_fused(self.post_attention_layernorm(x))

    def forward_dense(self, x, cos, sin, attn_mask) -> torch.Tensor:
        x = x + self.self_attn.forward_dense(self.input_layernorm(x), cos, sin, attn_mask)
        return x + self.mlp(self.post_attention_layernorm(x))
