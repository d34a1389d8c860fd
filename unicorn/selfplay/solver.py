"""Solver: the rollouts of one prompt as ONE engine request with per-rollout settings (the recipe's CFG spread) and
per-rollout seeds that depend only on the run seed, the prompt id and the rollout index."""
from __future__ import annotations

from unicorn.engine.params import ImageGenParams
from unicorn.selfplay.recipe import Recipe
from unicorn.selfplay.seeds import derive_seed


def rollout_seed(run_seed: int, prompt_id: int, rollout: int) -> int:
    return derive_seed(run_seed, "image", prompt_id, rollout)


def solver_params(recipe: Recipe, run_seed: int, prompt_id: int) -> ImageGenParams:
    s = recipe.solver
    return ImageGenParams(n=s.rollouts, cfg_scale=s.cfg_scales(), temperature=s.temperature,
                          seed=[rollout_seed(run_seed, prompt_id, r) for r in range(s.rollouts)])


def rollout_settings(params: ImageGenParams) -> list[dict]:
    """What each image was drawn with (recorded per image)."""
    return [{"cfg_scale": params.value("cfg_scale", i), "temperature": params.value("temperature", i),
             "top_k": params.value("top_k", i), "top_p": params.value("top_p", i), "seed": params.value("seed", i)}
            for i in range(params.n)]
