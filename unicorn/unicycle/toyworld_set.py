"""An exact UniCycle set from the toy world's ``test`` split (prompts whose combinations no training scene has;
unicorn/toyworld/splits.py): scene ``index`` of each category from ``make_item(category, index, seed, "test")``,
its prompt, and its questions with the answers the world knows (what the prompt asserts). Open questions are
graded by the world's own grader (``grader: "toyworld"`` -> unicorn.toyworld.questions.grade_answer). Images are
drawn at the ``toyworld`` recipe's default solver settings for one image: its temperature and the CFG scale its
spread gives a single rollout (SolverSettings.cfg_scales with rollouts=1: the low end, 3.0).

This is measurement, so it may read the world's sampler through make_item; the self-play loop never imports it.
"""
from __future__ import annotations

import dataclasses

from .schema import Instance, Question

SPLIT = "test"


def toyworld_instances(num_prompts: int, seed: int = 0) -> list[Instance]:
    """``num_prompts`` instances, round-robin over the world's categories (scene i // 9 of category i % 9)."""
    from unicorn.toyworld.model.data import make_item
    from unicorn.toyworld.scene import CATEGORIES
    from unicorn.toyworld.splits import assignment_digest

    if num_prompts < 1:
        raise ValueError(f"--toyworld needs at least 1 prompt, got {num_prompts}")
    digest = assignment_digest()
    instances = []
    for i in range(num_prompts):
        category, index = CATEGORIES[i % len(CATEGORIES)], i // len(CATEGORIES)
        item = make_item(category, index, seed, SPLIT)
        questions = tuple(Question(q.id, q.type, q.question, q.answer, tuple(q.options), tuple(q.keywords),
                                   "toyworld" if q.type == "open" else "exact") for q in item.questions)
        instances.append(Instance(f"toyworld:{item.key}", category, item.prompt, questions,
                                  {"toyworld": {"key": item.key, "split": SPLIT, "splits_sha256": digest}}))
    return instances


def recipe_image_settings(recipe: str = "toyworld") -> dict:
    """``{"cfg_scale", "temperature"}`` for one image per prompt under the recipe's solver defaults."""
    from unicorn.selfplay.recipe import load_recipe

    solver = dataclasses.replace(load_recipe(recipe).solver, rollouts=1)
    return {"cfg_scale": solver.cfg_scales()[0], "temperature": solver.temperature}
