"""Continuous batching of text and image requests over the block manager. Pure Python (no torch).

One rule drives every step: each scheduled row's computed tokens catch up with its tokens, within a token
budget. That covers prefill, chunked prefill, decode and recompute after preemption alike. Requests (CFG
groups included) are admitted, preempted and finished whole; a request samples only in a step where all of
its rows finish computing, so the conditional and unconditional rows of an image stay in lockstep.

Order and fairness, in the order the rules apply:

* Priority: ``Request.priority``, lower first, ties by arrival. The waiting queue and the running list are
  kept in (priority, arrival) order; the running requests get the step's token budget in that order and
  waiting requests are considered for admission in that order. A preempted request returns to the front
  of its priority level (ahead of every waiting request of its priority, behind every one of higher
  priority). The preemption victim is the running request of the largest priority value, latest arrival
  among those. Priority never preempts a running request at admission; it only orders.
* Image share: whatever its priority, an image request is admitted only within ``image_row_fraction`` of
  the seats and (worst-case) KV blocks while other image requests run, so text requests always find room.
* Anti-starvation: a waiting request that cannot be admitted (no seat, no blocks, outside the image share)
  may be overtaken by requests queued behind it, i.e. of its priority or of lower priority; each such
  admission is one overtake. Once overtaken ``max_bypass`` times, nothing behind it is admitted until it
  is. A request of higher priority is queued ahead of it, so it may always overtake and never counts.
  An image request kept out only by the image share waits for its share, not for text: text requests
  passing it neither count nor are blocked by it (image requests behind it do and are).
"""
from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field

from unicorn.engine.block_manager import BlockManager
from unicorn.engine.sequence import Request, RequestKind, RequestStatus, Sequence


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_seqs: int = 256  # rows (a CFG image holds two)
    max_num_batched_tokens: int = 4096
    max_model_len: int = 4096
    enable_chunked_prefill: bool = True
    # Share of the seats (rows) and of the KV blocks that image requests may claim at admission, so long image
    # requests never take every row or block from short judge requests. 1.0 turns the reservation off.
    image_row_fraction: float = 0.75
    # A waiting request that later ones overtook this often stops further overtaking (no starvation).
    # An overtake is one admission of a request queued behind it; steps spent waiting do not count.
    max_bypass: int = 16

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.max_num_batched_tokens < self.max_num_seqs and not self.enable_chunked_prefill:
            raise ValueError("max_num_batched_tokens must be >= max_num_seqs without chunked prefill")
        if self.max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens must be >= 1, got {self.max_num_batched_tokens}")
        if not 0.0 < self.image_row_fraction <= 1.0:
            raise ValueError(f"image_row_fraction must be in (0, 1], got {self.image_row_fraction}")


@dataclass
class ScheduledRow:
    seq: Sequence
    num_new_tokens: int


@dataclass
class SchedulerOutput:
    rows: list[ScheduledRow] = field(default_factory=list)
    block_copies: list[tuple[int, int]] = field(default_factory=list)  # (src, dst), before the forward
    sampling_requests: list[Request] = field(default_factory=list)
    preempted: list[Request] = field(default_factory=list)
    flow_steps: list[Request] = field(default_factory=list)  # flow requests whose rows run a denoising step

    @property
    def num_batched_tokens(self) -> int:
        return sum(r.num_new_tokens for r in self.rows)

    @property
    def is_empty(self) -> bool:
        return not self.rows


class Scheduler:
    def __init__(self, config: SchedulerConfig, block_manager: BlockManager) -> None:
        self.config = config
        self.block_manager = block_manager
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.num_preemptions = 0
        self._arrivals = itertools.count()
        self._arrival: dict[int, int] = {}  # request id -> arrival order (ties within a priority)
        # Requests with rows in the step between schedule() and update(), and those aborted meanwhile, whose
        # blocks stay allocated until update(): the forward may still run their rows, and rows admitted in the
        # same step may read blocks they compute.
        self._in_flight: set[int] = set()
        self._abort_after_step: list[Request] = []
        self._flow_step_scheduled = False  # whether this step holds a denoising step already

    def _key(self, request: Request) -> tuple[int, int]:
        return request.priority, self._arrival[request.request_id]

    def _insert_sorted(self, queue: deque[Request] | list[Request], request: Request, *,
                       front: bool = False) -> None:
        """Puts ``request`` in (priority, arrival) order; ``front`` puts it first among its priority."""
        key = (request.priority, -1) if front else self._key(request)
        index = next((j for j, other in enumerate(queue) if self._key(other) > key), len(queue))
        queue.insert(index, request)

    # ---- queue ----------------------------------------------------------------------------------
    def add_request(self, request: Request) -> None:
        """Queues a request by (priority, arrival); lower priority values run first."""
        self._arrival.setdefault(request.request_id, next(self._arrivals))
        self._insert_sorted(self.waiting, request)

    def abort(self, request_id: int) -> Request | None:
        """Removes a waiting or running request and frees its blocks; its unfinished samples end with
        "abort". Returns the request, or None when no unfinished request has that id.

        Safe between :meth:`schedule` and :meth:`update` too: a request with rows in that step keeps its
        blocks until :meth:`update` (the forward computes its rows, and rows admitted in the same step may
        read the blocks it computes), which then frees them and samples nothing for it."""
        for queue in (self.waiting, self.running):
            for request in queue:
                if request.request_id == request_id:
                    queue.remove(request)
                    if request.request_id in self._in_flight:
                        self._abort_after_step.append(request)
                    else:
                        self._free_rows(request)
                    if not request.finish_reasons:
                        request.finish_reasons = [None] * request.n
                    request.finish_reasons = [r or "abort" for r in request.finish_reasons]
                    request.status = RequestStatus.FINISHED
                    self._arrival.pop(request.request_id, None)
                    return request
        return None

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def worst_case_blocks(self, request: Request) -> int:
        """Blocks the request could need at its longest if nothing were shared."""
        if request.kind is RequestKind.FLOW:  # the contexts, then per query row its own blocks (CoW included)
            bm, state = self.block_manager, request.flow
            contexts = [row.num_prompt_tokens for row in request.rows]
            own = max(bm.blocks_needed(c + state.num_query_tokens) - c // bm.block_size for c in contexts + [0])
            return sum(bm.blocks_needed(c) for c in contexts) + request.n * state.plan.max_branches * own
        rows = request.max_rows()
        tokens = request.rows[0].num_prompt_tokens + request.max_output_tokens
        return rows * self.block_manager.blocks_needed(tokens)

    # ---- planning -------------------------------------------------------------------------------
    @staticmethod
    def active_rows(request: Request) -> list[Sequence]:
        rows: list[Sequence] = []
        for i in range(request.num_samples):
            if not request.forked or request.finish_reasons[i] is None:
                rows.extend(request.sample_rows(i))
        return rows

    def _plan(self, request: Request, budget: int) -> tuple[list[ScheduledRow], bool] | None:
        """How many tokens each active row runs this step, and whether the request samples after it."""
        if request.kind is RequestKind.FLOW and all(row.num_uncomputed_tokens == 0 for row in request.rows):
            return self._plan_denoise(request, budget)
        planned = self._plan_rows(self.active_rows(request), budget)
        if planned is not None and request.kind is RequestKind.FLOW:
            return planned[0], False  # the context computed: the denoising steps follow
        return planned

    def _plan_denoise(self, request: Request, budget: int) -> tuple[list[ScheduledRow], bool] | None:
        """A flow request's next denoising step: a query row per branch of each rollout, all in this step.
        A step larger than the budget runs when no other denoising step is in this one (else it never could)."""
        state = request.flow
        wanted = [(i, b) for i in range(request.n) for b in state.plan.branches(state.step, i)]
        if len(wanted) * state.num_query_tokens > budget and self._flow_step_scheduled:
            return None
        plan = []
        for i, branch in wanted:
            prefix = state.prefix(request.rows, branch)
            row = state.query_row(prefix, i, branch)
            if prefix is not None and not row.block_table:
                self.block_manager.fork(prefix, row)  # shares the context's blocks
            row.num_computed_tokens = state.prefix_length(row)  # the query block is recomputed every step
            plan.append(ScheduledRow(row, state.num_query_tokens))
        return plan, False

    def _plan_rows(self, rows: list[Sequence], budget: int) -> tuple[list[ScheduledRow], bool] | None:
        remaining = [row.num_uncomputed_tokens for row in rows]
        if sum(remaining) <= budget:
            return [ScheduledRow(row, n) for row, n in zip(rows, remaining)], True
        if not self.config.enable_chunked_prefill:
            return None
        plan: list[ScheduledRow] = []
        for row, n in zip(rows, remaining):
            take = min(n - 1, budget)  # no row completes unless all do
            # never end a chunk inside a bidirectional block (its tokens must see each other)
            take = row.span_break(row.num_computed_tokens + take) - row.num_computed_tokens
            if take > 0:
                plan.append(ScheduledRow(row, take))
                budget -= take
        return (plan, False) if plan else None

    def _allocate(self, plan: list[ScheduledRow], copies: list[tuple[int, int]]) -> bool:
        for item in plan:
            result = self.block_manager.allocate_slots(item.seq, item.num_new_tokens)
            if result is None:
                return False
            copies.extend(result)
        return True

    # ---- preemption -----------------------------------------------------------------------------
    def _free_rows(self, request: Request) -> None:
        for row in request.rows:
            self.block_manager.free(row)
        if request.flow is not None:  # query rows are rebuilt at the next step (after a preemption)
            for row in request.flow.query_rows.values():
                self.block_manager.free(row)
            request.flow.query_rows.clear()

    def _preempt(self, request: Request) -> None:
        """Drops the request's cache (recomputed on re-admission) and puts it first in its priority level."""
        self._free_rows(request)
        self.running.remove(request)
        request.status = RequestStatus.WAITING
        request.num_preemptions += 1
        self.num_preemptions += 1
        self._insert_sorted(self.waiting, request, front=True)

    # ---- the step -------------------------------------------------------------------------------
    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.config.max_num_batched_tokens
        self._release_aborted()  # a step scheduled but never updated: its aborted requests go now
        self._flow_step_scheduled = False

        i = 0
        while i < len(self.running) and budget > 0:
            request = self.running[i]
            planned = self._plan(request, budget)
            if planned is None:
                i += 1
                continue
            plan, samples = planned
            # Copies are collected per request and kept only if the request is scheduled: a request that
            # preempts itself leaves copies into blocks it no longer owns (the pool may hand them out again).
            copies: list[tuple[int, int]] = []
            while not self._allocate(plan, copies):
                # running is in (priority, arrival) order, so the victim is never a request already scheduled
                victim = self.running[-1]
                self._preempt(victim)
                out.preempted.append(victim)
                if victim is request:
                    break
            if request.status is not RequestStatus.RUNNING:
                continue  # it preempted itself; running[i] is now the next request
            self._emit(out, request, plan, samples, copies)
            budget -= sum(item.num_new_tokens for item in plan)
            i += 1

        if not out.preempted:
            self._admit_waiting(out, budget)
        return out

    def _emit(self, out: SchedulerOutput, request: Request, plan: list[ScheduledRow], samples: bool,
              copies: list[tuple[int, int]]) -> None:
        """Adds a scheduled request's rows and copy-on-write copies to the step's output, and publishes the
        blocks its rows fill in full this step (requests admitted after it in this step may attach them)."""
        for item in plan:
            self.block_manager.publish(item.seq, item.num_new_tokens)
        self._in_flight.add(request.request_id)
        out.rows.extend(plan)
        out.block_copies.extend(copies)
        if samples:
            out.sampling_requests.append(request)
        if request.kind is RequestKind.FLOW and plan and plan[0].seq.flow_ref is not None:
            out.flow_steps.append(request)
            self._flow_step_scheduled = True

    def _seats_used(self) -> int:
        return sum(r.max_rows() for r in self.running)

    def _fits_image_reservation(self, request: Request) -> bool:
        """An image request is admitted only within its share of seats and (worst-case) KV blocks."""
        fraction = self.config.image_row_fraction
        if not request.is_image or fraction >= 1.0:
            return True
        running_images = [r for r in self.running if r.is_image]
        if not running_images:
            return True  # a lone image request may always run, or it could never start
        seats = sum(r.max_rows() for r in running_images) + request.max_rows()
        blocks = sum(self.worst_case_blocks(r) for r in running_images) + self.worst_case_blocks(request)
        return seats <= int(self.config.max_num_seqs * fraction) and blocks <= int(
            self.block_manager.num_blocks * fraction)

    def _admit_waiting(self, out: SchedulerOutput, budget: int) -> None:
        """Admits waiting requests in queue order while seats, blocks and the token budget last.

        A request that cannot be admitted may be overtaken by requests behind it; each admission of a
        request behind it counts one overtake, and once it has been overtaken ``max_bypass`` times nothing
        behind it is admitted until it is (steps spent waiting count nothing: a long wait with nobody
        passing is no starvation).
        """
        config = self.config
        # Requests not admitted in this pass, in queue order. An image admitted behind one overtakes it; a text
        # request overtakes it only if more than the image share keeps it out (an image waiting for its share
        # does not wait for text requests, which pass it freely). Overtakes are counted lazily, so that a queue
        # of thousands costs O(1) per request and step: each entry keeps the admissions made before it was
        # passed over (images, all), and each group the largest "overtakes so far - admissions then".
        passed_over: list[tuple[Request, bool, int, int]] = []
        admitted_images = admitted_all = 0
        worst_share_only = worst_blocking = None
        seats_used = self._seats_used()  # kept up to date below: summing over the running set per waiting request
        for request in list(self.waiting):
            if budget <= 0 or seats_used >= config.max_num_seqs:
                break  # nothing more can be admitted, so nothing more is overtaken
            is_image = request.is_image
            if worst_blocking is not None and admitted_all + worst_blocking >= config.max_bypass:
                break  # nothing may overtake a starved request any more
            if is_image and worst_share_only is not None and admitted_images + worst_share_only >= config.max_bypass:
                break
            admitted = False
            fits = seats_used + request.max_rows() <= config.max_num_seqs
            in_share = fits and self._fits_image_reservation(request)
            if in_share:
                for row in self.active_rows(request):
                    self.block_manager.attach_cached_prefix(row)
                planned = self._plan(request, budget)
                copies: list[tuple[int, int]] = []
                if planned is not None and self._allocate(planned[0], copies):
                    plan, samples = planned
                    self.waiting.remove(request)
                    request.status = RequestStatus.RUNNING
                    request.num_times_bypassed = 0
                    for row in self.active_rows(request):
                        self.block_manager.count_prefix_hits(row)
                    self._insert_sorted(self.running, request)
                    seats_used += request.max_rows()
                    self._emit(out, request, plan, samples, copies)
                    budget -= sum(item.num_new_tokens for item in plan)
                    admitted = True
                else:
                    self._free_rows(request)
            if admitted:
                admitted_all += 1
                admitted_images += is_image
            elif fits and not in_share:  # kept out by the image share alone
                passed_over.append((request, True, admitted_images, admitted_all))
                worst = request.num_times_bypassed - admitted_images
                worst_share_only = worst if worst_share_only is None else max(worst_share_only, worst)
            else:
                passed_over.append((request, False, admitted_images, admitted_all))
                worst = request.num_times_bypassed - admitted_all
                worst_blocking = worst if worst_blocking is None else max(worst_blocking, worst)
        for request, share_only, images_then, all_then in passed_over:
            request.num_times_bypassed += (admitted_images - images_then) if share_only else (admitted_all - all_then)

    # ---- after the forward ------------------------------------------------------------------------
    def update(self, out: SchedulerOutput, sampled: dict[int, list[int | None]]) -> list[Request]:
        """Applies a step's results; ``sampled[request_id][i]`` is sample ``i``'s new token.

        Returns the requests that finished in this step.
        """
        for item in out.rows:
            item.seq.num_computed_tokens += item.num_new_tokens
            self.block_manager.commit_computed(item.seq)
        finished: list[Request] = []
        for request in out.flow_steps:
            if request.status is not RequestStatus.RUNNING:
                continue  # aborted during the step
            request.flow.step += 1
            if request.flow.done:
                request.finish_reasons = ["length"] * request.n
                request.status = RequestStatus.FINISHED
                self.running.remove(request)
                self._arrival.pop(request.request_id, None)
                self._free_rows(request)
                finished.append(request)
        for request in out.sampling_requests:
            if request.status is not RequestStatus.RUNNING:
                continue
            tokens = sampled[request.request_id]
            if not request.forked:
                self._fork(request)
            for i, token in enumerate(tokens):
                if token is None or request.finish_reasons[i] is not None:
                    continue
                for row in request.sample_rows(i):
                    row.token_ids.append(token)
                reason = self._finish_reason(request, request.sample_rows(i)[0], token)
                if request.on_token is not None:
                    reason = request.on_token(i, token) or reason
                if reason is not None:
                    request.finish_reasons[i] = reason
                    for row in request.sample_rows(i):
                        self.block_manager.free(row)
            if all(reason is not None for reason in request.finish_reasons):
                request.status = RequestStatus.FINISHED
                self.running.remove(request)
                self._arrival.pop(request.request_id, None)
                finished.append(request)
        self._release_aborted()
        return finished

    def _release_aborted(self) -> None:
        for request in self._abort_after_step:
            self._free_rows(request)
        self._abort_after_step.clear()
        self._in_flight.clear()

    def _fork(self, request: Request) -> None:
        templates = list(request.rows)
        for i in range(1, request.n):
            for template in templates:
                child = template.fork(sample_index=i)
                self.block_manager.fork(template, child)
                request.rows.append(child)
        request.forked = True
        request.finish_reasons = [None] * request.n

    def _finish_reason(self, request: Request, row: Sequence, token: int) -> str | None:
        if request.kind is RequestKind.TEXT:
            params = request.params
            if not params.ignore_eos and token in request.eos_token_ids:
                return "stop"
            if token in params.stop_token_ids:
                return "stop"
        if row.num_output_tokens >= request.max_output_tokens:
            return "length"
        if row.num_tokens >= self.config.max_model_len:
            return "length"
        return None
