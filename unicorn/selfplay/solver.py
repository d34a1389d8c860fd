"""Solver: the rollouts of one prompt as ONE engine request with per-rollout settings (the recipe's CFG spread) and
per-rollout seeds that depend only on the run seed, the prompt id and the rollout index."""
from __future__ import annotations

from unicorn.engine.params import ImageGenParams
from unicorn.selfplay.recipe import Recipe
from unicorn.selfplay.seeds import derive_seed

# the recipe's settings of flow-matching models (BAGEL), under the same names in ImageGenParams
FLOW_FIELDS = ("height", "width", "num_timesteps", "timestep_shift", "cfg_img_scale", "cfg_interval", "cfg_renorm_min",
               "cfg_renorm_type")


def rollout_seed(run_seed: int, prompt_id: int, rollout: int) -> int:
    return derive_seed(run_seed, "image", prompt_id, rollout)


def solver_params(recipe: Recipe, run_seed: int, prompt_id: int) -> ImageGenParams:
    s = recipe.solver
    return ImageGenParams(n=s.rollouts, cfg_scale=s.cfg_scales(), temperature=s.temperature,
                          seed=[rollout_seed(run_seed, prompt_id, r) for r in range(s.rollouts)],
                          **{name: getattr(s, name) for name in FLOW_FIELDS})


def rollout_settings(params: ImageGenParams, out) -> list[dict]:
    """What each image of the engine's output ``out`` was drawn with (recorded per image). A VQ model's image:
    CFG scale, sampling settings and seed. A flow model's (``out.latents`` set): CFG scale, seed, its size in
    pixels and the flow settings asked for (None: the model's default)."""
    if out.latents is None:
        return [{"cfg_scale": params.value("cfg_scale", i), "temperature": params.value("temperature", i),
                 "top_k": params.value("top_k", i), "top_p": params.value("top_p", i), "seed": params.value("seed", i)}
                for i in range(params.n)]
    rows = []
    for i, image in enumerate(out.images):
        row = {"cfg_scale": params.value("cfg_scale", i), "seed": params.value("seed", i), "width": image.size[0],
               "height": image.size[1]}
        for name in FLOW_FIELDS[2:]:
            value = getattr(params, name) if name == "cfg_interval" else params.value(name, i)
            row[name] = list(value) if isinstance(value, tuple) else value
        rows.append(row)
    return rows
