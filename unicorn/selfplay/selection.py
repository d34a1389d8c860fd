"""Which rollouts the CPR records use: the judge's pick (the method) or a random one (the control).

``judge``   best and worst by the judge's scores (cpr_builder.select), as the official recipe does.
``random``  the control of issue 11: every decision the judge made is kept (which prompts are kept, which get a
            reflection pair, so the data set has the same records of each kind), but the images are seeded random
            rollouts of the prompt instead of the judge's best and worst (a reflection's source image is a random
            one scored no higher than the target, as the record's schema requires). Training on it measures what the data
            would teach without the judge's ranking; its gap to ``judge`` is the judge's selection gain.
"""
from __future__ import annotations

import dataclasses

from unicorn.selfplay.cpr_builder import Selection
from unicorn.selfplay.seeds import derive_rng

SELECTION_RULES = ("judge", "random")


def check_rule(rule: str) -> str:
    if rule not in SELECTION_RULES:
        raise ValueError(f"selection rule must be one of {', '.join(SELECTION_RULES)}, got {rule!r}")
    return rule


def apply_rule(rule: str, selection: Selection, run_seed: int) -> Selection:
    """``selection`` (the judge's) under ``rule``; the judgement records (``judged``) are never changed."""
    if check_rule(rule) == "judge" or not selection.judged:
        return selection
    rng = derive_rng(run_seed, "control-random-rollout", selection.prompt_id)
    pool = list(selection.judged)  # rollouts with a parsed score: the records carry one
    best = rng.choice(pool)
    # The reflection's source: a random other rollout, among those scored no higher than ``best`` (a reflection record
    # needs winner_score >= loser_score, cpr/schema.py); ``best`` itself when it is the lowest. The image of the t2i,
    # caption and reflection-target records stays the random draw, untouched by the scores.
    lower = [r for r in pool if r is not best and r["score"] <= best["score"]]
    worst = rng.choice(lower) if lower else best
    return dataclasses.replace(selection, best=best, worst=worst)
