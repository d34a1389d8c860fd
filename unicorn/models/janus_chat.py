"""Janus prompt formats: DeepSeek's "deepseek" SFT template (janus/utils/conversation.py) and image generation.

    <system>\n\n<|User|>: <text>\n\n<|Assistant|>: <reply><｜end▁of▁sentence｜><|User|>: ...<|Assistant|>:

Each image becomes <begin_of_image> + num_image_tokens x <image_placeholder> + <end_of_image>.
"""
from __future__ import annotations

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful language and vision assistant. "
    "You are able to understand the visual content that the user provides, "
    "and assist the user with a variety of tasks using natural language."
)
USER, ASSISTANT = "<|User|>", "<|Assistant|>"
SEPARATORS = ("\n\n", "<｜end▁of▁sentence｜>")  # after user turns, after assistant turns
IMAGE_TAG, BOI_TAG, EOI_TAG = "<image_placeholder>", "<begin_of_image>", "<end_of_image>"

_ROLES = {"user": USER, "<|user|>": USER, "assistant": ASSISTANT, "<|assistant|>": ASSISTANT}


def _content_text(content) -> str:
    # A list of parts joins as transformers' Janus chat template does: images on their own line,
    # consecutive texts separated by a space.
    if isinstance(content, str):
        return content
    pieces = []
    for i, part in enumerate(content):
        last = i == len(content) - 1
        if part["type"] == "image":
            pieces.append(("\n" if i else "") + IMAGE_TAG + ("" if last else "\n"))
        elif part["type"] == "text":
            text = part["text"]
            text = text.lstrip() if i == 0 else text
            text = text.rstrip() if last else text
            pieces.append(" " + text if i and content[i - 1]["type"] == "text" else text)
        else:
            raise ValueError(f"unknown content part type {part['type']!r}")
    return "".join(pieces)


def format_chat(messages: list[dict], system_prompt: str | None = None, add_generation_prompt: bool = True) -> str:
    """Messages ({"role", "content"}) -> SFT text with one <image_placeholder> per image (not yet expanded).

    A "system" message overrides ``system_prompt``; ``None`` means Janus' default understanding prompt.
    """
    system = DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt
    turns = []
    for message in messages:
        role = message["role"].lower()
        if role == "system":
            system = _content_text(message["content"])
            continue
        if role not in _ROLES:
            raise ValueError(f"unknown chat role {message['role']!r}")
        turns.append((_ROLES[role], _content_text(message["content"]).strip()))
    if add_generation_prompt and (not turns or turns[-1][0] != ASSISTANT):
        turns.append((ASSISTANT, ""))
    text = system + SEPARATORS[0] if system else ""
    for i, (role, message) in enumerate(turns):
        text += f"{role}: {message}{SEPARATORS[i % 2]}" if message else f"{role}:"
    return text.strip()


def expand_image_placeholders(text: str, num_image_tokens: int) -> str:
    """Each <image_placeholder> -> <begin_of_image> + num_image_tokens placeholders + <end_of_image>."""
    return text.replace(IMAGE_TAG, BOI_TAG + IMAGE_TAG * num_image_tokens + EOI_TAG)


def understanding_prompt(messages: list[dict], num_image_tokens: int, system_prompt: str | None = None) -> str:
    """The full prompt text for answering about images (tokenize with a leading BOS)."""
    return expand_image_placeholders(format_chat(messages, system_prompt), num_image_tokens)


def generation_prompt(prompt: str) -> str:
    """The text-to-image prompt (empty system prompt) ending in <begin_of_image>, as generation_inference.py."""
    return format_chat([{"role": "user", "content": prompt}], system_prompt="") + BOI_TAG


class JanusPromptFormat:
    """The Janus family's prompt formats, as the engine reaches them (``model.prompt_format``; see
    :class:`unicorn.models.spec.PromptFormat`)."""

    def understanding_prompt(self, messages: list[dict], num_image_tokens: int, system_prompt: str | None = None) -> str:
        return understanding_prompt(messages, num_image_tokens, system_prompt)

    def generation_prompt(self, text: str) -> str:
        return generation_prompt(text)


JANUS_PROMPT_FORMAT = JanusPromptFormat()
