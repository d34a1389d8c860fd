"""Builds a text request's ``on_token`` hook from its SamplingParams (stop strings, logprobs, grammars).

The scheduler calls ``Request.on_token(sample_index, token)`` once per accepted token and knows nothing of
tokenizers or grammars; every check that needs them lives behind this hook.
"""
from __future__ import annotations

from typing import Callable

from unicorn.engine.prompts import RequestError
from unicorn.engine.sequence import Request
from unicorn.engine.stop import StopStrings

Hook = Callable[[int, int], "str | None"]


def _stop_hook(request: Request, tokenizer) -> Hook:
    params = request.params
    if tokenizer is None:
        raise RequestError("SamplingParams.stop needs a tokenizer, and this checkpoint has none")
    matcher = StopStrings(tokenizer, params.stop, params.skip_special_tokens)

    def check(i: int, token: int) -> str | None:
        row = request.sample_rows(i)[0]
        start = max(row.num_prompt_tokens, row.num_tokens - matcher.window)
        return "stop" if matcher.matches(row.token_ids[start:]) else None

    return check


def _logprobs_hook(request: Request) -> Hook:
    request.sample_logprobs = [[] for _ in range(request.n)]

    def record(i: int, token: int) -> None:
        entry = request.pending_logprobs.pop(i)
        assert entry.token_id == token, (entry, token)
        request.sample_logprobs[i].append(entry)

    return record


def _grammar_hook(request: Request, tokenizer, vocab_size: int) -> Hook:
    from unicorn.engine.structured import GrammarCompiler, SampleGrammars

    if tokenizer is None:
        raise RequestError("SamplingParams.json_schema needs a tokenizer, and this checkpoint has none")
    if not request.eos_token_ids:  # the grammar ends a sample by allowing only its stop token
        raise RequestError("SamplingParams.json_schema needs an end-of-text id (eos_token_id), and this "
                           "checkpoint has none")
    compiler = GrammarCompiler.for_tokenizer(tokenizer, vocab_size, request.eos_token_ids)
    request.grammars = SampleGrammars(compiler, request.params.json_schema, request.n)
    return request.grammars.accept


def attach_text_hooks(request: Request, tokenizer, vocab_size: int | None = None) -> None:
    """Sets ``request.on_token`` when its params need per-token work, and marks the prompt row for prompt
    logprobs; raises RequestError naming the field when the engine cannot honour one."""
    params = request.params
    if params.prompt_logprobs is not None:
        row = request.rows[0]
        row.prompt_logprobs = params.prompt_logprobs
        row.max_cached_tokens = 0
    hooks: list[Hook] = []
    if params.logprobs is not None:
        hooks.append(_logprobs_hook(request))
    if params.stop:
        hooks.append(_stop_hook(request, tokenizer))
    if params.json_schema is not None:
        hooks.append(_grammar_hook(request, tokenizer, vocab_size))
    if not hooks:
        return

    def on_token(i: int, token: int) -> str | None:
        reason = None
        for hook in hooks:  # every hook sees every token (records stay aligned), the last reason wins
            reason = hook(i, token) or reason
        return reason

    request.on_token = on_token
