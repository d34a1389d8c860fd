"""What the engine needs to know about a loaded model, without importing the model class."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SpecialTokenIds:
    bos_token_id: int
    eos_token_id: int
    pad_token_id: int
    image_token_id: int  # placeholder expanded to num_image_tokens understanding features
    boi_token_id: int  # <begin_of_image>
    eoi_token_id: int  # <end_of_image>


@dataclass(frozen=True)
class ModelSpec:
    """Shapes and special ids of a unified multimodal model, as the engine sizes its caches and prompts."""

    model_type: str
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    text_vocab_size: int
    image_vocab_size: int
    max_position_embeddings: int
    num_image_tokens: int
    image_size: int
    bos_token_id: int
    eos_token_id: int
    pad_token_id: int
    image_token_id: int
    boi_token_id: int
    eoi_token_id: int
    dtype: torch.dtype

    def __post_init__(self):
        assert self.num_heads % self.num_kv_heads == 0, (self.num_heads, self.num_kv_heads)
        assert self.num_layers > 0 and self.head_dim > 0 and self.num_image_tokens > 0

    def content_free(self, ids: list[int]) -> list[int]:
        """The unconditional prompt of classifier-free guidance: every id but BOS and <begin_of_image> becomes pad (as
        Janus trains it). The engine samples with it and the trainer drops prompts to it, so the two always agree."""
        keep = {self.bos_token_id, self.boi_token_id}
        return [t if t in keep else self.pad_token_id for t in ids]

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes of K and V over all layers for one cached token."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * torch.empty((), dtype=self.dtype).element_size()
