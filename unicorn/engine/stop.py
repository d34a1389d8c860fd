"""Stop strings: a sample finishes once its decoded text contains one of them, across token boundaries."""
from __future__ import annotations

# Tokens decoded beyond the longest stop string's length in characters: room for tokens that decode to no
# text (skipped specials) or to part of a UTF-8 character, and for a tokenizer's leading-space handling.
_SLACK_TOKENS = 8


class StopStrings:
    """Checks only the tail of a sample's output: a stop string completed by the newest token lies in its last
    ``len(longest stop) + 8`` tokens (every other token decodes to at least one character)."""

    def __init__(self, tokenizer, stop: tuple[str, ...], skip_special_tokens: bool) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self.skip_special_tokens = skip_special_tokens
        self.window = max(len(s) for s in stop) + _SLACK_TOKENS

    def matches(self, output_ids: list[int]) -> bool:
        tail = self.tokenizer.decode(output_ids[-self.window :], skip_special_tokens=self.skip_special_tokens)
        return any(s in tail for s in self.stop)


def truncate_at_stop(text: str, stop: tuple[str, ...], include: bool) -> str:
    """``text`` cut before its first stop string (after it when ``include``); unchanged without one."""
    found = [(text.find(s), s) for s in stop if s in text]
    if not found:
        return text
    index, s = min(found)
    return text[: index + len(s)] if include else text[:index]
