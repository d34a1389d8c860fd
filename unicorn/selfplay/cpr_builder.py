"""Rejection sampling and Cognitive Pattern Reconstruction (method.md §3): CPR records from the rollouts table, by rule.

Per prompt (its parsed judge scores; unparsed replies are excluded): best and worst rollouts with seeded
tie-breaks; the prompt is kept when best >= ``keep_min_best``. Candidates: t2i (prompt -> best image), caption (best
image -> the prompt, one of the recipe's caption instructions), judgement (every parsed judge transcript, any
score), reflection (worst -> best when best >= ``reflection_min_best`` and best - worst >= ``reflection_min_gap``).
The recipe's mix then takes ``mix[kind] x kept prompts`` of each kind, drawn by seed (captions first capped per
category at ``caption_cap_per_category`` of its target prompt count).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from unicorn.cpr.schema import CaptionRecord, ImageRef, JudgementRecord, ReflectionRecord, T2IRecord
from unicorn.selfplay.recipe import Recipe
from unicorn.selfplay.seeds import derive_rng

KINDS = ("t2i", "caption", "judgement", "reflection")  # the kinds self-play makes, in the data set's order


@dataclass
class Selection:
    """What rejection sampling decided for one prompt."""
    prompt_id: int
    category: str
    prompt: str
    best: dict | None  # rollout rows
    worst: dict | None
    kept: bool
    reflection: bool
    judged: list[dict] = field(default_factory=list)  # rollouts with a parsed score


def select(recipe: Recipe, run_seed: int, prompt_id: int, category: str, prompt: str, rollouts: list[dict]) -> Selection:
    judged = [r for r in rollouts if r.get("score") is not None]
    if not judged:
        return Selection(prompt_id, category, prompt, None, None, False, False)
    best_score = max(r["score"] for r in judged)
    worst_score = min(r["score"] for r in judged)
    rng = derive_rng(run_seed, "select", prompt_id)
    best = rng.choice([r for r in judged if r["score"] == best_score])
    worst = rng.choice([r for r in judged if r["score"] == worst_score and r is not best] or [best])
    t = recipe.thresholds
    kept = best_score >= t.keep_min_best
    reflection = kept and best_score >= t.reflection_min_best and best_score - worst_score >= t.reflection_min_gap
    return Selection(prompt_id, category, prompt, best, worst, kept, reflection, judged)


def _image(row: dict, with_codes: bool) -> ImageRef:
    return ImageRef(path=row["image"], vq_codes=tuple(row["vq_codes"]) if with_codes and row.get("vq_codes") else None)


def _provenance(row: dict, **extra) -> dict:
    keys = ("prompt_id", "rollout", "seed", "cfg_scale", "temperature", "score", "expected_score")
    return {"source": "selfplay", **{k: row.get(k) for k in keys}, **extra}


def _candidates(recipe: Recipe, s: Selection, caption_rng) -> dict[str, list]:
    """One prompt's candidate records per kind (``caption_rng`` advances once per kept prompt, in prompt order)."""
    out: dict[str, list] = {"t2i": [], "caption": [], "judgement": [], "reflection": []}
    for row in s.judged:
        out["judgement"].append(JudgementRecord(
            id=f"jud-{s.prompt_id:06d}-{row['rollout']}", category=s.category, prompt=s.prompt, seed=row["seed"],
            image=_image(row, False), reasoning=row["analysis"], score=row["score"],
            instruction=recipe.render_judge(s.category, s.prompt), provenance=_provenance(row, raw=row["judge_raw"])))
    if not s.kept:
        return out
    best, worst = s.best, s.worst
    out["t2i"].append(T2IRecord(
        id=f"t2i-{s.prompt_id:06d}", category=s.category, prompt=s.prompt, seed=best["seed"],
        image=_image(best, True), score=best["score"], provenance=_provenance(best)))
    variant = caption_rng.randrange(len(recipe.templates["caption"]))
    out["caption"].append(CaptionRecord(
        id=f"cap-{s.prompt_id:06d}", category=s.category, prompt=s.prompt, seed=best["seed"],
        image=_image(best, False), instruction=recipe.render_caption(s.category, variant),
        provenance=_provenance(best)))
    if s.reflection:
        out["reflection"].append(ReflectionRecord(
            id=f"ref-{s.prompt_id:06d}", category=s.category, prompt=s.prompt, seed=best["seed"],
            loser_image=_image(worst, False), winner_image=_image(best, True), loser_score=worst["score"],
            winner_score=best["score"], provenance={**_provenance(best), "loser_rollout": worst["rollout"],
                                                    "instruction": recipe.render_reflection(s.category, s.prompt)}))
    return out


@dataclass
class Plan:
    """Which candidates of each kind the mix takes (indices in prompt order), decided from counts alone."""
    chosen: dict[str, set[int]]
    candidates: dict[str, int]  # candidates per kind (captions after the per-category cap)
    num_kept: int


def plan_records(recipe: Recipe, run_seed: int, selections: Iterable[Selection], num_prompts: int) -> Plan:
    """First pass of a streamed build: counts only (plus each caption candidate's category, for the cap)."""
    counts = Counter()
    caption_categories: list[str] = []
    caption_rng = derive_rng(run_seed, "caption-instruction")
    num_kept = 0
    for s in selections:
        num_kept += s.kept
        for kind, pool in _candidates(recipe, s, caption_rng).items():
            counts[kind] += len(pool)
            if kind == "caption":
                caption_categories += [r.category for r in pool]
    pools = {kind: list(range(counts[kind])) for kind in KINDS}
    if recipe.caption_cap_per_category is not None:
        caps = {c: int(recipe.caption_cap_per_category * cat.share * num_prompts) for c, cat in recipe.categories.items()}
        seen: Counter = Counter()
        rng = derive_rng(run_seed, "caption-cap")
        order = list(range(len(caption_categories)))
        rng.shuffle(order)
        keep = set()
        for i in order:
            c = caption_categories[i]
            if seen[c] < caps.get(c, 0):
                seen[c] += 1
                keep.add(i)
        pools["caption"] = sorted(keep)
    chosen = {}
    for kind in KINDS:
        pool = pools[kind]
        quota = min(len(pool), round(recipe.mix[kind] * num_kept))
        chosen[kind] = {pool[i] for i in derive_rng(run_seed, "mix", kind).sample(range(len(pool)), quota)}
    return Plan(chosen, {k: len(pools[k]) for k in KINDS}, num_kept)


def iter_records(recipe: Recipe, run_seed: int, selections: Iterable[Selection], plan: Plan) -> Iterator:
    """Second pass: the chosen records, each kind in prompt order (kinds interleaved prompt by prompt)."""
    index = Counter()
    caption_rng = derive_rng(run_seed, "caption-instruction")
    for s in selections:
        for kind, pool in _candidates(recipe, s, caption_rng).items():
            for record in pool:
                if index[kind] in plan.chosen[kind]:
                    yield record
                index[kind] += 1


def build_records(recipe: Recipe, run_seed: int, selections: list[Selection], num_prompts: int) -> tuple[list, dict]:
    """The CPR records of a run (in a fixed order: kind, then prompt id) and the counts of candidates per kind."""
    plan = plan_records(recipe, run_seed, selections, num_prompts)
    records = list(iter_records(recipe, run_seed, selections, plan))
    order = {k: i for i, k in enumerate(KINDS)}
    records.sort(key=lambda r: order[r.kind])  # stable: prompt order within a kind
    return records, dict(plan.candidates)
