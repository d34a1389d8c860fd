"""A byte-level BPE trained on the toy world's own text: prompts, questions, answers, judge reasoning, templates.

Janus' special tokens come first (ids 0..5), as in unicorn/models/janus_tiny.py, so the checkpoint writer's
special ids hold for this tokenizer too.
"""
from __future__ import annotations

from tokenizers import Tokenizer

from unicorn.models.janus_chat import DEFAULT_SYSTEM_PROMPT
from unicorn.models.janus_tiny import SPECIAL_NAMES, train_tokenizer
from unicorn.models.tokenizer import DEFAULT_SPECIAL_TOKENS
from unicorn.toyworld.roles import RATE_INSTRUCTION
from unicorn.training import formats


def template_texts(repeat: int = 1000) -> list[str]:
    """Fixed wording the model reads or writes around every sample (chat roles, instructions, digits), repeated
    so that BPE merges it into few tokens (it is in every sample; the system prompt alone is ~200 characters)."""
    return repeat * [DEFAULT_SYSTEM_PROMPT, formats.CAPTION_INSTRUCTION, formats.JUDGE_INSTRUCTION, formats.REFLECTION_INSTRUCTION,
            RATE_INSTRUCTION,
            "<|User|>: <|Assistant|>:", " ".join(f"Score: {n}" for n in range(11)), "0 1 2 3 4 5 6 7 8 9 10"]


def train_world_tokenizer(corpus: list[str], vocab_size: int) -> Tokenizer:
    """Deterministic for a given corpus (order included) and vocab size."""
    tok = train_tokenizer(vocab_size, corpus)
    specials = [DEFAULT_SPECIAL_TOKENS[k] for k in SPECIAL_NAMES]
    assert [tok.token_to_id(s) for s in specials] == list(range(len(specials))), "special tokens must be ids 0..5"
    return tok
