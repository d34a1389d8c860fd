"""BAGEL's prompt format: the segments of the official ``interleave_inference``, as the engine formats prompts.

BAGEL has no chat roles: each text is its own segment ``<|im_start|>text<|im_end|>`` and each image its own block
``<|vision_start|>`` + one ``<|image_pad|>`` placeholder per ViT token + ``<|vision_end|>`` (bidirectional, one
rope position; the engine learns that from ``BagelModel.image_block_margin``). Understanding ends with
``<|im_start|>``, the token the official ``gen_text`` starts decoding from; it stops at ``<|im_end|>``. A system
prompt (e.g. the think-mode one) is the first text segment. Prompts are tokenized without a BOS.
"""
from __future__ import annotations

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
VISION_START, VISION_END, IMAGE_PAD = "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"


def text_segment(text: str) -> str:
    return f"{IM_START}{text}{IM_END}"


def image_block(num_tokens: int) -> str:
    return VISION_START + IMAGE_PAD * num_tokens + VISION_END


class BagelPromptFormat:
    """``model.prompt_format`` of BAGEL (see unicorn.models.spec.PromptFormat)."""

    add_bos = False

    def understanding_prompt(self, messages: list[dict], num_image_tokens: int | list[int],
                             system_prompt: str | None = None) -> str:
        """Messages ({"role", "content"}: a str or parts {"type": "text", "text"} / {"type": "image"}) -> the
        segments in order (roles carry no tokens; a "system" message or ``system_prompt`` comes first), then
        ``<|im_start|>``. ``num_image_tokens``: one count per image, in order (or one count for all)."""
        counts = list(num_image_tokens) if isinstance(num_image_tokens, (list, tuple)) else None
        pieces: list[str] = []
        system = system_prompt
        image_index = 0
        for message in messages:
            content = message["content"]
            if message["role"].lower() == "system":
                system = content if isinstance(content, str) else " ".join(p["text"] for p in content if p["type"] == "text")
                continue
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
            for part in parts:
                if part["type"] == "text":
                    pieces.append(text_segment(part["text"]))
                elif part["type"] == "image":
                    n = counts[image_index] if counts is not None else num_image_tokens
                    pieces.append(image_block(n))
                    image_index += 1
                else:
                    raise ValueError(f"unknown content part type {part['type']!r}")
        if system:
            pieces.insert(0, text_segment(system))
        return "".join(pieces) + IM_START

    def generation_prompt(self, text: str) -> str:
        """A text-to-image prompt -> its one text segment (the conditional context of the denoising steps)."""
        return text_segment(text)

    def conditioned_generation_prompts(self, text: str, counts: list[tuple[int, int]]) -> dict[str, str]:
        """The contexts of image-conditioned generation (the official ``interleave_inference`` with images then
        text): ``cond`` holds each image as a VAE block then a ViT block (``counts[k]`` = (VAE tokens, ViT
        tokens)), then the text; ``text_uncond`` the images alone; ``img_uncond`` the text alone."""
        images = "".join(image_block(vae) + image_block(vit) for vae, vit in counts)
        return {"cond": images + text_segment(text), "text_uncond": images, "img_uncond": text_segment(text)}


BAGEL_PROMPT_FORMAT = BagelPromptFormat()
