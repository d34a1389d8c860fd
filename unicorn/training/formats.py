"""How each CPR record kind becomes a Janus conversation [ours: the paper publishes no templates].

Understanding kinds (caption, judgement) use Janus' SFT chat format with the image in the user turn and the target
text as the assistant reply (ending in the end-of-sentence token); text records the same chat with a text-only user
turn (what the engine builds for a text request with the default system prompt). Generation kinds (t2i, reflection) end the prompt
in <begin_of_image>, after which the target image's VQ codes follow. The self-play stages should prompt the model
with these same builders at inference time so that training and use agree.
"""
from __future__ import annotations

from unicorn.models.janus_chat import BOI_TAG, expand_image_placeholders, format_chat, generation_prompt

CAPTION_INSTRUCTION = "Write the text-to-image prompt that this image was generated from."
JUDGE_INSTRUCTION = (
    "Prompt: \"{prompt}\"\n"
    "Judge how well the image follows the prompt. Reason step by step, then end with a line 'Score: N' (N from 0 to 10)."
)
REFLECTION_INSTRUCTION = (
    "Prompt: \"{prompt}\"\n"
    "This image does not follow the prompt well. Generate an improved image for the prompt."
)


def _image_question(text: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def caption_prompt(num_image_tokens: int, instruction: str | None = None) -> str:
    return expand_image_placeholders(format_chat(_image_question(instruction or CAPTION_INSTRUCTION)), num_image_tokens)


def followup_prompt(question: str) -> str:
    """The next user turn of an image conversation, after an assistant reply (that reply ends in the
    end-of-sentence separator); tokenize without BOS."""
    return format_chat([{"role": "user", "content": question}], system_prompt="")


def judgement_prompt(prompt: str, num_image_tokens: int, instruction: str | None = None) -> str:
    text = instruction or JUDGE_INSTRUCTION.format(prompt=prompt)
    return expand_image_placeholders(format_chat(_image_question(text)), num_image_tokens)


def judgement_response(reasoning: str, score: int) -> str:
    reasoning = reasoning.strip()
    return f"{reasoning}\nScore: {score}" if reasoning else f"Score: {score}"


def text_prompt(instruction: str) -> str:
    return format_chat([{"role": "user", "content": instruction}])


def t2i_prompt(prompt: str) -> str:
    return generation_prompt(prompt)


def reflection_prompt(prompt: str, num_image_tokens: int) -> str:
    """The loser image as an understanding input, then <begin_of_image> for the improved image."""
    chat = format_chat(_image_question(REFLECTION_INSTRUCTION.format(prompt=prompt)), system_prompt="")
    return expand_image_placeholders(chat, num_image_tokens) + BOI_TAG
