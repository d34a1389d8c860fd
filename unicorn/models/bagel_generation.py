"""BAGEL's side of the engine's flow requests (``model.flow``, driven by unicorn.engine.flow): settings, noise,
the query block of a denoising step, the per-image CFG combine and the VAE decode.

One denoising step of one image runs up to three branches over the same query block (``<|vision_start|>`` +
the noisy latent tokens + ``<|vision_end|>``, bidirectional, at the context's next rope position, latent
tokens on the generation expert): ``cond`` over the prompt's context, ``text_uncond`` over the empty context
(the same for every request) and, in image-conditioned generation, ``img_uncond``. In plain T2I the
image-unconditional context equals the conditional one, so its velocity is the conditional one (reused, the
official formula still applied: the official result). The math is unicorn.models.bagel_flow's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from unicorn.models.bagel_flow import FlowParams, cfg_combine

COND, TEXT_UNCOND = "cond", "text_uncond"


@dataclass
class BagelFlowPlan:
    """One request's denoising plan: image size, per-rollout settings and the schedule (shared: one
    ``num_timesteps`` and shift per request), and which branches each rollout runs at each step."""

    height: int
    width: int
    rollouts: list[FlowParams]
    timesteps: list[float]
    dts: list[float]
    query_ids: list[int]  # token ids of the query block (placeholders between the markers)
    scales: list[list[tuple[float, float]]] = field(default_factory=list)  # [step][rollout] (text, image)

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    @property
    def num_latent_tokens(self) -> int:
        return len(self.query_ids) - 2

    def branches(self, step: int, i: int) -> tuple[str, ...]:
        """The contexts rollout ``i`` queries at ``step``: the conditional one, and the empty one while its text
        CFG is on."""
        return (COND, TEXT_UNCOND) if self.scales[step][i][0] > 1.0 else (COND,)

    @property
    def max_branches(self) -> int:
        return 2 if any(s[0] > 1.0 for row in self.scales for s in row) else 1


class BagelFlowGeneration:
    """What a BAGEL checkpoint gives the engine's flow requests (``BagelModel.flow``)."""

    def __init__(self, model):
        self._model = model  # not a submodule (no parameters of its own)

    @property
    def model(self):
        return self._model

    def plan(self, params, n: int) -> BagelFlowPlan:
        """The plan of ``n`` images under ``params`` (an ImageGenParams: ``cfg_scale`` is the text scale; None
        fields take FlowParams' defaults). Raises ValueError naming the bad field."""
        model = self.model
        default = FlowParams()
        height = params.height or model.arch.max_image_size
        width = params.width or model.arch.max_image_size
        model.arch.check_image_size(height, width)

        def pick(name, i, fallback):
            value = params.value(name, i) if hasattr(params, "value") else getattr(params, name)
            return fallback if value is None else value

        base = dict(num_timesteps=params.num_timesteps or default.num_timesteps,
                    timestep_shift=params.timestep_shift or default.timestep_shift,
                    cfg_interval=params.cfg_interval or default.cfg_interval,
                    cfg_renorm_type=params.cfg_renorm_type or default.cfg_renorm_type)
        rollouts = [FlowParams(**base, cfg_text_scale=float(pick("cfg_scale", i, default.cfg_text_scale)),
                               cfg_img_scale=float(pick("cfg_img_scale", i, default.cfg_img_scale)),
                               cfg_renorm_min=float(pick("cfg_renorm_min", i, default.cfg_renorm_min)))
                    for i in range(n)]
        ts, dts = rollouts[0].schedule()
        ids = model.token_ids
        num_latent = (height // model.arch.latent_downsample) * (width // model.arch.latent_downsample)
        placeholder = ids.image_pad if ids.image_pad is not None else ids.vision_start
        plan = BagelFlowPlan(height, width, rollouts, ts.tolist(), dts.tolist(),
                             [ids.vision_start, *[placeholder] * num_latent, ids.vision_end])
        plan.scales = [[r.scales_at(t) for r in rollouts] for t in plan.timesteps]
        return plan

    def initial_latents(self, plan: BagelFlowPlan, seed: int) -> torch.Tensor:
        """The noise at t = 1 of one image, [num_latent_tokens, p*p*z] fp32 on the CPU: ``torch.randn`` of a
        generator seeded with ``seed``."""
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(plan.num_latent_tokens, self.model.arch.patch_latent_dim, generator=gen)

    def query_embeds(self, plan: BagelFlowPlan, step: int, x: torch.Tensor) -> tuple[torch.Tensor, range]:
        """The query block's LM inputs [n + 2, H] for latents ``x`` at ``step``, and its generation-expert rows."""
        model = self.model
        ids = model.token_ids
        n = x.shape[0]
        device = model.vae2llm.weight.device
        marks = model.embed_text(torch.tensor([ids.vision_start, ids.vision_end], device=device))
        t = torch.full((n,), plan.timesteps[step], device=device)
        pos = model.latent_positions(plan.height, plan.width).to(device)
        body = model.embed_latents(x.to(device), t, pos)
        return torch.cat((marks[:1], body.to(marks.dtype), marks[1:])), range(1, n + 1)

    def update(self, plan: BagelFlowPlan, step: int, i: int, x: torch.Tensor,
               hidden: dict[str, torch.Tensor]) -> torch.Tensor:
        """Rollout ``i``'s latents after ``step``, from the query block's hidden states per branch ([n + 2, H])."""
        p = plan.rollouts[i]
        text_scale, img_scale = plan.scales[step][i]
        v = {b: self.model.velocity(h[1:-1]).float() for b, h in hidden.items()}
        guided = cfg_combine(v[COND], v.get(TEXT_UNCOND), v[COND], text_scale, img_scale, p.cfg_renorm_min,
                             p.cfg_renorm_type)
        return x.to(guided.device, torch.float32) - guided * plan.dts[step]

    def decode(self, plan: BagelFlowPlan, latents: torch.Tensor) -> torch.Tensor:
        """Final latents [k, n, p*p*z] -> pixels [k, 3, H, W] (about [-1, 1])."""
        return torch.stack([self.model.decode_latents(x, plan.height, plan.width) for x in latents])


