"""BAGEL's side of the engine's flow requests (``model.flow``, driven by unicorn.engine.flow): settings, noise,
the query block of a denoising step, the per-image CFG combine and the VAE decode.

One denoising step of one image runs up to three branches over the same query block (``<|vision_start|>`` +
the noisy latent tokens + ``<|vision_end|>``, bidirectional, at the context's next rope position, latent
tokens on the generation expert): ``cond`` over the prompt's context, ``text_uncond`` over the empty context
(the same for every request) and, in image-conditioned generation, ``img_uncond``. In plain T2I the
image-unconditional context equals the conditional one, so its velocity is the conditional one (reused, the
official formula still applied: the official result). In image-conditioned generation (editing; reflection
samples) the contexts are those of the official ``interleave_inference`` with images then text
(``BagelPromptFormat.conditioned_generation_prompts``): ``text_uncond`` holds the images, ``img_uncond`` the
text, and the image is made at the (last) context image's size unless the request names one. The math is
unicorn.models.bagel_flow's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from unicorn.models.bagel_flow import FlowParams, cfg_combine

COND, TEXT_UNCOND, IMG_UNCOND = "cond", "text_uncond", "img_uncond"


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
    conditioned: bool = False  # image-conditioned: an image-unconditional context of its own

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    @property
    def num_latent_tokens(self) -> int:
        return len(self.query_ids) - 2

    def branches(self, step: int, i: int) -> tuple[str, ...]:
        """The contexts rollout ``i`` queries at ``step``: the conditional one, the text-unconditional one while
        its text CFG is on, and (image-conditioned) the image-unconditional one while its image CFG is on too."""
        text, image = self.scales[step][i]
        if text <= 1.0:
            return (COND,)
        return (COND, TEXT_UNCOND, IMG_UNCOND) if self.conditioned and image > 1.0 else (COND, TEXT_UNCOND)

    @property
    def max_branches(self) -> int:
        return max(len(self.branches(step, i)) for step in range(self.num_steps) for i in range(len(self.rollouts)))


class BagelFlowGeneration:
    """What a BAGEL checkpoint gives the engine's flow requests (``BagelModel.flow``)."""

    def __init__(self, model):
        self._model = model  # not a submodule (no parameters of its own)

    @property
    def model(self):
        return self._model

    def plan(self, params, n: int, context_size: tuple[int, int] | None = None) -> BagelFlowPlan:
        """The plan of ``n`` images under ``params`` (an ImageGenParams: ``cfg_scale`` is the text scale; None
        fields take FlowParams' defaults). ``context_size``: (height, width) of the last context image of an
        image-conditioned request (its default output size). Raises ValueError naming the bad field."""
        model = self.model
        default = FlowParams()
        fallback = context_size or (model.arch.max_image_size, model.arch.max_image_size)
        height = params.height or fallback[0]
        width = params.width or fallback[1]
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
                             [ids.vision_start, *[placeholder] * num_latent, ids.vision_end],
                             conditioned=context_size is not None)
        plan.scales = [[r.scales_at(t) for r in rollouts] for t in plan.timesteps]
        return plan

    def context_prompts(self, text: str, images: list) -> tuple[dict[str, str], dict[str, list], tuple[int, int]]:
        """An image-conditioned request's contexts: {branch: prompt text}, {branch: [(pixels, encoder)] in block
        order} and the last image's (height, width). An image is a (VAE-path, ViT-path) pair of normalized
        tensors [3, H, W], a tensor (the VAE-path image; the ViT path gets it resized bilinearly to the ViT
        rule's size) or a PIL image (both paths by the official resize rule, unicorn.models.bagel_image)."""
        import torch.nn.functional as F

        from unicorn.models.bagel_image import to_tensor, vae_size, vit_size

        arch = self.model.arch
        pairs = []
        for k, image in enumerate(images):
            if isinstance(image, tuple):
                vae_px, vit_px = image
            elif isinstance(image, torch.Tensor):
                vae_px = image
                w, h = vit_size(arch, image.shape[2], image.shape[1]) if image.dim() == 3 else (0, 0)
                vit_px = F.interpolate(image[None].float(), size=(h, w), mode="bilinear", antialias=True)[0] if h else image
            else:
                rgb = image.convert("RGB")
                vae_px, vit_px = to_tensor(rgb, vae_size(arch, *rgb.size)), to_tensor(rgb, vit_size(arch, *rgb.size))
            if not isinstance(vae_px, torch.Tensor) or vae_px.dim() != 3 or vae_px.shape[0] != 3:
                raise ValueError(f"context image {k}: give a normalized tensor [3, H, W], a (VAE, ViT) pair of them "
                                 "or a PIL image")
            arch.check_image_size(int(vae_px.shape[1]), int(vae_px.shape[2]))
            (vit_px,) = self.model.preprocess_images([vit_px])
            pairs.append((vae_px.detach().float(), vit_px))
        counts = [(self.model.image_token_count(a, "vae"), self.model.image_token_count(b)) for a, b in pairs]
        texts = self.model.prompt_format.conditioned_generation_prompts(text, counts)
        both = [x for a, b in pairs for x in ((a, "vae"), (b, None))]
        inputs = {COND: both, TEXT_UNCOND: both, IMG_UNCOND: []}
        return texts, inputs, (int(pairs[-1][0].shape[1]), int(pairs[-1][0].shape[2]))

    def initial_latents(self, plan: BagelFlowPlan, seed: int) -> torch.Tensor:
        """The noise at t = 1 of one image, [num_latent_tokens, p*p*z] fp32 on the CPU: ``torch.randn`` of a
        generator seeded with ``seed``."""
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(plan.num_latent_tokens, self.model.arch.patch_latent_dim, generator=gen)

    def query_embeds(self, plan: BagelFlowPlan, step: int,
                     latents: list[torch.Tensor]) -> tuple[list[torch.Tensor], range]:
        """The query block's LM inputs [n + 2, H] of each rollout's latents at ``step`` (embedded together: one
        GEMM, one time embedding), and the block's generation-expert rows."""
        model = self.model
        ids = model.token_ids
        n = plan.num_latent_tokens
        device = model.vae2llm.weight.device
        marks = model.embed_text(torch.tensor([ids.vision_start, ids.vision_end], device=device))
        t = torch.full((1,), plan.timesteps[step], device=device)  # one time for every block: embedded once
        pos = model.latent_positions(plan.height, plan.width).to(device).repeat(len(latents))
        body = model.embed_latents(torch.cat([x.to(device) for x in latents]), t, pos).to(marks.dtype)
        return [torch.cat((marks[:1], b, marks[1:])) for b in body.split(n)], range(1, n + 1)

    def update(self, plan: BagelFlowPlan, step: int, i: int, x: torch.Tensor,
               hidden: dict[str, torch.Tensor]) -> torch.Tensor:
        """Rollout ``i``'s latents after ``step``, from the query block's hidden states per branch ([n + 2, H])."""
        p = plan.rollouts[i]
        text_scale, img_scale = plan.scales[step][i]
        v = {b: self.model.velocity(h[1:-1]).float() for b, h in hidden.items()}
        guided = cfg_combine(v[COND], v.get(TEXT_UNCOND), v.get(IMG_UNCOND, v[COND]), text_scale, img_scale,
                             p.cfg_renorm_min, p.cfg_renorm_type)
        return x.to(guided.device, torch.float32) - guided * plan.dts[step]

    def decode(self, plan: BagelFlowPlan, latents: torch.Tensor) -> torch.Tensor:
        """Final latents [k, n, p*p*z] -> pixels [k, 3, H, W] (about [-1, 1])."""
        return torch.stack([self.model.decode_latents(x, plan.height, plan.width) for x in latents])


