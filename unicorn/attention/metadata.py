"""Per-step attention metadata for a packed varlen batch over a paged KV cache."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

FP8_DTYPES = (torch.float8_e4m3fn,)  # cache dtypes that store x / scale


@dataclass
class KVCache:
    """One layer's paged cache. Both tensors: [num_blocks, block_size, num_kv_heads, head_dim].

    An fp8 cache stores ``x / scale`` (``k_scale`` / ``v_scale``); reads multiply back.
    """

    key: torch.Tensor
    value: torch.Tensor
    k_scale: float = 1.0
    v_scale: float = 1.0

    @property
    def block_size(self) -> int:
        return self.key.shape[1]


@dataclass
class AttentionMetadata:
    """Describes one forward over a packed batch of sequences.

    The step's new tokens of all sequences are packed back to back (``T`` tokens in all); sequence ``i`` owns
    packed rows ``query_start_loc[i]:query_start_loc[i+1]``, and those rows are the *last* tokens of its
    context of ``seq_lens[i]`` tokens (cached prefix + new). Slot ``s`` of the cache is
    ``block = s // block_size, offset = s % block_size``.
    """

    slot_mapping: torch.Tensor  # [T] int64: where each new token's K/V is written
    query_start_loc: torch.Tensor  # [num_seqs + 1] int32/int64, on the model's device
    seq_lens: torch.Tensor  # [num_seqs] int32/int64: context length after this step
    block_tables: torch.Tensor  # [num_seqs, max_blocks] int32/int64, padded with 0
    # Host copies, so the torch path never syncs with the device to plan its loops.
    query_lens_cpu: list[int]
    seq_lens_cpu: list[int]
    max_query_len: int
    max_seq_len: int
    causal: bool = True
    backend: str = "torch"  # name in unicorn.attention.backend's registry; chosen once per engine
    # Per sequence, bidirectional blocks [start, end) of its context (absolute positions) that reach into this
    # step's queries: inside one, every token attends to every other (causal masking elsewhere). None: none.
    # A block is computed in one step (the scheduler never splits one), or partly served by the prefix cache.
    spans: list[list[tuple[int, int]]] | None = None
    # Per sequence, whether its one query is a generated token (a decode row). A backend may send these rows of a
    # mixed step to its decode kernel, as in a decode-only step, so a row's result does not depend on what shares
    # its step. A prompt's last token (a one-token tail after a prefix-cache hit) is not one: it must match the
    # same position computed inside a full prefill. None: no row is known to be one.
    decode_seqs: list[bool] | None = None

    @property
    def num_seqs(self) -> int:
        return len(self.seq_lens_cpu)

    @property
    def query_starts_cpu(self) -> list[int]:
        """Host copy of ``query_start_loc``: sequence ``i``'s packed rows are ``[starts[i], starts[i + 1])``."""
        return list(itertools.accumulate(self.query_lens_cpu, initial=0))

    @property
    def is_decode_only(self) -> bool:
        return self.max_query_len == 1

    @classmethod
    def build(
        cls,
        *,
        query_lens: list[int],
        seq_lens: list[int],
        block_tables: list[list[int]],
        block_size: int,
        device: torch.device | str = "cpu",
        causal: bool = True,
        backend: str = "torch",
        spans: list[list[tuple[int, int]]] | None = None,
        decode_seqs: list[bool] | None = None,
    ) -> "AttentionMetadata":
        """Builds metadata from host lists (one entry per sequence); ``spans`` as the field (empty lists and
        blocks outside the queries are dropped)."""
        assert len(query_lens) == len(seq_lens) == len(block_tables)
        assert decode_seqs is None or all(q == 1 for q, d in zip(query_lens, decode_seqs) if d)
        slots: list[int] = []
        for q_len, s_len, table in zip(query_lens, seq_lens, block_tables):
            assert 0 < q_len <= s_len <= len(table) * block_size, (q_len, s_len, len(table), block_size)
            for pos in range(s_len - q_len, s_len):
                slots.append(table[pos // block_size] * block_size + pos % block_size)
        max_blocks = max((len(t) for t in block_tables), default=0)
        padded = [t + [0] * (max_blocks - len(t)) for t in block_tables]
        starts = list(itertools.accumulate(query_lens, initial=0))
        as_long = dict(dtype=torch.long, device=device)
        if spans is not None:
            assert len(spans) == len(query_lens)
            spans = [[(a, b) for a, b in row if b > s_len - q_len and b - a > 1]
                     for row, q_len, s_len in zip(spans, query_lens, seq_lens)]
            if not any(spans):
                spans = None
        return cls(
            slot_mapping=torch.tensor(slots, **as_long),
            query_start_loc=torch.tensor(starts, **as_long),
            seq_lens=torch.tensor(seq_lens, **as_long),
            block_tables=torch.tensor(padded, **as_long).view(len(block_tables), max_blocks),
            query_lens_cpu=list(query_lens),
            seq_lens_cpu=list(seq_lens),
            max_query_len=max(query_lens, default=0),
            max_seq_len=max(seq_lens, default=0),
            causal=causal,
            backend=backend,
            spans=spans,
            decode_seqs=None if decode_seqs is None or not any(decode_seqs) else list(decode_seqs),
        )
