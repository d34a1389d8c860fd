"""Sequences (rows of the KV cache) and requests (the unit the scheduler admits, preempts and finishes)."""
from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable

from unicorn.engine.params import ImageGenParams, SamplingParams


class RequestKind(enum.Enum):
    TEXT = "text"
    IMAGE = "image"  # image codes sampled token by token (Janus)
    FLOW = "flow"  # image latents denoised step by step (BAGEL); see unicorn.engine.flow


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class ImageInput:
    """An image in a prompt: its placeholder tokens span ``[offset, offset + length)`` of the row.

    ``content_hash`` identifies the pixels, so prefix caching never confuses two images behind the same
    placeholder ids; ``pixel_values`` are the preprocessed pixels the model encodes when those tokens run.

    ``span``: for models whose image blocks are bidirectional (BAGEL), the row range ``[start, end)`` of the
    whole block (its markers included): its tokens attend to each other in both directions, share one rope
    position (the next token's position is that one + 1), and are always computed in the same step. None: the
    placeholders are causal tokens with a position each (Janus).
    """

    offset: int
    length: int
    content_hash: int
    pixel_values: Any = None
    span: tuple[int, int] | None = None
    # which of the model's image encoders embeds it (None: its default; BAGEL's "vae": clean latents on the
    # generation expert, the context images of image-conditioned generation)
    encoder: str | None = None

    @property
    def extent(self) -> tuple[int, int]:
        """The rows whose K/V depend on the image: its span, else its placeholders."""
        return self.span if self.span is not None else (self.offset, self.offset + self.length)


_seq_counter = itertools.count()


class Sequence:
    """One row of the KV cache: the tokens it holds and where they live.

    The first ``num_prompt_tokens`` ids are text-vocabulary ids (image placeholders included); the ids after
    them are outputs in the request's output space (text ids, or image-codebook ids for image requests).
    """

    def __init__(
        self,
        token_ids: list[int],
        *,
        num_prompt_tokens: int | None = None,
        images: list[ImageInput] | None = None,
        is_uncond: bool = False,
        sample_index: int = 0,
        output_kind: str = "text",
    ) -> None:
        self.seq_id = next(_seq_counter)
        self.token_ids = list(token_ids)
        self.num_prompt_tokens = len(self.token_ids) if num_prompt_tokens is None else num_prompt_tokens
        self.images = list(images or [])
        self.is_uncond = is_uncond
        self.sample_index = sample_index
        self.output_kind = output_kind  # "text" or "image": the id space of the tokens after the prompt
        self.num_computed_tokens = 0
        self.block_table: list[int] = []
        self.num_cached_tokens = 0  # prompt tokens served by the prefix cache at the last admission
        # Prompt logprobs (text helper): the prefix cache serves at most max_cached_tokens of this row, so the
        # positions after them are computed; the runner records {position: TokenLogprob} of the prompt tokens
        # it computes when prompt_logprobs (top-k) is set.
        self.max_cached_tokens: int | None = None
        self.prompt_logprobs: int | None = None
        self.prompt_logprob_records: dict[int, Any] = {}
        # False for scratch rows whose K/V is rewritten every step (the queries of a denoising step): the prefix
        # cache never registers their blocks.
        self.cacheable = True
        self.flow_ref: Any = None  # a denoising query row: (FlowState, rollout, branch); see unicorn.engine.flow
        self._position_table: tuple[list[int], int] | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_uncomputed_tokens(self) -> int:
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def spans(self) -> list[tuple[int, int]]:
        """Bidirectional blocks ``[start, end)`` of this row, in order (see :class:`ImageInput`)."""
        return sorted(img.span for img in self.images if img.span is not None)

    def span_break(self, end: int) -> int:
        """The largest chunk end <= ``end`` that splits no bidirectional block."""
        for a, b in self.spans:
            if a < end < b:
                return a
        return end

    def positions(self, start: int, end: int) -> range | list[int]:
        """RoPE positions of tokens [start, end), tracked apart from cache slots: the slot index, except that a
        bidirectional block shares one position and the positions after it continue from that one + 1."""
        spans = self.spans
        if not spans:
            return range(start, end)
        if self._position_table is None:  # positions up to the last block's end, and the one after it
            table: list[int] = []
            i = nxt = 0
            for a, b in spans:
                table.extend(range(nxt, nxt + a - i))
                nxt += a - i
                table.extend([nxt] * (b - a))
                nxt, i = nxt + 1, b
            self._position_table = (table, nxt)
        table, nxt = self._position_table
        n = len(table)
        return [table[p] if p < n else nxt + p - n for p in range(start, end)]

    def fork(self, sample_index: int) -> "Sequence":
        """A copy sharing this row's tokens; the caller shares the blocks (see BlockManager.fork)."""
        child = Sequence(
            self.token_ids,
            num_prompt_tokens=self.num_prompt_tokens,
            images=self.images,
            is_uncond=self.is_uncond,
            sample_index=sample_index,
            output_kind=self.output_kind,
        )
        child.num_computed_tokens = self.num_computed_tokens
        child.cacheable = self.cacheable
        return child

    def __repr__(self) -> str:
        return (
            f"Sequence(id={self.seq_id}, tokens={self.num_tokens}, computed={self.num_computed_tokens}, "
            f"uncond={self.is_uncond}, sample={self.sample_index})"
        )


_request_counter = itertools.count()


def new_request_id() -> int:
    return next(_request_counter)


@dataclass
class Request:
    """A text or image request and its rows.

    Before its first sample a request holds *template* rows only (one row for text; a conditional and,
    with CFG, an unconditional row for images): the prompt is computed once. At the first sample the
    templates fork into ``n`` samples, sharing the prompt's blocks. Image rows come in pairs
    ``(cond, uncond)`` that always receive the same token.
    """

    kind: RequestKind
    params: SamplingParams | ImageGenParams
    seed: int
    rows: list[Sequence]
    max_output_tokens: int
    request_id: int = field(default_factory=new_request_id)
    status: RequestStatus = RequestStatus.WAITING
    forked: bool = False
    finish_reasons: list[str | None] = field(default_factory=list)
    num_preemptions: int = 0
    num_times_bypassed: int = 0
    eos_token_ids: tuple[int, ...] = ()
    # Lower runs first (as in vLLM); ties go by arrival. See Scheduler for how it meets the image seat share.
    priority: int = 0
    # Called by the scheduler after sample i accepts a token (stop strings, grammars); returns a finish reason
    # ("stop") or None. Set by the engine; the scheduler stays ignorant of tokenizers and grammars.
    on_token: Callable[[int, int], str | None] | None = None
    # SamplingParams.logprobs: per sample, one TokenLogprob per accepted token. The runner leaves each live
    # sample's candidate in pending_logprobs; on_token appends it when the scheduler accepts the token.
    sample_logprobs: list[list[Any]] = field(default_factory=list)
    pending_logprobs: dict[int, Any] = field(default_factory=dict)
    grammars: Any = None  # SamplingParams.json_schema: structured.SampleGrammars (a matcher per sample)
    flow: Any = None  # RequestKind.FLOW: its unicorn.engine.flow.FlowState (rows = its context rows, cond first)

    @property
    def n(self) -> int:
        return self.params.n

    @property
    def uses_cfg(self) -> bool:
        return self.kind is RequestKind.IMAGE and any(r.is_uncond for r in self.rows)

    @property
    def rows_per_sample(self) -> int:
        return 2 if self.uses_cfg else 1

    @property
    def num_samples(self) -> int:
        """Samples currently represented by rows (1 before the fork, ``n`` after)."""
        return len(self.rows) // self.rows_per_sample

    def sample_rows(self, i: int) -> list[Sequence]:
        """The rows of sample ``i``: ``[cond]`` or ``[cond, uncond]``."""
        k = self.rows_per_sample
        return self.rows[i * k : (i + 1) * k]

    def live_samples(self) -> list[int]:
        """Indices of the samples still generating: all ``n`` before the fork, the unfinished ones after it."""
        if not self.forked:
            return list(range(self.n))
        return [i for i in range(self.n) if self.finish_reasons[i] is None]

    def max_rows(self) -> int:
        if self.kind is RequestKind.FLOW:  # the context rows and a query row per branch of each rollout
            return len(self.rows) + self.n * self.flow.plan.max_branches
        return self.n * self.rows_per_sample

    @property
    def is_image(self) -> bool:
        """An image request of either kind (both count against the scheduler's image share)."""
        return self.kind in (RequestKind.IMAGE, RequestKind.FLOW)

    @property
    def is_finished(self) -> bool:
        return self.status is RequestStatus.FINISHED
