"""Scheduler fuzz: random mixes of text / image / CFG / n>1 requests on tiny pools (preemption), chunked
prefill on and off, random aborts. Every step is checked against the block manager's invariants and a toy
KV cache (each row must read back its own tokens: no block that no row computed), and the outputs against
an unconstrained run of the same requests (the fake runner of test_scheduler.py makes a
sample's tokens depend only on its request, sample index and position, so any correct schedule agrees).
"""
import random

from tests.engine.test_scheduler import check_writes, fake_token, image_request, text_request
from unicorn.engine.block_manager import BlockManager
from unicorn.engine.scheduler import Scheduler, SchedulerConfig
from unicorn.engine.sequence import RequestKind, RequestStatus


def random_specs(rng):
    prefixes = [[rng.randrange(1, 6) for _ in range(rng.randrange(0, 9))] for _ in range(2)]
    specs = []
    for k in range(rng.randrange(2, 8)):
        prompt = rng.choice(prefixes) + [rng.randrange(1, 6) for _ in range(rng.randrange(1, 7))]
        kind = rng.choice(["text", "text", "image", "cfg"])
        specs.append(dict(kind=kind, prompt=prompt, n=rng.randrange(1, 4), tokens=rng.randrange(1, 9), seed=k,
                          eos=rng.random() < 0.3, priority=rng.randrange(0, 3)))
    return specs


def build(spec):
    if spec["kind"] == "text":
        req = text_request(spec["prompt"], max_tokens=spec["tokens"], n=spec["n"], seed=spec["seed"])
        if spec["eos"]:
            req.eos_token_ids = (fake_token(req, 0, spec["tokens"] // 2),)
    else:
        req = image_request(spec["prompt"], n=spec["n"], num_tokens=spec["tokens"], seed=spec["seed"],
                            cfg=spec["kind"] == "cfg")
    req.priority = spec["priority"]
    return req


def check_step(scheduler, requests, out):
    bm = scheduler.block_manager
    owned = {b for item in out.rows for b in item.seq.block_table}
    dsts = [dst for _, dst in out.block_copies]
    assert len(dsts) == len(set(dsts)), f"two copies into one block: {out.block_copies}"
    assert set(dsts) <= owned, f"copy into a block no scheduled row owns: {out.block_copies}"
    check_refs(bm, requests)
    check_writes(bm, out)
    for request in out.preempted:
        assert request.status is RequestStatus.WAITING
    assert {id(r) for r in out.sampling_requests} <= {id(r) for r in scheduler.running}


def content(seq, pos):
    return seq.token_ids[pos], seq.output_kind if pos >= seq.num_prompt_tokens else "prompt"


def simulate_kv(bm, cache, out):
    """A toy KV cache (slot -> what was written there): copies, then every row's writes, then every row reads
    its whole context through its block table and must find its own tokens (no uncomputed or foreign block)."""
    bs = bm.block_size
    moved = {(dst, o): cache.get(src * bs + o) for src, dst in out.block_copies for o in range(bs)}
    for (dst, o), value in moved.items():
        cache[dst * bs + o] = value
    for item in out.rows:
        seq = item.seq
        for pos in range(seq.num_computed_tokens, seq.num_computed_tokens + item.num_new_tokens):
            cache[seq.block_table[pos // bs] * bs + pos % bs] = content(seq, pos)
    for item in out.rows:
        seq = item.seq
        for pos in range(seq.num_computed_tokens + item.num_new_tokens):
            assert cache.get(seq.block_table[pos // bs] * bs + pos % bs) == content(seq, pos), (seq, pos)


def check_refs(bm, requests):
    holders = [0] * bm.num_blocks
    for request in requests:
        for row in request.rows:
            for b in row.block_table:
                holders[b] += 1
    assert [bm.ref_count(b) for b in range(bm.num_blocks)] == holders
    assert bm.num_free_blocks == holders.count(0)


def run(specs, *, num_blocks, block_size, rng=None, **config):
    scheduler = Scheduler(SchedulerConfig(**config), BlockManager(num_blocks, block_size))
    requests = [build(spec) for spec in specs]
    for request in requests:
        scheduler.add_request(request)
    aborted, steps, cache = set(), 0, {}
    while scheduler.has_unfinished():
        if rng is not None and rng.random() < 0.04:
            live = [r for r in requests if not r.is_finished]
            victim = rng.choice(live)
            assert scheduler.abort(victim.request_id) is victim
            aborted.add(victim.request_id)
            check_refs(scheduler.block_manager, requests)
            continue
        out = scheduler.schedule()
        assert not out.is_empty, "no progress"
        check_step(scheduler, requests, out)
        if rng is not None and rng.random() < 0.03:  # abort between schedule() and update(): the step still runs
            victim = rng.choice([r for r in requests if not r.is_finished])
            assert scheduler.abort(victim.request_id) is victim
            aborted.add(victim.request_id)
            check_refs(scheduler.block_manager, requests)
        simulate_kv(scheduler.block_manager, cache, out)
        sampled = {r.request_id: [fake_token(r, i, r.rows[0].num_output_tokens) for i in range(r.n)]
                   for r in out.sampling_requests}
        scheduler.update(out, sampled)
        check_refs(scheduler.block_manager, requests)
        steps += 1
        assert steps < 5000
    assert scheduler.block_manager.num_free_blocks == num_blocks
    return {spec["seed"]: [r.sample_rows(i)[0].output_token_ids for i in range(r.n)]
            for spec, r in zip(specs, requests) if r.request_id not in aborted}, scheduler.num_preemptions


def test_random_schedules_keep_the_invariants_and_the_outputs():
    total_preemptions = 0
    for case in range(300):
        rng = random.Random(case)
        specs = random_specs(rng)
        block_size = rng.choice([2, 3, 4])
        reference, _ = run(specs, num_blocks=2000, block_size=block_size, max_num_seqs=64,
                           max_num_batched_tokens=4096, image_row_fraction=1.0)
        rows = max((2 if s["kind"] == "cfg" else 1) * s["n"] for s in specs)
        worst = max((2 if s["kind"] == "cfg" else 1) * s["n"] * -(-(len(s["prompt"]) + s["tokens"]) // block_size)
                    for s in specs)
        chunked = rng.random() < 0.5
        seats = rng.randrange(rows, rows + 6)  # a decode step of a forked request needs a token per row
        got, preemptions = run(
            specs, num_blocks=worst + rng.randrange(0, 4), block_size=block_size, rng=rng,
            max_num_seqs=seats, enable_chunked_prefill=chunked,
            max_num_batched_tokens=rng.randrange(seats, seats + 8) if chunked else 64,
            image_row_fraction=rng.choice([1.0, 0.75]), max_bypass=rng.randrange(1, 5))
        total_preemptions += preemptions
        for seed, samples in got.items():
            assert samples == reference[seed], f"case {case}, request {seed}"
    assert total_preemptions > 50  # the pools are tight enough to preempt often
