"""Turns user prompts into token ids and placed images (the unconditional prompt is ModelSpec.content_free)."""
from __future__ import annotations

import hashlib
from typing import Callable

from unicorn.engine.sequence import ImageInput


class RequestError(ValueError):
    """A single request cannot run (its output carries the reason; the other requests still finish)."""


def image_content_hash(image) -> int:
    """Identifies an image's pixels, so prefix caching never mixes two images behind the same placeholders."""
    digest = hashlib.sha256()
    digest.update(f"{image.mode}{image.size}".encode())
    digest.update(image.tobytes())
    return int.from_bytes(digest.digest()[:8], "little")


class PromptProcessor:
    """Prompt formats of one model: its chat and image-generation templates, special ids and image inputs."""

    def __init__(self, spec, tokenizer, preprocess_images: Callable, source: str) -> None:
        self.spec = spec
        self.tokenizer = tokenizer  # None: prompts must be token ids
        self.preprocess_images = preprocess_images
        self.source = source

    def _checked(self, ids: list[int]) -> list[int]:
        if not ids:
            raise RequestError("empty prompt")
        if max(ids) >= self.spec.text_vocab_size or min(ids) < 0:
            raise RequestError(f"prompt has token ids outside the vocabulary [0, {self.spec.text_vocab_size})")
        return ids

    def text(self, prompt) -> tuple[list[int], list[ImageInput]]:
        """str -> tokenized with BOS; list[int] or {"prompt_token_ids": [...]} -> as given;
        {"messages": [...]} -> the model's chat format, images expanded to their placeholders."""
        images: list = []
        if isinstance(prompt, dict) and "messages" in prompt:
            from unicorn.models.janus_chat import understanding_prompt

            messages = prompt["messages"]
            text = understanding_prompt(messages, self.spec.num_image_tokens, prompt.get("system_prompt"))
            ids = self._tokenizer().encode(text, add_bos=True)
            images = [part["image"] for m in messages if not isinstance(m["content"], str)
                      for part in m["content"] if part.get("type") == "image"]
        elif isinstance(prompt, dict) and "prompt_token_ids" in prompt:
            ids = [int(t) for t in prompt["prompt_token_ids"]]
            images = list(prompt.get("images", []))
        elif isinstance(prompt, str):
            ids = self._tokenizer().encode(prompt, add_bos=True)
        elif isinstance(prompt, (list, tuple)) and all(isinstance(t, int) for t in prompt):
            ids = list(prompt)
        else:
            raise RequestError(
                f"unsupported prompt of type {type(prompt).__name__}: give a str, a list of token ids, "
                "{'prompt_token_ids': [...]} or {'messages': [...]}"
            )
        return ids, self._place_images(self._checked(ids), images)

    def _tokenizer(self):
        if self.tokenizer is None:
            raise RequestError(f"{self.source} has no tokenizer.json: give prompts as token ids")
        return self.tokenizer

    def _place_images(self, ids: list[int], images: list) -> list[ImageInput]:
        spec = self.spec
        starts = [i for i, t in enumerate(ids) if t == spec.image_token_id and (i == 0 or ids[i - 1] != t)]
        num_placeholders = sum(1 for t in ids if t == spec.image_token_id)
        if len(starts) != len(images) or num_placeholders != len(images) * spec.num_image_tokens:
            raise RequestError(
                f"prompt has {num_placeholders} image placeholder tokens in {len(starts)} runs for {len(images)} "
                f"images; each image needs one run of {spec.num_image_tokens}"
            )
        placed = []
        if images:
            pixels = self.preprocess_images(list(images))
            for start, image, pixel_values in zip(starts, images, pixels):
                placed.append(ImageInput(start, spec.num_image_tokens, image_content_hash(image), pixel_values))
        return placed

    def image(self, prompt) -> list[int]:
        """str -> the model's image-generation template ending in <begin_of_image>; ids -> as given."""
        if isinstance(prompt, str):
            from unicorn.models.janus_chat import generation_prompt

            return self._checked(self._tokenizer().encode(generation_prompt(prompt), add_bos=True))
        if isinstance(prompt, dict) and "prompt_token_ids" in prompt:
            prompt = prompt["prompt_token_ids"]
        if isinstance(prompt, (list, tuple)) and all(isinstance(t, int) for t in prompt):
            return self._checked(list(prompt))
        raise RequestError(f"unsupported image prompt of type {type(prompt).__name__}: give a str or token ids")

