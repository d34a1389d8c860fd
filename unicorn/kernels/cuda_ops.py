"""The optional plain-CUDA ops of ``csrc/`` (extension ``unicorn._C``), or ``None`` when it was not built.

Callers check :data:`ops` (or :func:`available`) and fall back to the Triton or torch path themselves.
"""
from __future__ import annotations

import torch

try:
    from unicorn import _C as ops  # built by setup.py only with CUDA torch and nvcc
except ImportError:
    ops = None


def available() -> bool:
    return ops is not None and torch.cuda.is_available()


def _stream() -> int:
    return torch.cuda.current_stream().cuda_stream


def store_kv(key, value, key_cache, value_cache, slot_mapping, k_scale: float = 1.0, v_scale: float = 1.0) -> None:
    """Same contract as :func:`unicorn.kernels.store_kv.store_kv` (slot_mapping int64)."""
    ops.store_kv(key, value, key_cache, value_cache, slot_mapping.long(), float(k_scale), float(v_scale), _stream())


def uniform_noise(seeds: torch.Tensor, steps: torch.Tensor, vocab: int) -> torch.Tensor:
    """Same values as :func:`unicorn.kernels.sampling.uniform_noise_ref`."""
    return ops.uniform_noise(seeds.long().contiguous(), steps.long().contiguous(), int(vocab), _stream())


def gumbel_argmax(scores: torch.Tensor, seeds: torch.Tensor, steps: torch.Tensor, temperature: torch.Tensor):
    """argmax_j(scores + gumbel(u(seed, step, j))) per row; scores: [B, V] fp32 with filtered tokens at -inf."""
    return ops.gumbel_argmax(scores, seeds.long(), steps.long(), temperature.float().contiguous(), _stream())
