"""What the engine returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TextSample:
    text: str | None  # None when the checkpoint has no tokenizer
    token_ids: list[int]
    finish_reason: str | None  # "stop" (EOS, a stop id or string), "length" (max_tokens or the context), "abort";
    # None while the request streams (``TextOutput.finished`` is False)
    new_token_ids: list[int] = field(default_factory=list)  # tokens since this request's previous output
    logprobs: list[Any] | None = None  # SamplingParams.logprobs: a TokenLogprob per token id


@dataclass
class TextOutput:
    """One text request's result: ``n`` samples, or ``error`` when the request could not run.

    From :meth:`Engine.step` it may be partial (``finished=False``): the samples hold the tokens so far."""

    request_id: int
    prompt_token_ids: list[int]
    samples: list[TextSample] = field(default_factory=list)
    error: str | None = None
    num_cached_tokens: int = 0
    finished: bool = True
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
    """One image request's result: ``n`` PIL images, their codebook ids ([n, num_generated_image_tokens]) and
    ``pixel_values``, the decoder's float pixels [n, 3, H, W] (its normalized range, about [-1, 1], on the
    engine's device), which a text request takes as an image part as they are (no uint8 round trip).

    ``finish_reasons`` per image: "length" (all its tokens) or "abort" (then ``image_tokens`` holds the codes
    so far and there are no images). Image outputs are always final (``finished`` is True)."""

    request_id: int
    prompt_token_ids: list[int]
    images: list[Any] = field(default_factory=list)
    image_tokens: Any = None
    error: str | None = None
    num_cached_tokens: int = 0
    finished: bool = True
    finish_reasons: list[str] = field(default_factory=list)
    pixel_values: Any = None  # None when not decoded (aborted, or decode=False)
    # Flow-matching models (BAGEL): the final latents [n, num_latent_tokens, C] (image_tokens is None); "length"
    # in finish_reasons means every denoising step ran.
    latents: Any = None
