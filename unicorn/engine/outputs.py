"""What the engine returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TextSample:
    text: str | None  # None when the checkpoint has no tokenizer
    token_ids: list[int]
    finish_reason: str  # "stop" (EOS, a stop id or string), "length" (max_tokens or the context) or "error"
    logprobs: list[Any] | None = None  # SamplingParams.logprobs: a TokenLogprob per token id


@dataclass
class TextOutput:
    """One text request's result: ``n`` samples, or ``error`` when the request could not run."""

    request_id: int
    prompt_token_ids: list[int]
    samples: list[TextSample] = field(default_factory=list)
    error: str | None = None
    num_cached_tokens: int = 0
    # SamplingParams.prompt_logprobs: a TokenLogprob per prompt token (None for the first, which has no prefix)
    prompt_logprobs: list[Any] | None = None

    @property
    def text(self) -> str | None:
        return self.samples[0].text if self.samples else None

    @property
    def token_ids(self) -> list[int]:
        return self.samples[0].token_ids if self.samples else []

    @property
    def finish_reason(self) -> str:
        return self.samples[0].finish_reason if self.samples else "error"


@dataclass
class ImageOutput:
    """One image request's result: ``n`` PIL images and their codebook ids ([n, num_image_tokens])."""

    request_id: int
    prompt_token_ids: list[int]
    images: list[Any] = field(default_factory=list)
    image_tokens: Any = None
    error: str | None = None
    num_cached_tokens: int = 0
