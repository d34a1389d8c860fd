"""What the engine needs to know about a loaded model, without importing the model class."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


class PromptFormat(Protocol):
    """A model family's prompt templates, reached through the model object (``model.prompt_format``), so the
    engine formats prompts without importing the family."""

    # Optional ``add_bos = False``: prompts are tokenized without a leading BOS (BAGEL).

    def understanding_prompt(self, messages: list[dict], num_image_tokens: int | list[int],
                             system_prompt: str | None = None) -> str:
        """Chat messages (images as parts) -> the prompt text, each image expanded to ``num_image_tokens``
        placeholders (a list: one count per image, for models whose ``image_token_count`` varies); tokenized
        with a leading BOS unless ``add_bos`` is False."""

    def generation_prompt(self, text: str) -> str:
        """A text-to-image prompt -> the prompt text ending in the begin-of-image tag; tokenized with a leading BOS."""


@dataclass(frozen=True)
class SpecialTokenIds:
    """Special ids of a checkpoint. Any may be None (the checkpoint does not name it); each is needed only by the
    prompt forms that use it, which say so when it is missing."""

    bos_token_id: int | None
    eos_token_id: int | None  # None: text runs to max_tokens
    pad_token_id: int | None  # the content-free prompt
    image_token_id: int | None  # placeholder expanded to num_image_tokens understanding features
    boi_token_id: int | None  # <begin_of_image>: the content-free prompt
    eoi_token_id: int | None  # <end_of_image>: only inside chat templates (from the tokenizer), never as an id


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
    num_image_tokens: int  # understanding features per image
    image_size: int
    bos_token_id: int | None
    eos_token_id: int | None
    pad_token_id: int | None
    image_token_id: int | None
    boi_token_id: int | None
    eoi_token_id: int | None
    dtype: torch.dtype
    # codes per drawn image; 0: the same as num_image_tokens (Janus-Pro uses one count for both, transformers too)
    num_generated_image_tokens: int = 0

    def __post_init__(self):
        assert self.num_heads % self.num_kv_heads == 0, (self.num_heads, self.num_kv_heads)
        assert self.num_layers > 0 and self.head_dim > 0 and self.num_image_tokens > 0
        if not self.num_generated_image_tokens:
            object.__setattr__(self, "num_generated_image_tokens", self.num_image_tokens)

    def content_free(self, ids: list[int]) -> list[int]:
        """The unconditional prompt of classifier-free guidance: every id but BOS and <begin_of_image> becomes pad (as
        Janus trains it). The engine samples with it and the trainer drops prompts to it, so the two always agree.

        Raises ValueError when the checkpoint names no <begin_of_image> or pad id."""
        missing = [name for name in ("boi_token_id", "pad_token_id") if getattr(self, name) is None]
        if missing:
            raise ValueError(
                f"the checkpoint names no {' or '.join(missing)} (generation_config.json, config.json or the "
                "tokenizer files), which the content-free prompt of classifier-free guidance needs; use cfg_scale=1"
            )
        keep = {self.bos_token_id, self.boi_token_id}
        return [t if t in keep else self.pad_token_id for t in ids]

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes of K and V over all layers for one cached token."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * torch.empty((), dtype=self.dtype).element_size()
