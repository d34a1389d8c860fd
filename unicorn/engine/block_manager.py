"""Paged KV-cache bookkeeping: a pool of fixed-size blocks with ref counts and content-hash prefix caching.

Pure Python (no torch): the model runner owns the tensors, this module only decides which block ids hold
which tokens. A full block's hash chains its parent's hash, its token ids, the content hashes of the images
whose placeholders (or bidirectional block, see ImageInput.span) it covers, and whether its ids are prompt (text) or output (image-codebook) ids, so two
different images behind the same placeholder ids, or text id 5 and image code 5, never share a block.

A block's hash is published as soon as a scheduled row will have computed it in full after the step
(:meth:`BlockManager.publish`), not only after the forward: each layer stores every row's K/V before any row
attends, so a row admitted later in the same step may attach the block and read it. A chunk that ends
mid-block publishes nothing for that block, and a row freed before its step's forward (abort) withdraws what
it published and has not computed.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from unicorn.engine.sequence import Sequence


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    block_hash: int | None = None


def hash_block(parent_hash: int | None, token_ids: tuple[int, ...], extra: tuple) -> int:
    return hash((parent_hash, token_ids, extra))


def block_extra_keys(seq: Sequence, start: int, end: int) -> tuple:
    """Keys beyond the token ids that make a block's content unique (see the module docstring)."""
    images = tuple(img.content_hash if img.encoder is None else (img.content_hash, img.encoder)
                   for img in seq.images if img.extent[0] < end and img.extent[1] > start)
    num_prompt_in_block = max(0, min(end, seq.num_prompt_tokens) - start)
    outputs = (seq.output_kind, num_prompt_in_block) if num_prompt_in_block < end - start else ()
    return images + outputs


class BlockManager:
    """Allocates blocks to sequences, shares them by prefix hash and by fork, and copies on write."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need num_blocks >= 1 and block_size >= 1, got {num_blocks} and {block_size}")
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        # Free blocks in eviction order (least recently freed first); hashed ones stay findable until reused.
        self.free_blocks: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self.cached_blocks: dict[int, int] = {}  # block hash -> block id
        self.seq_hashes: dict[int, list[int]] = {}  # seq id -> hashes of its full blocks (computed or publishing)
        self.pending: dict[int, list[int]] = {}  # seq id -> blocks it published, computed by this step's forward
        self.num_prefix_hit_tokens = 0
        self.num_prefix_query_tokens = 0

    # ---- capacity -------------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        return len(self.free_blocks)

    def blocks_needed(self, num_tokens: int) -> int:
        return (num_tokens + self.block_size - 1) // self.block_size

    # ---- allocation -----------------------------------------------------------------------------
    def _take_free_block(self) -> Block:
        block_id, _ = self.free_blocks.popitem(last=False)
        block = self.blocks[block_id]
        if block.block_hash is not None:  # evict its cached content
            if self.cached_blocks.get(block.block_hash) == block_id:
                del self.cached_blocks[block.block_hash]
            block.block_hash = None
        block.ref_count = 1
        return block

    def _ref(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self.free_blocks[block_id]
        block.ref_count += 1

    def _unref(self, block_id: int) -> None:
        block = self.blocks[block_id]
        assert block.ref_count > 0, f"block {block_id} freed twice"
        block.ref_count -= 1
        if block.ref_count == 0:
            self.free_blocks[block_id] = None

    def ref_count(self, block_id: int) -> int:
        return self.blocks[block_id].ref_count

    def _prompt_block_hashes(self, seq: Sequence) -> list[int]:
        hashes: list[int] = []
        parent = None
        bs = self.block_size
        for b in range(seq.num_tokens // bs):
            start, end = b * bs, (b + 1) * bs
            parent = hash_block(parent, tuple(seq.token_ids[start:end]), block_extra_keys(seq, start, end))
            hashes.append(parent)
        return hashes

    def attach_cached_prefix(self, seq: Sequence) -> int:
        """Gives a new sequence the cached blocks of its longest computed prefix; returns the tokens covered.

        At least the last token is left to compute, so the step that finishes the prompt yields logits.
        """
        assert not seq.block_table and seq.num_computed_tokens == 0
        seq.num_cached_tokens = 0
        if not self.enable_prefix_caching:
            return 0
        max_blocks = (seq.num_tokens - 1) // self.block_size
        if seq.max_cached_tokens is not None:  # e.g. prompt logprobs need the positions after it computed
            max_blocks = min(max_blocks, seq.max_cached_tokens // self.block_size)
        hits: list[int] = []
        for block_hash in self._prompt_block_hashes(seq)[:max_blocks]:
            block_id = self.cached_blocks.get(block_hash)
            if block_id is None:
                break
            hits.append(block_id)
        for block_id in hits:
            self._ref(block_id)
        seq.block_table = hits
        num_hit = len(hits) * self.block_size
        seq.num_computed_tokens = num_hit
        seq.num_cached_tokens = num_hit
        self.seq_hashes[seq.seq_id] = self._prompt_block_hashes(seq)[: len(hits)]
        return num_hit

    def count_prefix_hits(self, seq: Sequence) -> None:
        """Adds an admitted sequence to the prefix statistics: its tokens, and those its attached blocks
        served. Counted once per admission (an attempt that failed for room is rolled back, not counted)."""
        self.num_prefix_query_tokens += seq.num_tokens
        self.num_prefix_hit_tokens += seq.num_cached_tokens

    def num_blocks_to_allocate(self, seq: Sequence, num_new_tokens: int) -> int:
        """Blocks that :meth:`allocate_slots` would take for ``num_new_tokens`` more tokens (CoW included)."""
        target = self.blocks_needed(seq.num_computed_tokens + num_new_tokens)
        needed = max(0, target - len(seq.block_table))
        first = seq.num_computed_tokens // self.block_size
        if first < len(seq.block_table) and self.blocks[seq.block_table[first]].ref_count > 1:
            needed += 1
        return needed

    def allocate_slots(self, seq: Sequence, num_new_tokens: int) -> list[tuple[int, int]] | None:
        """Makes room to write ``num_new_tokens`` tokens after the computed ones.

        Returns the (src, dst) block copies the runner must do first (copy-on-write of a shared partial
        block), or ``None`` when the pool is short (the caller preempts). Idempotent for the same step.
        """
        if self.num_blocks_to_allocate(seq, num_new_tokens) > self.num_free_blocks:
            return None
        copies: list[tuple[int, int]] = []
        first = seq.num_computed_tokens // self.block_size
        if first < len(seq.block_table) and self.blocks[seq.block_table[first]].ref_count > 1:
            src = seq.block_table[first]
            dst = self._take_free_block().block_id
            self._unref(src)
            seq.block_table[first] = dst
            copies.append((src, dst))
        target = self.blocks_needed(seq.num_computed_tokens + num_new_tokens)
        while len(seq.block_table) < target:
            seq.block_table.append(self._take_free_block().block_id)
        return copies

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """``child`` shares all of ``parent``'s blocks (its first write to a shared block copies it)."""
        assert not child.block_table
        for block_id in parent.block_table:
            self._ref(block_id)
        child.block_table = list(parent.block_table)
        self.seq_hashes[child.seq_id] = list(self.seq_hashes.get(parent.seq_id, []))

    def free(self, seq: Sequence) -> None:
        """Releases the sequence's blocks (in reverse, so a prefix's tail is evicted before its head).

        Blocks it published but has not computed yet lose their hash: no later request may find them.
        """
        for block_id in self.pending.pop(seq.seq_id, ()):
            self._unpublish(block_id)
        for block_id in reversed(seq.block_table):
            self._unref(block_id)
        seq.block_table = []
        seq.num_computed_tokens = 0
        self.seq_hashes.pop(seq.seq_id, None)

    def _unpublish(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.block_hash is not None and self.cached_blocks.get(block.block_hash) == block_id:
            del self.cached_blocks[block.block_hash]
        block.block_hash = None

    def _register_full_blocks(self, seq: Sequence, num_tokens: int) -> list[int]:
        """Hashes the sequence's blocks that ``num_tokens`` tokens fill and registers the new ones in the
        prefix cache; returns the ids of the blocks it registered."""
        hashes = self.seq_hashes.setdefault(seq.seq_id, [])
        bs = self.block_size
        parent = hashes[-1] if hashes else None
        registered: list[int] = []
        for b in range(len(hashes), num_tokens // bs):
            start, end = b * bs, (b + 1) * bs
            parent = hash_block(parent, tuple(seq.token_ids[start:end]), block_extra_keys(seq, start, end))
            hashes.append(parent)
            block = self.blocks[seq.block_table[b]]
            if block.block_hash is None and parent not in self.cached_blocks:
                block.block_hash = parent
                self.cached_blocks[parent] = block.block_id
                registered.append(block.block_id)
        return registered

    def publish(self, seq: Sequence, num_new_tokens: int) -> None:
        """Publishes the blocks that a scheduled row fills in full this step (its slots allocated), so rows
        admitted after it in the same step can attach them; the forward computes them before anyone reads
        them (every layer stores all rows' K/V before attention)."""
        if not self.enable_prefix_caching or not seq.cacheable:
            return
        published = self._register_full_blocks(seq, seq.num_computed_tokens + num_new_tokens)
        if published:
            self.pending.setdefault(seq.seq_id, []).extend(published)

    def commit_computed(self, seq: Sequence) -> None:
        """After the forward: the sequence's full blocks are computed (registers any not yet published)."""
        if not self.enable_prefix_caching or not seq.cacheable:
            return
        self.pending.pop(seq.seq_id, None)  # what it published is now computed
        self._register_full_blocks(seq, seq.num_computed_tokens)

    def reset_prefix_cache(self) -> None:
        for block_hash, block_id in list(self.cached_blocks.items()):
            self.blocks[block_id].block_hash = None
        self.cached_blocks.clear()
        self.pending.clear()
