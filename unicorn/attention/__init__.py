"""Attention over a paged KV cache: the metadata the engine builds per step and the backends models call.

Models call :func:`paged_attention` and never see the scheduler; the engine builds an
:class:`AttentionMetadata` per step (naming the backend it chose at start-up) and passes it down explicitly.
"""
from unicorn.attention.backend import available_backends, check_backend, paged_attention, register_backend
from unicorn.attention.metadata import AttentionMetadata, KVCache

__all__ = [
    "AttentionMetadata",
    "KVCache",
    "available_backends",
    "check_backend",
    "paged_attention",
    "register_backend",
]
