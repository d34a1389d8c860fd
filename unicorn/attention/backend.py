"""Registry of attention implementations; each engine picks one at start-up and names it in its metadata."""
from __future__ import annotations

from typing import Callable

import torch

from unicorn.attention.metadata import AttentionMetadata, KVCache
from unicorn.attention.torch_ref import paged_attention_ref

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, KVCache, AttentionMetadata, float], torch.Tensor]

_BACKENDS: dict[str, AttentionFn] = {"torch": paged_attention_ref}


def register_backend(name: str, fn: AttentionFn) -> None:
    _BACKENDS[name] = fn


def available_backends() -> list[str]:
    return sorted(_BACKENDS)


def check_backend(name: str) -> str:
    if name not in _BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; available: {', '.join(available_backends())}")
    return name


def paged_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: KVCache, meta: AttentionMetadata, scale: float
) -> torch.Tensor:
    """Writes k/v ([T, Hkv, D]) into ``cache`` and returns attention of q ([T, Hq, D]) over each context."""
    return _BACKENDS[meta.backend](q, k, v, cache, meta, scale)
