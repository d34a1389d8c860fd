"""Turns user prompts into token ids and placed images (the unconditional prompt is ModelSpec.content_free).

The templates come from the model (``model.prompt_format``, see unicorn.models.spec.PromptFormat): the engine
names no model family.
"""
from __future__ import annotations

import hashlib
from typing import Callable

import torch

from unicorn.engine.sequence import ImageInput


class RequestError(ValueError):
    """A single request cannot run (its output carries the reason; the other requests still finish)."""


def image_content_hash(image) -> int:
    """Identifies an image's pixels, so prefix caching never mixes two images behind the same placeholders.

    A PIL image hashes its mode, size and bytes; a tensor its dtype, shape and bytes (so a tensor and its
    PIL rendering, which differ by rounding, never share cached blocks)."""
    digest = hashlib.sha256()
    if isinstance(image, torch.Tensor):
        data = image.detach().to("cpu").contiguous()
        digest.update(f"tensor{data.dtype}{tuple(data.shape)}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    else:
        digest.update(f"{image.mode}{image.size}".encode())
        digest.update(image.tobytes())
    return int.from_bytes(digest.digest()[:8], "little")


class PromptProcessor:
    """Prompt formats of one model: its chat and image-generation templates, special ids and image inputs.

    ``prompt_format`` (the model's, with ``understanding_prompt`` and ``generation_prompt``) is needed only for
    str and messages prompts, the tokenizer likewise; token-id prompts need neither."""

    def __init__(self, spec, tokenizer, preprocess_images: Callable, source: str, prompt_format=None,
                 image_token_count: Callable | None = None, image_block_margin: tuple[int, int] | None = None) -> None:
        self.spec = spec
        self.tokenizer = tokenizer  # None: prompts must be token ids
        self.preprocess_images = preprocess_images
        self.source = source
        self.prompt_format = prompt_format  # None: prompts must be token ids
        # Models whose images take a variable number of tokens give image_token_count(pixel_values) -> int
        # (None: every image takes spec.num_image_tokens). Models with bidirectional image blocks give
        # image_block_margin = (tokens before, tokens after) the placeholder run that belong to the block
        # (its markers); see ImageInput.span.
        self.image_token_count = image_token_count
        self.image_block_margin = image_block_margin

    @property
    def add_bos(self) -> bool:
        return getattr(self.prompt_format, "add_bos", True)

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
        pixels = None
        if isinstance(prompt, dict) and "messages" in prompt:
            messages = prompt["messages"]
            images = [part["image"] for m in messages if not isinstance(m["content"], str)
                      for part in m["content"] if part.get("type") == "image"]
            counts: int | list[int] = self.spec.num_image_tokens
            if self.image_token_count is not None:  # the template expands each image to its own count
                pixels = self._preprocess(images)
                counts = [self.image_token_count(p) for p in pixels]
            text = self._format().understanding_prompt(messages, counts, prompt.get("system_prompt"))
            ids = self._tokenizer().encode(text, add_bos=self.add_bos)
        elif isinstance(prompt, dict) and "prompt_token_ids" in prompt:
            ids = [int(t) for t in prompt["prompt_token_ids"]]
            images = list(prompt.get("images", []))
        elif isinstance(prompt, str):
            ids = self._tokenizer().encode(prompt, add_bos=self.add_bos)
        elif isinstance(prompt, (list, tuple)) and all(isinstance(t, int) for t in prompt):
            ids = list(prompt)
        else:
            raise RequestError(
                f"unsupported prompt of type {type(prompt).__name__}: give a str, a list of token ids, "
                "{'prompt_token_ids': [...]} or {'messages': [...]}"
            )
        return ids, self._place_images(self._checked(ids), images, pixels)

    def _tokenizer(self):
        if self.tokenizer is None:
            raise RequestError(f"{self.source} has no tokenizer.json: give prompts as token ids")
        return self.tokenizer

    def _format(self):
        if self.prompt_format is None:
            raise RequestError(f"the model of {self.source} has no prompt_format: give prompts as token ids")
        return self.prompt_format

    def unconditional(self, ids: list[int]) -> list[int]:
        """The content-free prompt of classifier-free guidance (RequestError when the checkpoint lacks its ids)."""
        try:
            return self.spec.content_free(ids)
        except ValueError as err:
            raise RequestError(str(err)) from None

    def _preprocess(self, images: list) -> list:
        if not images:
            return []
        try:
            return list(self.preprocess_images(list(images)))
        except ValueError as err:  # e.g. a tensor of the wrong shape or dtype
            raise RequestError(str(err)) from None

    def _place_images(self, ids: list[int], images: list, pixels: list | None = None,
                      encoders: list | None = None) -> list[ImageInput]:
        spec = self.spec
        if images and spec.image_token_id is None:
            raise RequestError(f"{self.source} names no image_token_id in config.json: it cannot take images")
        starts = [i for i, t in enumerate(ids) if t == spec.image_token_id and (i == 0 or ids[i - 1] != t)]
        num_placeholders = sum(1 for t in ids if t == spec.image_token_id)
        if self.image_token_count is None:
            if len(starts) != len(images) or num_placeholders != len(images) * spec.num_image_tokens:
                raise RequestError(
                    f"prompt has {num_placeholders} image placeholder tokens in {len(starts)} runs for {len(images)} "
                    f"images; each image needs one run of {spec.num_image_tokens}"
                )
        elif len(starts) != len(images):
            raise RequestError(f"prompt has {len(starts)} runs of image placeholder tokens for {len(images)} images")
        if not images:
            return []
        if pixels is None:
            pixels = self._preprocess(images)
        placed = []
        encoders = encoders or [None] * len(images)
        for k, (start, image, pixel_values, encoder) in enumerate(zip(starts, images, pixels, encoders)):
            length = spec.num_image_tokens
            if self.image_token_count is not None:
                length = (self.image_token_count(pixel_values) if encoder is None
                          else self.image_token_count(pixel_values, encoder))
                run = next((j for j in range(start, len(ids)) if ids[j] != spec.image_token_id), len(ids)) - start
                if run != length:
                    raise RequestError(f"image {k} takes {length} placeholder tokens but its run in the prompt has {run}")
            span = None
            if self.image_block_margin is not None:
                before, after = self.image_block_margin
                span = (start - before, start + length + after)
                if span[0] < 0 or span[1] > len(ids):
                    raise RequestError(f"image {k}'s block (its markers around the placeholders) runs past the prompt")
            placed.append(ImageInput(start, length, image_content_hash(image), pixel_values, span, encoder))
        return placed

    def flow_context(self, prompt) -> list[int]:
        """A flow model's image prompt: str -> the model's generation template (its conditional context); token
        ids (or {"prompt_token_ids": [...]}) -> as given."""
        if isinstance(prompt, str):
            return self._checked(self._tokenizer().encode(self._format().generation_prompt(prompt), add_bos=self.add_bos))
        if isinstance(prompt, dict) and "prompt_token_ids" in prompt:
            prompt = prompt["prompt_token_ids"]
        if isinstance(prompt, (list, tuple)) and all(isinstance(t, int) for t in prompt):
            return self._checked(list(prompt))
        raise RequestError(f"unsupported image prompt of type {type(prompt).__name__}: give a str or token ids")

    def flow_contexts(self, prompt, flow) -> tuple[dict[str, tuple[list[int], list[ImageInput]]], tuple | None]:
        """A flow model's image prompt -> ({branch: (ids, images)} of its own contexts, the last context image's
        (height, width) or None). Plain prompts (str, token ids) have the conditional context alone; a
        ``{"prompt": str, "images": [...]}`` prompt is image-conditioned: ``flow.context_prompts`` (the model's)
        names every branch's context text and its images with their encoders."""
        if not (isinstance(prompt, dict) and "images" in prompt and "prompt" in prompt):
            return {"cond": (self.flow_context(prompt), [])}, None
        if not isinstance(prompt["prompt"], str) or not prompt["images"]:
            raise RequestError("an image-conditioned prompt is {'prompt': str, 'images': [one or more images]}")
        try:
            texts, inputs, size = flow.context_prompts(prompt["prompt"], list(prompt["images"]))
        except ValueError as err:
            raise RequestError(str(err)) from None
        contexts = {}
        for branch, text in texts.items():
            ids = self._checked(self._tokenizer().encode(text, add_bos=self.add_bos))
            pixels = [p for p, _ in inputs[branch]]
            encoders = [e for _, e in inputs[branch]]
            contexts[branch] = (ids, self._place_images(ids, pixels, pixels, encoders))
        return contexts, size

    def image(self, prompt) -> list[int]:
        """str -> the model's image-generation template ending in <begin_of_image>; ids -> as given."""
        if isinstance(prompt, str):
            boi = self.spec.boi_token_id
            if boi is None:
                raise RequestError(f"{self.source} names no boi_token_id: give image prompts as token ids")
            ids = self._checked(self._tokenizer().encode(self._format().generation_prompt(prompt), add_bos=True))
            if ids[-1] != boi:
                raise RequestError(f"the tokenizer of {self.source} does not end the image prompt in boi_token_id {boi}")
            return ids
        if isinstance(prompt, dict) and "prompt_token_ids" in prompt:
            prompt = prompt["prompt_token_ids"]
        if isinstance(prompt, (list, tuple)) and all(isinstance(t, int) for t in prompt):
            return self._checked(list(prompt))
        raise RequestError(f"unsupported image prompt of type {type(prompt).__name__}: give a str or token ids")

