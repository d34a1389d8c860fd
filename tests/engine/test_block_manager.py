"""Block manager: allocation, prefix sharing by content hash, fork and copy-on-write, eviction."""
import pytest

from unicorn.engine.block_manager import BlockManager
from unicorn.engine.sequence import ImageInput, Sequence


def computed(bm, seq, n=None):
    """Allocates and marks the first n (default all) tokens computed, as a step would."""
    n = seq.num_tokens - seq.num_computed_tokens if n is None else n
    assert bm.allocate_slots(seq, n) == []
    seq.num_computed_tokens += n
    bm.commit_computed(seq)


def test_allocation_counts_and_free():
    bm = BlockManager(num_blocks=10, block_size=4)
    seq = Sequence(list(range(10)))
    computed(bm, seq)
    assert len(seq.block_table) == 3 and bm.num_free_blocks == 7
    bm.free(seq)
    assert bm.num_free_blocks == 10 and seq.block_table == []


def test_prefix_hit_shares_full_blocks_and_leaves_last_token():
    bm = BlockManager(num_blocks=16, block_size=4)
    a = Sequence(list(range(12)))
    computed(bm, a)
    b = Sequence(list(range(12)))  # identical prompt: 3 full blocks, but the last token must be computed
    assert bm.attach_cached_prefix(b) == 8
    assert b.block_table == a.block_table[:2]
    assert all(bm.ref_count(x) == 2 for x in a.block_table[:2])
    c = Sequence(list(range(8)) + [99, 98, 97, 96, 95])
    assert bm.attach_cached_prefix(c) == 8
    d = Sequence([5] + list(range(1, 12)))  # differs in block 0: chained hashes miss everything
    assert bm.attach_cached_prefix(d) == 0


def test_images_and_output_kind_are_part_of_the_hash():
    bm = BlockManager(num_blocks=16, block_size=4)
    ph = [7] * 4
    a = Sequence([1] + ph + [2, 3, 4, 5], images=[ImageInput(1, 4, content_hash=111)])
    computed(bm, a)
    same = Sequence([1] + ph + [2, 3, 4, 5], images=[ImageInput(1, 4, content_hash=111)])
    other = Sequence([1] + ph + [2, 3, 4, 5], images=[ImageInput(1, 4, content_hash=222)])
    assert bm.attach_cached_prefix(same) == 8
    assert bm.attach_cached_prefix(other) == 0
    # Same ids, but the tail is image-codebook output rather than prompt text: never shared.
    text = Sequence([1, 2, 3, 4, 5, 6, 7, 8, 9], num_prompt_tokens=4, output_kind="text")
    image = Sequence([1, 2, 3, 4, 5, 6, 7, 8, 9], num_prompt_tokens=4, output_kind="image")
    computed(bm, text)
    assert bm.attach_cached_prefix(image) == 4


def test_fork_then_copy_on_write_of_the_partial_block():
    bm = BlockManager(num_blocks=16, block_size=4)
    parent = Sequence(list(range(6)))  # 1 full + 1 partial block
    computed(bm, parent)
    children = [parent.fork(i) for i in range(1, 4)]
    for child in children:
        bm.fork(parent, child)
    full, partial = parent.block_table
    assert bm.ref_count(full) == 4 and bm.ref_count(partial) == 4
    free_before = bm.num_free_blocks
    copies = []
    for seq in [parent] + children:
        seq.token_ids.append(100 + seq.sample_index)
        copies += bm.allocate_slots(seq, 1)
    # Three writers copy the shared partial block; the last one owns it and writes in place.
    assert len(copies) == 3 and all(src == partial for src, _ in copies)
    assert bm.num_free_blocks == free_before - 3
    assert bm.ref_count(full) == 4 and bm.ref_count(partial) == 1
    assert len({seq.block_table[1] for seq in [parent] + children}) == 4


def test_freed_cached_blocks_are_reusable_until_evicted():
    bm = BlockManager(num_blocks=4, block_size=2)
    a = Sequence([1, 2, 3, 4, 5])
    computed(bm, a)
    bm.free(a)
    assert bm.num_free_blocks == 4
    b = Sequence([1, 2, 3, 4, 9])
    assert bm.attach_cached_prefix(b) == 4  # still cached after free
    bm.free(b)
    filler = Sequence(list(range(100, 108)))
    computed(bm, filler)  # takes all four blocks: the cached ones are evicted
    bm.free(filler)
    c = Sequence([1, 2, 3, 4, 9])
    assert bm.attach_cached_prefix(c) == 0


def test_allocate_refuses_when_short():
    bm = BlockManager(num_blocks=2, block_size=4)
    seq = Sequence(list(range(9)))
    assert bm.allocate_slots(seq, 9) is None
    assert seq.block_table == [] and bm.num_free_blocks == 2


def test_bad_sizes():
    with pytest.raises(ValueError, match="num_blocks"):
        BlockManager(0, 16)


def scheduled(bm, seq, n):
    """Allocates n more tokens and publishes what they fill, as the scheduler does for a scheduled row."""
    assert bm.allocate_slots(seq, n) == []
    bm.publish(seq, n)


def test_blocks_filled_this_step_are_shared_this_step_and_a_partial_chunk_publishes_nothing():
    bm = BlockManager(num_blocks=16, block_size=4)
    a = Sequence(list(range(14)))
    scheduled(bm, a, 6)  # a chunk ending mid-block 1: only block 0 is full after the step
    b = Sequence(list(range(14)))
    assert bm.attach_cached_prefix(b) == 4 and b.block_table == a.block_table[:1]
    a.num_computed_tokens += 6
    bm.commit_computed(a)
    scheduled(bm, a, 7)  # next chunk fills blocks 1 and 2, not block 3 (the last token stays)
    c = Sequence(list(range(13)) + [50, 51])
    assert bm.attach_cached_prefix(c) == 12 and c.block_table == a.block_table[:3]
    assert bm.ref_count(a.block_table[1]) == 2


def test_a_row_freed_before_its_forward_withdraws_what_it_published():
    bm = BlockManager(num_blocks=16, block_size=4)
    a = Sequence(list(range(9)))
    scheduled(bm, a, 9)
    b = Sequence(list(range(9)))
    assert bm.attach_cached_prefix(b) == 8  # attached in the same step: the forward computes them for both
    bm.free(a)  # e.g. aborted before the forward ran
    c = Sequence(list(range(9)))
    assert bm.attach_cached_prefix(c) == 0 and not bm.pending
    assert all(bm.ref_count(x) == 1 for x in b.block_table)
    bm.free(b)
    bm.free(c)
    assert bm.num_free_blocks == 16 and not bm.cached_blocks


def test_computed_blocks_stay_published_after_the_row_is_freed():
    bm = BlockManager(num_blocks=16, block_size=4)
    a = Sequence(list(range(9)))
    scheduled(bm, a, 9)
    a.num_computed_tokens += 9
    bm.commit_computed(a)
    assert not bm.pending
    bm.free(a)
    assert bm.attach_cached_prefix(Sequence(list(range(9)))) == 8
