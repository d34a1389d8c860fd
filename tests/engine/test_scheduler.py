"""Scheduler: continuous batching, chunked prefill, CFG groups, forks, preemption and fairness.

Runs the scheduler with a fake runner whose "sampled" token depends only on (seed, sample, position), so a
correct schedule gives the same outputs whatever the pool size or batch composition.
"""
from unicorn.engine.block_manager import BlockManager
from unicorn.engine.params import ImageGenParams, SamplingParams
from unicorn.engine.scheduler import Scheduler, SchedulerConfig
from unicorn.engine.sequence import Request, RequestKind, Sequence


def text_request(prompt, max_tokens=5, n=1, seed=0, eos=()):
    req = Request(RequestKind.TEXT, SamplingParams(n=n, max_tokens=max_tokens), seed,
                  [Sequence(prompt, output_kind="text")], max_tokens)
    req.eos_token_ids = tuple(eos)
    return req


def image_request(prompt, n=2, num_tokens=6, seed=0, cfg=True):
    rows = [Sequence(prompt, output_kind="image")]
    if cfg:
        rows.append(Sequence([0] * len(prompt), is_uncond=True, output_kind="image"))
    return Request(RequestKind.IMAGE, ImageGenParams(n=n), seed, rows, num_tokens)


def fake_token(request, sample, step):
    return 1000 + (request.seed * 7919 + sample * 131 + step * 17) % 997


def check_writes(bm, out):
    """A step writes each block from one row only, and never into a block another row still references,
    unless that row attached it in this step from the writer, which publishes it (same-step sharing)."""
    writers = {}
    for item in out.rows:
        seq = item.seq
        first = seq.num_computed_tokens // bm.block_size
        for b in seq.block_table[first:]:
            assert writers.setdefault(b, seq.seq_id) == seq.seq_id, f"two rows write block {b}"
            assert bm.ref_count(b) == 1 or b in bm.pending.get(seq.seq_id, ())


def drive(scheduler, max_steps=10_000, on_step=None):
    finished, steps = [], 0
    while scheduler.has_unfinished():
        out = scheduler.schedule()
        assert not out.is_empty, "no progress"
        check_writes(scheduler.block_manager, out)
        sampled = {}
        new_tokens = {id(item.seq): item.num_new_tokens for item in out.rows}
        for req in out.sampling_requests:
            for row in scheduler.active_rows(req):  # every live row of a sampling request completes now
                assert row.num_computed_tokens + new_tokens[id(row)] == row.num_tokens
            step = req.rows[0].num_output_tokens
            sampled[req.request_id] = [fake_token(req, i, step) for i in range(req.n)]
        if on_step:
            on_step(out)
        finished += scheduler.update(out, sampled)
        steps += 1
        assert steps < max_steps
    return finished, steps


def make(num_blocks=64, block_size=4, **cfg):
    return Scheduler(SchedulerConfig(**cfg), BlockManager(num_blocks, block_size))


def outputs(requests):
    return {r.request_id: [r.sample_rows(i)[0].output_token_ids for i in range(r.n)] for r in requests}


def test_text_requests_decode_to_max_tokens():
    s = make()
    reqs = [text_request(list(range(1, 2 + k)), max_tokens=4, seed=k) for k in range(5)]
    for r in reqs:
        s.add_request(r)
    finished, steps = drive(s)
    assert len(finished) == 5 and steps == 4  # one prefill step (all fit), three decode steps
    for r in reqs:
        assert r.finish_reasons == ["length"]
        assert r.rows[0].output_token_ids == [fake_token(r, 0, t) for t in range(4)]
    assert s.block_manager.num_free_blocks == 64


def test_eos_stops_a_sample():
    s = make()
    r = text_request([1, 2, 3], max_tokens=10, seed=3)
    r.eos_token_ids = (fake_token(r, 0, 2),)
    s.add_request(r)
    drive(s)
    assert r.finish_reasons == ["stop"] and r.rows[0].num_output_tokens == 3


def test_chunked_prefill_samples_only_when_every_row_is_done():
    s = make(max_num_batched_tokens=5)
    r = image_request(list(range(1, 12)), n=1, num_tokens=3)
    s.add_request(r)
    seen = []
    drive(s, on_step=lambda out: seen.append((out.num_batched_tokens, bool(out.sampling_requests))))
    assert all(tokens <= 5 for tokens, _ in seen)
    first_sample = next(i for i, (_, sampled) in enumerate(seen) if sampled)
    assert first_sample >= 4  # 22 prompt tokens at 5 per step
    assert r.rows[0].output_token_ids == r.rows[1].output_token_ids


def test_image_group_forks_pairs_sharing_the_prompt():
    s = make(num_blocks=64, block_size=4)
    prompt = list(range(1, 11))  # 2 full blocks + a partial one
    r = image_request(prompt, n=4, num_tokens=5)
    s.add_request(r)
    out = s.schedule()
    assert [i.num_new_tokens for i in out.rows] == [10, 10]  # templates only: the prompt is computed once
    s.update(out, {r.request_id: [fake_token(r, i, 0) for i in range(4)]})
    assert len(r.rows) == 8
    cond_tables = [r.sample_rows(i)[0].block_table for i in range(4)]
    assert all(t[:2] == cond_tables[0][:2] for t in cond_tables)  # full prompt blocks shared
    assert s.block_manager.ref_count(cond_tables[0][0]) == 4
    drive(s)
    for i in range(4):
        cond, uncond = r.sample_rows(i)
        assert cond.output_token_ids == uncond.output_token_ids == [fake_token(r, i, t) for t in range(5)]


def test_preemption_finishes_everything_with_identical_outputs():
    def run(num_blocks):
        s = make(num_blocks=num_blocks, block_size=4, max_num_seqs=64)
        reqs = [image_request(list(range(1, 8 + k)), n=3, num_tokens=9, seed=k) for k in range(4)]
        reqs += [text_request(list(range(3, 9 + k)), max_tokens=12, n=2, seed=10 + k) for k in range(3)]
        for r in reqs:
            s.add_request(r)
        finished, _ = drive(s)
        assert len(finished) == len(reqs)
        assert s.block_manager.num_free_blocks == num_blocks
        return outputs(reqs), s.num_preemptions

    roomy, roomy_preemptions = run(1000)
    tight, tight_preemptions = run(30)
    assert roomy_preemptions == 0 and tight_preemptions > 0
    assert list(roomy.values()) == list(tight.values())


def test_seat_reservation_lets_text_in_while_images_run():
    s = make(num_blocks=400, block_size=4, max_num_seqs=8, image_row_fraction=0.75)
    images = [image_request([1, 2, 3], n=2, num_tokens=50, seed=k) for k in range(4)]  # 4 rows each
    for r in images:
        s.add_request(r)
    out = s.schedule()
    s.update(out, {r.request_id: [1, 2] for r in out.sampling_requests})
    text = text_request([5, 6, 7], max_tokens=2)
    s.add_request(text)
    admitted_at = None
    for step in range(5):
        out = s.schedule()
        if any(item.seq is text.rows[0] for item in out.rows) and admitted_at is None:
            admitted_at = step
        s.update(out, {r.request_id: [9] * r.n for r in out.sampling_requests})
    assert admitted_at == 0  # image rows may hold only 6 of the 8 seats


def test_bypass_limit_stops_starvation():
    s = make(num_blocks=400, block_size=4, max_num_seqs=4, max_bypass=2, image_row_fraction=1.0)
    s.add_request(text_request([1, 2], max_tokens=30, n=3))  # holds 3 seats for a while
    big = text_request([1, 2, 3], max_tokens=2, n=2)  # needs 2 seats: must wait
    s.add_request(big)
    smalls = [text_request([4, k], max_tokens=1) for k in range(6)]
    for r in smalls:
        s.add_request(r)
    order = []
    drive(s, on_step=lambda out: order.extend(r.request_id for r in out.sampling_requests
                                              if r.rows[0].num_output_tokens == 0))
    assert order.index(big.request_id) < order.index(smalls[-1].request_id)


def test_block_reservation_keeps_kv_room_for_text_while_images_run():
    # Without a reservation the image requests would fill the pool and the text request would wait 40 steps.
    s = make(num_blocks=60, block_size=4, max_num_seqs=64, image_row_fraction=0.75)
    images = [image_request([1, 2, 3, 4], n=1, num_tokens=40, seed=k) for k in range(5)]  # 2 x 11 blocks each
    for r in images:
        s.add_request(r)
    out = s.schedule()
    assert sum(1 for r in images if r in s.running) == 2  # 44 of the 45 blocks images may claim
    s.update(out, {r.request_id: [7] for r in out.sampling_requests})
    text = text_request([5, 6, 7], max_tokens=2)
    s.add_request(text)
    out = s.schedule()
    assert any(item.seq is text.rows[0] for item in out.rows)


def test_abort_frees_blocks_and_ends_unfinished_samples():
    sched = make(num_blocks=32)
    keep, gone, queued = text_request(list(range(9)), seed=1), text_request(list(range(20, 29)), n=2, seed=2), \
        text_request(list(range(40, 49)), seed=3)
    for req in (keep, gone):
        sched.add_request(req)
    out = sched.schedule()
    sched.update(out, {r.request_id: [fake_token(r, i, 0) for i in range(r.n)] for r in out.sampling_requests})
    sched.add_request(queued)
    assert sched.abort(gone.request_id) is gone and sched.abort(queued.request_id) is queued
    assert gone.finish_reasons == ["abort", "abort"] and queued.finish_reasons == ["abort"]
    assert all(not row.block_table for row in gone.rows) and sched.abort(gone.request_id) is None
    finished, _ = drive(sched)
    assert finished == [keep]
    assert sched.block_manager.num_free_blocks == 32  # nothing leaked


def _first_admitted(s, request, max_steps, on_update=None):
    """Steps (from now) until ``request``'s rows are first scheduled; None if not within ``max_steps``."""
    for step in range(max_steps):
        out = s.schedule()
        hit = any(item.seq is request.rows[0] for item in out.rows)
        s.update(out, {r.request_id: [fake_token(r, i, r.rows[0].num_output_tokens) for i in range(r.n)]
                       for r in out.sampling_requests})
        if hit:
            return step
    return None


def test_a_long_wait_alone_is_no_starvation():
    # 4 of 8 seats free: a CFG image of 4 samples (8 rows) waits for the long text request to finish. A text
    # request arriving 30 steps later passes it (it was never overtaken), it is not blocked for 50+ steps.
    s = make(num_blocks=400, block_size=4, max_num_seqs=8, image_row_fraction=1.0, max_bypass=16)
    s.add_request(text_request([1, 2, 3], max_tokens=80, n=4))
    image = image_request([4, 5, 6], n=4, num_tokens=3)
    s.add_request(image)
    assert _first_admitted(s, image, 30) is None
    assert image.num_times_bypassed == 0
    judge = text_request([7, 8, 9], max_tokens=2)
    s.add_request(judge)
    assert _first_admitted(s, judge, 50) == 0
    assert image.num_times_bypassed == 1


def test_a_request_overtaken_max_bypass_times_gets_in_next():
    s = make(num_blocks=400, block_size=4, max_num_seqs=4, max_bypass=3, image_row_fraction=1.0)
    s.add_request(text_request([1, 2], max_tokens=20, n=3))  # holds 3 seats for 20 steps
    big = text_request([1, 2, 3], max_tokens=2, n=2)  # needs 2 seats
    s.add_request(big)
    assert _first_admitted(s, big, 10) is None  # 10 steps waiting, nobody passing
    smalls = [text_request([4, k], max_tokens=1, seed=k) for k in range(6)]
    for r in smalls:
        s.add_request(r)
    order = []
    drive(s, on_step=lambda out: order.extend(r.request_id for r in out.sampling_requests
                                              if r.rows[0].num_output_tokens == 0))
    ids = [r.request_id for r in smalls]
    assert order == ids[:3] + [big.request_id] + ids[3:]


def test_priority_orders_the_queue_then_arrival():
    s = make(max_num_seqs=1)
    reqs = [text_request([1, 2, k], max_tokens=1, seed=k) for k in range(5)]
    for r, p in zip(reqs, [2, 0, 1, 0, 2]):
        r.priority = p
        s.add_request(r)
    assert list(s.waiting) == [reqs[1], reqs[3], reqs[2], reqs[0], reqs[4]]
    order = []
    drive(s, on_step=lambda out: order.extend(r.request_id for r in out.sampling_requests))
    assert order == [reqs[k].request_id for k in (1, 3, 2, 0, 4)]


def test_preemption_victim_is_the_lowest_priority_latest_arrival_and_returns_first_in_its_level():
    s = make(num_blocks=7, block_size=4, max_num_seqs=8, max_num_batched_tokens=64)
    low = text_request([1, 2, 3, 4], max_tokens=12, seed=1)  # arrives first, priority 1
    low.priority = 1
    high_a = text_request([5, 6, 7, 8], max_tokens=12, seed=2)
    high_b = text_request([9, 10, 11, 12], max_tokens=2, seed=3)
    for r in (low, high_a, high_b):
        s.add_request(r)
    preempted = []

    def on_step(out):
        if out.preempted and not preempted:
            preempted.extend(out.preempted)
            # Newer arrivals of the victim's priority queue behind it, higher priority ahead of it.
            late_low, late_high = text_request([13], max_tokens=1, seed=4), text_request([14], max_tokens=1, seed=5)
            late_low.priority = 1
            s.add_request(late_low)
            s.add_request(late_high)
            assert list(s.waiting) == [late_high] + preempted + [late_low]

    finished, _ = drive(s, on_step=on_step)
    assert preempted == [low]  # not high_a, although high_a arrived (and was admitted) later
    assert len(finished) == 5
    expected = [fake_token(high_a, 0, t) for t in range(12)]
    assert high_a.rows[0].output_token_ids == expected


def test_higher_priority_overtakes_a_starved_request_but_not_the_image_share():
    s = make(num_blocks=400, block_size=4, max_num_seqs=8, max_bypass=1, image_row_fraction=0.75)
    s.add_request(image_request([1, 2, 3], n=2, num_tokens=30, seed=0))  # 4 of the 6 image seats
    out = s.schedule()
    s.update(out, {r.request_id: [fake_token(r, i, 0) for i in range(r.n)] for r in out.sampling_requests})
    starved = text_request([1, 2], max_tokens=3, n=5)  # 5 seats: does not fit beside the image's 4
    starved.num_times_bypassed = 1  # already overtaken max_bypass times
    s.add_request(starved)
    same = text_request([3, 4], max_tokens=3)
    s.add_request(same)
    urgent = text_request([5, 6], max_tokens=3)
    urgent.priority = -1
    s.add_request(urgent)
    urgent_image = image_request([7, 8], n=1, num_tokens=3)  # 2 more image rows would pass the 6-seat share
    urgent_image.priority = -2
    urgent_image2 = image_request([7, 9], n=1, num_tokens=3)
    urgent_image2.priority = -2
    s.add_request(urgent_image)
    s.add_request(urgent_image2)
    out = s.schedule()
    admitted = {id(item.seq) for item in out.rows}
    assert id(urgent.rows[0]) in admitted and id(urgent_image.rows[0]) in admitted
    assert id(urgent_image2.rows[0]) not in admitted  # the image share holds whatever the priority
    assert id(same.rows[0]) not in admitted  # equal priority may not pass the starved request


def test_an_image_outside_its_share_never_blocks_text():
    s = make(num_blocks=400, block_size=4, max_num_seqs=8, max_bypass=2, image_row_fraction=0.75)
    running = image_request([1, 2, 3], n=3, num_tokens=40, seed=0)  # 6 rows: the whole image share
    s.add_request(running)
    waiting_image = image_request([4, 5], n=1, num_tokens=3, seed=1)
    s.add_request(waiting_image)
    judges = [text_request([6, k], max_tokens=1, seed=k) for k in range(8)]
    for r in judges:
        s.add_request(r)
    done = []
    for _ in range(10):
        out = s.schedule()
        s.update(out, {r.request_id: [fake_token(r, i, 0) for i in range(r.n)] for r in out.sampling_requests})
        done += [r for r in out.sampling_requests if r in judges]
    assert done == judges  # 8 judges pass the image, 2 seats at a time, although max_bypass is 2
    assert waiting_image.num_times_bypassed == 0 and waiting_image in s.waiting


def test_requests_admitted_together_compute_a_common_prefix_once():
    # 6 requests with a 12-token (3-block) common prefix, chunked prefill on: one computes the prefix, the
    # other five attach its blocks in the same step.
    s = make(num_blocks=64, block_size=4, max_num_batched_tokens=64)
    prefix = list(range(1, 13))
    reqs = [text_request(prefix + [20 + k, 30 + k], max_tokens=3, seed=k) for k in range(6)]
    for r in reqs:
        s.add_request(r)
    out = s.schedule()
    assert len(out.rows) == 6
    assert out.num_batched_tokens == 14 + 5 * 2
    shared = reqs[0].rows[0].block_table[:3]
    assert all(r.rows[0].block_table[:3] == shared for r in reqs)
    assert [s.block_manager.ref_count(b) for b in shared] == [6, 6, 6]
    assert s.block_manager.num_prefix_hit_tokens == 5 * 12
    s.update(out, {r.request_id: [fake_token(r, 0, 0)] for r in out.sampling_requests})
    finished, _ = drive(s)
    assert all(r.rows[0].output_token_ids == [fake_token(r, 0, t) for t in range(3)] for r in reqs)


def test_abort_between_schedule_and_update_keeps_the_blocks_a_same_step_row_reads():
    s = make(num_blocks=16, block_size=4)
    owner = text_request(list(range(1, 12)), max_tokens=2, seed=1)
    reader = text_request(list(range(1, 12)) + [50], max_tokens=2, seed=2)
    s.add_request(owner)
    s.add_request(reader)
    out = s.schedule()
    shared = owner.rows[0].block_table[:2]
    assert reader.rows[0].block_table[:2] == shared  # attached from the owner, computed by this very step
    assert s.abort(owner.request_id) is owner and owner.finish_reasons == ["abort"]
    # The forward still computes the owner's rows: its blocks stay allocated and findable until update().
    assert owner.rows[0].block_table[:2] == shared and all(s.block_manager.ref_count(b) == 2 for b in shared)
    s.update(out, {r.request_id: [fake_token(r, 0, 0)] for r in out.sampling_requests})
    assert owner.rows[0].block_table == [] and all(s.block_manager.ref_count(b) == 1 for b in shared)
    assert owner.rows[0].num_output_tokens == 0
    finished, _ = drive(s)
    assert finished == [reader] and reader.rows[0].output_token_ids == [fake_token(reader, 0, t) for t in range(2)]
    assert s.block_manager.num_free_blocks == 16


def test_prefix_statistics_count_admissions_not_failed_attempts():
    s = make(num_blocks=5, block_size=4, image_row_fraction=1.0)
    holder = text_request(list(range(1, 14)), max_tokens=7, seed=1)  # 4 of the 5 blocks now, all 5 at its longest
    s.add_request(holder)
    out = s.schedule()
    s.update(out, {holder.request_id: [5]})
    waiter = text_request(list(range(1, 5)) + list(range(30, 38)), max_tokens=1, seed=2)  # 1 block shared, 2 new
    s.add_request(waiter)
    steps_before = []
    drive(s, on_step=lambda out: steps_before.append(waiter.status.value))
    assert steps_before.count("waiting") >= 3  # its admission failed for room on several steps
    bm = s.block_manager
    assert bm.num_prefix_query_tokens == 13 + 12
    assert bm.num_prefix_hit_tokens == waiter.rows[0].num_cached_tokens == 4  # the holder's first block
