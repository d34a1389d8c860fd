"""JSON-schema-constrained decoding through xgrammar (optional: ``pip install 'unicorn-umm[structured]'``).

Each sample of a request has its own grammar matcher. Before sampling, the matcher's token bitmask sets the
logits of every token the grammar forbids to -inf; after the scheduler accepts a token the matcher advances
(through ``Request.on_token``), and the sample finishes once the matcher terminates (the grammar accepted its
stop token). Compiled grammars are cached per (tokenizer, vocabulary size, stop ids, schema).
"""
from __future__ import annotations

import json
import weakref

import torch

from unicorn.engine.prompts import RequestError

_MISSING = "SamplingParams.json_schema needs the xgrammar package: pip install 'unicorn-umm[structured]'"


def _xgrammar():
    try:
        import xgrammar
    except ImportError:
        raise RequestError(_MISSING) from None
    return xgrammar


class GrammarCompiler:
    """Compiles JSON schemas for one tokenizer and logits width, each schema once."""

    _by_tokenizer: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    @classmethod
    def for_tokenizer(cls, tokenizer, vocab_size: int, stop_token_ids: tuple[int, ...]) -> "GrammarCompiler":
        compilers = cls._by_tokenizer.setdefault(tokenizer, {})
        key = (vocab_size, stop_token_ids)
        if key not in compilers:
            compilers[key] = cls(tokenizer, vocab_size, stop_token_ids)
        return compilers[key]

    def __init__(self, tokenizer, vocab_size: int, stop_token_ids: tuple[int, ...]) -> None:
        xgr = _xgrammar()
        from transformers import PreTrainedTokenizerFast

        backend = getattr(tokenizer, "_tok", tokenizer)  # unicorn's wrapper holds a tokenizers.Tokenizer
        hf = PreTrainedTokenizerFast(tokenizer_object=backend)
        self.info = xgr.TokenizerInfo.from_huggingface(hf, vocab_size=vocab_size, stop_token_ids=list(stop_token_ids))
        self.compiler = xgr.GrammarCompiler(self.info)
        self.vocab_size = vocab_size
        self._compiled: dict[str, object] = {}

    def compile(self, schema: dict | str):
        key = schema if isinstance(schema, str) else json.dumps(schema)  # property order matters: keep it
        if key not in self._compiled:
            try:  # compact JSON: no free whitespace for a sampler to wander in
                self._compiled[key] = self.compiler.compile_json_schema(key, any_whitespace=False)
            except Exception as err:  # xgrammar raises RuntimeError / ValueError with its own message
                raise RequestError(f"SamplingParams.json_schema: {str(err).splitlines()[0]}") from None
        return self._compiled[key]


class SampleGrammars:
    """The matchers of one request's samples."""

    def __init__(self, compiler: GrammarCompiler, schema: dict | str, n: int) -> None:
        xgr = _xgrammar()
        compiled = compiler.compile(schema)
        self.vocab_size = compiler.vocab_size
        self.matchers = [xgr.GrammarMatcher(compiled) for _ in range(n)]

    def accept(self, i: int, token: int) -> str | None:
        """Advances sample ``i``; "stop" once its grammar is complete, "error" if it rejects the token."""
        matcher = self.matchers[i]
        if not matcher.accept_token(token):
            return "error"
        return "stop" if matcher.is_terminated() else None


def mask_logits(logits: torch.Tensor, rows: list[tuple[int, SampleGrammars, int]]) -> torch.Tensor:
    """A copy of ``logits`` [B, V] with each listed (row, grammars, sample) masked by that sample's matcher."""
    import xgrammar as xgr

    bitmask = xgr.allocate_token_bitmask(logits.shape[0], logits.shape[1])
    for row, grammars, i in rows:
        grammars.matchers[i].fill_next_token_bitmask(bitmask, row)
    masked = logits.float().clone()
    indices = [row for row, _, _ in rows]
    xgr.apply_token_bitmask_inplace(masked, bitmask.to(masked.device), vocab_size=logits.shape[1], indices=indices)
    return masked
