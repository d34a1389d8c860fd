"""A small wrapper over a checkpoint's tokenizer.json with its special tokens resolved."""
from __future__ import annotations

import json
import os

from tokenizers import Tokenizer as _HFTokenizer

from unicorn.models.errors import CheckpointError

# DeepSeek-LLM names, used when the checkpoint's tokenizer files do not say otherwise.
DEFAULT_SPECIAL_TOKENS = {
    "bos_token": "<｜begin▁of▁sentence｜>",
    "eos_token": "<｜end▁of▁sentence｜>",
    "pad_token": "<｜▁pad▁｜>",
    "image_token": "<image_placeholder>",
    "boi_token": "<begin_of_image>",
    "eoi_token": "<end_of_image>",
}


def _content(value) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _read_json(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class Tokenizer:
    """Text <-> ids; special tokens from tokenizer_config.json / special_tokens_map.json, else DeepSeek's names."""

    def __init__(self, path: str):
        file = os.path.join(path, "tokenizer.json")
        if not os.path.exists(file):
            raise CheckpointError(f"{path}: expected tokenizer.json (with tokenizer_config.json / special_tokens_map.json)")
        self._tok = _HFTokenizer.from_file(file)
        tokens = dict(DEFAULT_SPECIAL_TOKENS)
        for source in ("special_tokens_map.json", "tokenizer_config.json"):  # later wins
            cfg = _read_json(os.path.join(path, source))
            extra = cfg.get("extra_special_tokens") if isinstance(cfg.get("extra_special_tokens"), dict) else {}
            for name in tokens:
                value = _content(cfg.get(name)) or _content(extra.get(name))
                if value:
                    tokens[name] = value
        self.special_tokens = tokens

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def _special_id(self, name: str) -> int | None:
        return self.token_to_id(self.special_tokens[name])

    @property
    def bos_token_id(self) -> int | None:
        return self._special_id("bos_token")

    @property
    def eos_token_id(self) -> int | None:
        return self._special_id("eos_token")

    @property
    def pad_token_id(self) -> int | None:
        return self._special_id("pad_token")

    @property
    def image_token_id(self) -> int | None:
        return self._special_id("image_token")

    @property
    def boi_token_id(self) -> int | None:
        return self._special_id("boi_token")

    @property
    def eoi_token_id(self) -> int | None:
        return self._special_id("eoi_token")

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        """Special tokens written in ``text`` (e.g. ``<begin_of_image>``) map to their ids."""
        ids = self._tok.encode(text, add_special_tokens=False).ids
        if add_bos:
            bos = self.bos_token_id
            if bos is None:
                raise ValueError(f"tokenizer has no BOS token {self.special_tokens['bos_token']!r}")
            ids = [bos] + ids
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)
