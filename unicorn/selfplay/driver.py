"""The self-play driver: one loop over ``engine.step()`` that submits, routes each finished output to the next role
and writes completed epochs. It is the only module that knows the order of the roles.

Structure (deterministic whatever finishes first):
- Prompt slots ``0 .. num_prompts-1`` are made in fixed-size epochs. An epoch's categories follow the target shares;
  its few-shot demonstrations come from epochs at least two back (their best-judged prompts), so epoch ``e`` can
  propose while epoch ``e-1`` draws and judges.
- Proposals come back in rounds; a round is resolved in slot order against the pool of earlier prompts (exact and
  near duplicates, rule checks); a rejected slot asks again (a new seed per attempt) up to ``max_attempts``. A
  category with ``max_duplicates_in_row`` rejections in a row is stopped for the rest of the run.
- An accepted prompt is drawn at once (all rollouts in one request); each image's judge request is queued the
  moment the image exists.
- An epoch is written when all its slots are done; a killed run redoes only unwritten epochs and, the structure
  being deterministic, writes the same bytes (exact where the engine's logits are batch-invariant, as in fp32 on
  CPU).
- With ``world`` workers (one engine each, unicorn/selfplay/workers.py), every worker proposes every slot (the
  proposer is cheap and its state is then the same everywhere, with no exchange per round), and draws and judges
  only the slots with ``prompt_id % world == rank``. It writes its part of an epoch into ``epochs/parts/``; an epoch
  is complete (its best prompts usable as demonstrations) once every worker's part is on disk, and rank 0 merges
  the parts into the same ``epoch-NNNNN.json`` one worker writes. No seed depends on the rank or the world size.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import PIL.Image

from unicorn.selfplay import judge as judge_role
from unicorn.selfplay import proposer as proposer_role
from unicorn.selfplay import solver as solver_role
from unicorn.selfplay.recipe import Recipe
from unicorn.selfplay.store import RunDir

NUM_DEMONSTRATIONS = 4  # [ours] best earlier prompts kept per category as few-shot demonstrations
IMAGE_PRIORITY, TEXT_PRIORITY = 1, 0
PART_POLL_S = 0.02  # how often an idle worker looks for the other workers' epoch parts  # judge and proposer requests go first: they are short and free memory


SETTING_HINTS = {"proposer": "a shorter proposer template or fewer examples, or --proposer-max-tokens",
                 "solver": "set the recipe's solver size and steps for this model, e.g. --height, --width, "
                           "--num-inference-steps",
                 "judge": "a shorter judge template or rubric"}


class SelfPlayError(ValueError):
    """The run cannot go on (one line)."""


@dataclass(frozen=True)
class SelfPlayConfig:
    num_prompts: int
    seed: int = 0
    epoch_size: int = 64

    def __post_init__(self):
        for name in ("num_prompts", "epoch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")

    @property
    def num_epochs(self) -> int:
        return math.ceil(self.num_prompts / self.epoch_size)


@dataclass
class Slot:
    slot: int
    category: str
    attempt: int = 0
    status: str = "proposing"  # proposing | drawing | judging | done | failed
    reply: str | None = None  # the current attempt's proposer reply
    prompt: str | None = None
    attempts: list = field(default_factory=list)  # rejected proposals: {"text", "reason"}
    reason: str | None = None  # why the slot failed
    rollouts: list = field(default_factory=list)
    pending_judges: int = 0

    def to_dict(self) -> dict:
        return {"slot": self.slot, "prompt_id": self.slot, "category": self.category, "status": self.status,
                "prompt": self.prompt, "attempts": self.attempts, "reason": self.reason, "rollouts": self.rollouts}


@dataclass
class Epoch:
    epoch: int
    slots: list[Slot]
    demonstrations: dict
    outstanding: int = 0  # proposer requests in flight
    proposing_done: bool = False
    after: dict | None = None  # the allocation state once proposing resolved


@dataclass
class Counters:
    proposals: int = 0
    images: int = 0
    judgements: int = 0
    image_s: float = 0.0


class SelfPlayDriver:
    """Runs self-play for ``cfg`` into ``run`` with one engine (``unicorn.engine.llm_engine.Engine``)."""

    def __init__(self, engine, recipe: Recipe, cfg: SelfPlayConfig, run: RunDir, progress: bool = False, log=print,
                 rank: int = 0, world: int = 1):
        self.engine, self.recipe, self.cfg, self.run_dir, self.log = engine, recipe, cfg, run, log
        self.rank, self.world = rank, world
        self.waiting: dict[int, list] = {}  # epochs whose own part is written, by their own best rows
        self.pool = proposer_role.PromptPool(recipe.proposer.near_duplicate)
        self.assigned: dict[str, int] = {}
        self.active = list(recipe.categories)
        self.in_row: dict[str, int] = {}
        self.stopped: dict[str, int] = {}  # category -> slot at which it ran dry
        self.best_by_epoch: dict[int, list] = {}  # epoch -> [(category, best score, prompt id, prompt)]
        self.next_epoch = 0
        self.inflight: dict[int, Epoch] = {}
        self.complete: set[int] = set()
        self.on_disk = run.completed_epochs() | (run.written_parts(rank, world) if world > 1 else set())
        self.requests: dict[int, tuple] = {}
        self.counters = Counters()
        self._pieces: dict[int, str] = {}
        self.bars = _Bars(progress, cfg.num_prompts * recipe.solver.rollouts)

    # ---- the loop -------------------------------------------------------------------------------------------
    def run(self) -> Counters:
        start = time.perf_counter()
        resumed = len(self.on_disk)
        if resumed < self.cfg.num_epochs:
            self.preflight()
        while len(self.complete) < self.cfg.num_epochs:
            self._start_epochs()
            if len(self.complete) == self.cfg.num_epochs:
                break
            if self.waiting and self._check_parts():
                continue
            if not self.engine.has_unfinished():
                if self.waiting:  # every request of ours is done: the other workers' parts are what we wait for
                    time.sleep(PART_POLL_S)
                    continue
                raise RuntimeError("self-play stalled: epochs in flight but no engine request queued")
            for out in self.engine.step():
                if out.finished:
                    self._route(out)
        self.bars.close()
        self.counters.image_s = time.perf_counter() - start
        if resumed:
            self.log(f"selfplay: resumed with {resumed} of {self.cfg.num_epochs} epochs already written")
        return self.counters

    def preflight(self) -> None:
        """One request per role with the recipe's settings, aborted at once: settings the engine refuses (an image
        size the model cannot draw, a prompt longer than its context) stop the run here in one line, before any
        slot fails for them. The probes run no step of the model."""
        recipe = self.recipe
        cat = max(recipe.categories, key=lambda c: len(recipe.render_judge(c, "")))  # the longest judge prompt
        solver = recipe.solver
        # the judge's probe image: the solver's size when the recipe sets it, else the official 1024 px (a PIL
        # image: the engine resizes it to its encoder's input as it does a drawing)
        size = (solver.width or solver.height or 1024, solver.height or solver.width or 1024)
        examples = list(recipe.categories[cat].seeds)[:recipe.proposer.num_examples]
        probes = {
            "proposer": self.engine.submit_text(proposer_role.proposer_request(recipe, cat, examples),
                                                proposer_role.proposer_params(recipe, self.cfg.seed, 0, 0)),
            "solver": self.engine.submit_image(recipe.render_solver(cat, "a probe"),
                                               solver_role.solver_params(recipe, self.cfg.seed, 0)),
            "judge": self.engine.submit_text(
                judge_role.judge_request(recipe, cat, "a probe", PIL.Image.new("RGB", size, (128, 128, 128))),
                judge_role.judge_params(recipe, self.cfg.seed, 0, 0)),
        }
        refused = {rid for rid in probes.values() if self.engine.abort(rid) is None}
        errors = {}
        while refused and self.engine.has_unfinished():  # a refused request's output (its error) comes from step()
            for out in self.engine.step():
                if out.request_id in refused:
                    refused.discard(out.request_id)
                    errors[out.request_id] = out.error
        for role, rid in probes.items():
            if errors.get(rid):
                raise SelfPlayError(f"the engine refuses the {role} request of recipe {recipe.name!r} on this model: "
                                    f"{errors[rid]} ({SETTING_HINTS[role]})")

    def _start_epochs(self) -> None:
        while self.next_epoch < self.cfg.num_epochs:
            k = self.next_epoch
            previous = self.inflight.get(k - 1)
            if previous is not None and not previous.proposing_done:
                return
            if k >= 2 and k - 2 not in self.complete:
                return
            self.next_epoch += 1
            if k in self.on_disk:
                self._load_epoch(k)
            else:
                self._begin_epoch(k)

    # ---- epochs ---------------------------------------------------------------------------------------------
    def _state(self) -> dict:
        return {"assigned": dict(self.assigned), "active": list(self.active), "in_row": dict(self.in_row),
                "stopped": dict(self.stopped)}

    def _set_state(self, state: dict) -> None:
        self.assigned, self.active = dict(state["assigned"]), list(state["active"])
        self.in_row, self.stopped = dict(state["in_row"]), {k: int(v) for k, v in state["stopped"].items()}

    def _load_epoch(self, k: int) -> None:
        merged = self.run_dir.epoch_path(k).exists()
        data = self.run_dir.read_epoch(k) if merged else self.run_dir.read_part(k, self.rank, self.world)
        for s in data["slots"]:
            if s["prompt"] is not None:
                self.pool.add(s["category"], s["prompt"])
        self._set_state(data["after"])
        if merged:
            self.best_by_epoch[k] = [tuple(b) for b in data["best"]]
            self.complete.add(k)
        else:
            self.waiting[k] = [tuple(b) for b in data["best"]]
        self.bars.update(images=sum(len(s["rollouts"]) for s in data["slots"]),
                         judgements=sum(len(s["rollouts"]) for s in data["slots"]), proposals=len(data["slots"]))

    def _check_parts(self) -> bool:
        """Marks complete the waiting epochs whose every part is on disk; True when one was."""
        found = False
        for k in sorted(self.waiting):
            if self.run_dir.epoch_path(k).exists() or self.run_dir.parts_complete(k, self.world):
                best = [tuple(b) for r in range(self.world) if r != self.rank
                        for b in self._part_best(k, r)] + self.waiting.pop(k)
                self.best_by_epoch[k] = sorted(best, key=lambda b: b[2])  # slot order, as one worker lists them
                self.complete.add(k)
                found = True
        return found

    def _part_best(self, k: int, rank: int) -> list:
        if self.run_dir.epoch_path(k).exists():  # rank 0 merged it already (a resumed worker)
            return [b for b in self.run_dir.read_epoch(k)["best"] if b[2] % self.world == rank]
        return self.run_dir.read_part(k, rank, self.world)["best"]

    def _begin_epoch(self, k: int) -> None:
        first = k * self.cfg.epoch_size
        n = min(self.cfg.epoch_size, self.cfg.num_prompts - first)
        if self.active:
            cats = proposer_role.allocate_categories(self.recipe, self.cfg.seed, k, first, n, self.assigned, self.active)
        else:
            cats = [next(iter(self.recipe.categories))] * n
        epoch = Epoch(k, [Slot(first + i, c) for i, c in enumerate(cats)], self._demonstrations(k))
        self.inflight[k] = epoch
        for slot in epoch.slots:
            if slot.category not in self.active:
                slot.status, slot.reason = "failed", "category stopped"
            else:
                self._propose(epoch, slot)
        if epoch.outstanding == 0:
            self._resolve_round(epoch)

    def _demonstrations(self, k: int) -> dict:
        """Per category, the best-judged kept prompts of epochs <= k-2 (ties by prompt id)."""
        keep = self.recipe.thresholds.keep_min_best
        rows = [b for e, bs in self.best_by_epoch.items() if e <= k - 2 for b in bs if b[1] >= keep]
        out: dict[str, list[str]] = {}
        for category, _, _, prompt in sorted(rows, key=lambda b: (-b[1], b[2])):
            if len(out.setdefault(category, [])) < NUM_DEMONSTRATIONS:
                out[category].append(prompt)
        return out

    def _maybe_finish(self, epoch: Epoch) -> None:
        if not epoch.proposing_done or any(s.status not in ("done", "failed", "remote") for s in epoch.slots):
            return
        best = []
        for s in epoch.slots:
            scores = [r["score"] for r in s.rollouts if r["score"] is not None]
            if s.status == "done" and scores:
                best.append((s.category, max(scores), s.slot, s.prompt))
        data = {"epoch": epoch.epoch, "slots": [s.to_dict() for s in epoch.slots], "after": epoch.after,
                "demonstrations": epoch.demonstrations, "best": best}
        del self.inflight[epoch.epoch]
        if self.world == 1:
            self.run_dir.write_epoch(epoch.epoch, data)
            self.best_by_epoch[epoch.epoch] = best
            self.complete.add(epoch.epoch)
        else:
            self.run_dir.write_part(epoch.epoch, self.rank, self.world, data)
            self.waiting[epoch.epoch] = best

    # ---- proposer -------------------------------------------------------------------------------------------
    def _propose(self, epoch: Epoch, slot: Slot) -> None:
        examples = proposer_role.choose_examples(self.recipe, self.cfg.seed, slot.category, slot.slot,
                                                 epoch.demonstrations.get(slot.category, []))
        rid = self.engine.submit_text(proposer_role.proposer_request(self.recipe, slot.category, examples),
                                      proposer_role.proposer_params(self.recipe, self.cfg.seed, slot.slot, slot.attempt),
                                      priority=TEXT_PRIORITY)
        self.requests[rid] = ("propose", epoch.epoch, slot)
        epoch.outstanding += 1

    def _on_proposal(self, epoch: Epoch, slot: Slot, out) -> None:
        slot.reply = out.text if out.error is None else None
        epoch.outstanding -= 1
        self.counters.proposals += 1
        self.bars.update(proposals=1)
        if epoch.outstanding == 0:
            self._resolve_round(epoch)

    def _resolve_round(self, epoch: Epoch) -> None:
        """Every reply of the round is in: accept or retry in slot order (deterministic)."""
        p = self.recipe.proposer
        for slot in epoch.slots:
            if slot.status != "proposing":
                continue
            if slot.category not in self.active:
                slot.status, slot.reason = "failed", "category stopped"
                continue
            prompt = proposer_role.parse_proposal(slot.reply, p.reply)
            if prompt is None:
                reason = "unparsed reply"
            else:
                reason = proposer_role.rule_violation(prompt, self.recipe.categories[slot.category].checks)
                if reason is None:
                    dup = self.pool.duplicate(slot.category, prompt)
                    reason = None if dup is None else f"{dup} duplicate"
            if reason is None:
                self.pool.add(slot.category, prompt)
                self.in_row[slot.category] = 0
                slot.prompt = prompt
                if slot.slot % self.world == self.rank:
                    slot.status = "drawing"
                    self._draw(epoch, slot)
                else:
                    slot.status = "remote"  # another worker draws and judges it
                continue
            slot.attempts.append({"text": slot.reply, "reason": reason})
            self.in_row[slot.category] = self.in_row.get(slot.category, 0) + 1
            if self.in_row[slot.category] >= p.max_duplicates_in_row and slot.category in self.active:
                self.active.remove(slot.category)
                self.stopped[slot.category] = slot.slot
                self.log(f"selfplay: category {slot.category!r} stopped at slot {slot.slot}: "
                         f"{p.max_duplicates_in_row} rejected proposals in a row (its prompt space ran dry)")
            if slot.attempt + 1 < p.max_attempts and slot.category in self.active:
                slot.attempt += 1
            else:
                slot.status, slot.reason = "failed", f"no usable proposal in {slot.attempt + 1} attempts"
        for slot in epoch.slots:
            if slot.status == "proposing":
                self._propose(epoch, slot)
        if epoch.outstanding == 0:
            epoch.proposing_done = True
            epoch.after = self._state()
            self._maybe_finish(epoch)

    # ---- solver and judge -----------------------------------------------------------------------------------
    def _draw(self, epoch: Epoch, slot: Slot) -> None:
        params = solver_role.solver_params(self.recipe, self.cfg.seed, slot.slot)
        rid = self.engine.submit_image(self.recipe.render_solver(slot.category, slot.prompt), params,
                                       priority=IMAGE_PRIORITY)
        self.requests[rid] = ("draw", epoch.epoch, slot, params)

    def _on_images(self, epoch: Epoch, slot: Slot, params, out) -> None:
        if out.error is not None or not out.images:
            slot.status, slot.reason = "failed", f"solver: {out.error or 'no images'}"
            self._maybe_finish(epoch)
            return
        settings = solver_role.rollout_settings(params, out)
        slot.status, slot.pending_judges = "judging", len(out.images)
        for i, image in enumerate(out.images):
            rel = self.run_dir.image_rel(epoch.epoch, slot.slot, i)
            digest = self.run_dir.write_image(rel, image)
            slot.rollouts.append({"prompt_id": slot.slot, "rollout": i, "category": slot.category,
                                  "prompt": slot.prompt, "image": rel, "image_sha256": digest,
                                  # VQ models' codes (Janus); a flow model (BAGEL) has latents, kept out of the table
                                  "vq_codes": None if out.image_tokens is None else out.image_tokens[i].tolist(),
                                  **settings[i], "judge_raw": None, "score": None, "analysis": None, "form": None,
                                  "expected_score": None, "judge_finish": None})
            rid = self.engine.submit_text(judge_role.judge_request(self.recipe, slot.category, slot.prompt, image),
                                          judge_role.judge_params(self.recipe, self.cfg.seed, slot.slot, i),
                                          priority=TEXT_PRIORITY)
            self.requests[rid] = ("judge", epoch.epoch, slot, i)
        self.counters.images += len(out.images)
        self.bars.update(images=len(out.images))

    def _on_judgement(self, epoch: Epoch, slot: Slot, rollout: int, out) -> None:
        row = slot.rollouts[rollout]
        if out.error is not None:
            row.update(judge_raw=None, judge_finish="error: " + out.error)
        else:
            sample = out.samples[0]
            verdict = judge_role.parse_judgement(sample.text)
            row.update(judge_raw=sample.text, score=verdict.score, analysis=verdict.analysis, form=verdict.form,
                       judge_finish=sample.finish_reason,
                       expected_score=judge_role.expected_score(sample, verdict, self._piece))
        slot.pending_judges -= 1
        self.counters.judgements += 1
        self.bars.update(judgements=1)
        if slot.pending_judges == 0:
            slot.status = "done"
            self._maybe_finish(epoch)

    def _piece(self, token_id: int) -> str:
        if token_id not in self._pieces:
            self._pieces[token_id] = self.engine.tokenizer.decode([token_id], skip_special_tokens=False)
        return self._pieces[token_id]

    def _route(self, out) -> None:
        entry = self.requests.pop(out.request_id, None)
        if entry is None:
            return  # not ours
        kind, k, slot, *rest = entry
        epoch = self.inflight[k]
        if kind == "propose":
            self._on_proposal(epoch, slot, out)
        elif kind == "draw":
            self._on_images(epoch, slot, rest[0], out)
        else:
            self._on_judgement(epoch, slot, rest[0], out)


class _Bars:
    """tqdm progress bars per role (proposals, images, judgements), or nothing."""

    def __init__(self, enabled: bool, num_images: int):
        self.bars = {}
        if enabled:
            from tqdm import tqdm

            self.bars = {"proposals": tqdm(desc="propose", unit="req", position=0),
                         "images": tqdm(desc="draw   ", unit="img", total=num_images, position=1),
                         "judgements": tqdm(desc="judge  ", unit="req", total=num_images, position=2)}

    def update(self, **counts) -> None:
        for name, n in counts.items():
            if name in self.bars and n:
                self.bars[name].update(n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
