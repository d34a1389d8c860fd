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
from dataclasses import dataclass, field

from unicorn.cpr.schema import CaptionRecord, ImageRef, JudgementRecord, ReflectionRecord, T2IRecord
from unicorn.selfplay.recipe import Recipe
from unicorn.selfplay.seeds import derive_rng


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


def build_records(recipe: Recipe, run_seed: int, selections: list[Selection], num_prompts: int) -> tuple[list, dict]:
    """The CPR records of a run (in a fixed order: kind, then prompt id) and the counts of candidates per kind."""
    candidates: dict[str, list] = {"t2i": [], "caption": [], "judgement": [], "reflection": []}
    caption_rng = derive_rng(run_seed, "caption-instruction")
    for s in selections:
        for row in s.judged:
            candidates["judgement"].append(JudgementRecord(
                id=f"jud-{s.prompt_id:06d}-{row['rollout']}", category=s.category, prompt=s.prompt, seed=row["seed"],
                image=_image(row, False), reasoning=row["analysis"], score=row["score"],
                instruction=recipe.render_judge(s.category, s.prompt), provenance=_provenance(row, raw=row["judge_raw"])))
        if not s.kept:
            continue
        best, worst = s.best, s.worst
        candidates["t2i"].append(T2IRecord(
            id=f"t2i-{s.prompt_id:06d}", category=s.category, prompt=s.prompt, seed=best["seed"],
            image=_image(best, True), score=best["score"], provenance=_provenance(best)))
        variant = caption_rng.randrange(len(recipe.templates["caption"]))
        candidates["caption"].append(CaptionRecord(
            id=f"cap-{s.prompt_id:06d}", category=s.category, prompt=s.prompt, seed=best["seed"],
            image=_image(best, False), instruction=recipe.render_caption(s.category, variant),
            provenance=_provenance(best)))
        if s.reflection:
            candidates["reflection"].append(ReflectionRecord(
                id=f"ref-{s.prompt_id:06d}", category=s.category, prompt=s.prompt, seed=best["seed"],
                loser_image=_image(worst, False), winner_image=_image(best, True), loser_score=worst["score"],
                winner_score=best["score"], provenance={**_provenance(best), "loser_rollout": worst["rollout"],
                                                        "instruction": recipe.render_reflection(s.category, s.prompt)}))
    if recipe.caption_cap_per_category is not None:
        caps = {c: int(recipe.caption_cap_per_category * cat.share * num_prompts) for c, cat in recipe.categories.items()}
        seen: Counter = Counter()
        rng = derive_rng(run_seed, "caption-cap")
        order = list(range(len(candidates["caption"])))
        rng.shuffle(order)
        keep = set()
        for i in order:
            c = candidates["caption"][i].category
            if seen[c] < caps.get(c, 0):
                seen[c] += 1
                keep.add(i)
        candidates["caption"] = [r for i, r in enumerate(candidates["caption"]) if i in keep]
    num_kept = len([s for s in selections if s.kept])
    records = []
    for kind in ("t2i", "caption", "judgement", "reflection"):
        pool = candidates[kind]
        quota = min(len(pool), round(recipe.mix[kind] * num_kept))
        chosen = sorted(derive_rng(run_seed, "mix", kind).sample(range(len(pool)), quota))
        records += [pool[i] for i in chosen]
    return records, {k: len(v) for k, v in candidates.items()}
