"""Model-level BAGEL inference over cached contexts: context blocks prefilled once, text decoded for many contexts
in one forward per token, and the CFG branches of many images denoised in one forward per step.

This is the engine-free path (dense per-context K/V, no paging or scheduling); the engine drives the same
model methods over its paged cache. A :class:`KVContext` is what the official code calls a gen context
(``past_key_values`` + ``kv_lens`` + ``ropes``) for one sequence; :meth:`KVContext.fork` is its ``deepcopy``
at no cost (K/V tensors are never written in place).

Segment framing (official ``prepare_prompts`` / ``prepare_vit_images`` / ``prepare_vae_images``): text is
``<|im_start|> ids <|im_end|>``, causal, one rope position per token; an image is ``<|vision_start|> tokens
<|vision_end|>``, non-causal inside the block, the whole block at one rope position, the rope then +1.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from unicorn.models.bagel import BagelModel
from unicorn.models.bagel_flow import FlowParams, cfg_combine


class KVContext:
    """One sequence's cached K/V per layer ([L, Hkv, D] each), its length and its next rope position."""

    def __init__(self, num_layers: int):
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.length = 0
        self.rope = 0

    def fork(self) -> "KVContext":
        other = KVContext(len(self.keys))
        other.keys, other.values = list(self.keys), list(self.values)
        other.length, other.rope = self.length, self.rope
        return other


@dataclass
class _Row:
    context: KVContext
    num_tokens: int
    causal: bool
    append: bool  # keep the row's K/V in its context


def _attend_rows(rows: list[_Row], scale: float):
    lens = [r.num_tokens for r in rows]
    if len({id(r.context) for r in rows if r.append}) != sum(r.append for r in rows):
        raise ValueError("a context appears twice among the rows that append to it")

    def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        outs = []
        for row, qr, kr, vr in zip(rows, q.split(lens), k.split(lens), v.split(lens)):
            ctx = row.context
            if ctx.keys[layer] is not None:
                kr = torch.cat((ctx.keys[layer], kr))
                vr = torch.cat((ctx.values[layer], vr))
            if row.append:
                ctx.keys[layer], ctx.values[layer] = kr, vr
            mask = None
            if row.causal and row.num_tokens > 1:
                n_k = kr.shape[0]
                mask = torch.arange(n_k - row.num_tokens, n_k, device=q.device)[:, None] >= torch.arange(n_k, device=q.device)
            out = F.scaled_dot_product_attention(qr.transpose(0, 1), kr.transpose(0, 1), vr.transpose(0, 1),
                                                 attn_mask=mask, scale=scale, enable_gqa=qr.shape[1] != kr.shape[1])
            outs.append(out.transpose(0, 1))
        return torch.cat(outs)

    return attend


@dataclass
class ImageJob:
    """One image to denoise. ``cfg_img_context=None`` means the image-unconditional context equals the conditional
    one (plain T2I): its velocity is the conditional one, reused instead of recomputed (the official formula
    still applies, so the result is the official one)."""

    context: KVContext
    cfg_text_context: KVContext
    height: int
    width: int
    noise: torch.Tensor  # [num_latent_tokens, p*p*z], the initial x at t = 1
    params: FlowParams = field(default_factory=FlowParams)
    cfg_img_context: KVContext | None = None


class BagelInference:
    """Prefill, text decoding and batched flow sampling on one :class:`BagelModel` (all under no_grad)."""

    def __init__(self, model: BagelModel):
        self.model = model
        self.ids = model.token_ids
        self.device = next(model.parameters()).device
        self.scale = model.arch.llm.head_dim**-0.5
        self.num_forwards = 0  # LM forwards run (each may hold many rows)

    def new_context(self) -> KVContext:
        return KVContext(self.model.arch.llm.num_hidden_layers)

    def _forward(self, rows: list[_Row], embeds: torch.Tensor, positions: list[int], gen_rows: list[int]) -> torch.Tensor:
        pos = torch.tensor(positions, dtype=torch.long, device=self.device)
        gen = torch.tensor(gen_rows, dtype=torch.long, device=self.device) if gen_rows else None
        hidden = self.model.forward_with(embeds, pos, _attend_rows(rows, self.scale), gen)
        for row in rows:
            if row.append:
                row.context.length += row.num_tokens
        self.num_forwards += 1
        return hidden

    def _text_ids(self, ids: list[int]) -> torch.Tensor:
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    # ---- context prefill -----------------------------------------------------------------------------------
    @torch.no_grad()
    def add_text(self, contexts: list[KVContext], token_ids: list[list[int]]) -> None:
        """Appends ``<|im_start|> ids <|im_end|>`` to each context (one batched causal forward)."""
        framed = [[self.ids.im_start, *ids, self.ids.im_end] for ids in token_ids]
        rows = [_Row(c, len(f), causal=True, append=True) for c, f in zip(contexts, framed)]
        positions = [c.rope + j for c, f in zip(contexts, framed) for j in range(len(f))]
        self._forward(rows, self.model.embed_text(self._text_ids([t for f in framed for t in f])), positions, [])
        for c, f in zip(contexts, framed):
            c.rope += len(f)

    def _add_image_blocks(self, contexts: list[KVContext], bodies: list[torch.Tensor], gen: bool) -> None:
        start, end = self.model.embed_text(self._text_ids([self.ids.vision_start, self.ids.vision_end]))
        parts, rows, positions, gen_rows, offset = [], [], [], [], 0
        for c, body in zip(contexts, bodies):
            n = body.shape[0] + 2
            parts += [start[None], body.to(start.dtype), end[None]]
            rows.append(_Row(c, n, causal=False, append=True))
            positions += [c.rope] * n
            if gen:
                gen_rows += range(offset + 1, offset + n - 1)
            offset += n
        self._forward(rows, torch.cat(parts), positions, gen_rows)
        for c in contexts:
            c.rope += 1

    @torch.no_grad()
    def add_vit_images(self, contexts: list[KVContext], images: list[torch.Tensor]) -> None:
        """Appends each normalized image [3, H, W] (sides multiples of the ViT patch) as ViT tokens."""
        self._add_image_blocks(contexts, self.model.encode_vit(images), gen=False)

    @torch.no_grad()
    def add_vae_images(self, contexts: list[KVContext], images: list[torch.Tensor],
                       noises: list[torch.Tensor | None] | None = None) -> None:
        """Appends each normalized image [3, H, W] (sides multiples of 16) as clean VAE latents (timestep 0,
        generation expert). ``noises[i]`` samples the VAE posterior as the official encoder does; None: the mean."""
        noises = noises or [None] * len(images)
        bodies = []
        for img, noise in zip(images, noises):
            latents = self.model.encode_vae(img.to(self.device), noise)
            pos = self.model.latent_positions(img.shape[1], img.shape[2]).to(self.device)
            t0 = torch.zeros(latents.shape[0], device=self.device)
            bodies.append(self.model.embed_latents(latents, t0, pos))
        self._add_image_blocks(contexts, bodies, gen=True)

    # ---- text ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_text(self, contexts: list[KVContext], max_tokens: int) -> list[list[int]]:
        """Greedy text for each context, decoded together: starts from ``<|im_start|>``, stops before
        ``<|im_end|>`` (not included) or after ``max_tokens`` steps. The contexts receive the decoded tokens."""
        out: list[list[int]] = [[] for _ in contexts]
        current = [self.ids.im_start] * len(contexts)
        live = list(range(len(contexts)))
        for _ in range(max_tokens):
            rows = [_Row(contexts[i], 1, causal=True, append=True) for i in live]
            hidden = self._forward(rows, self.model.embed_text(self._text_ids([current[i] for i in live])),
                                   [contexts[i].rope for i in live], [])
            nxt = self.model.text_logits(hidden).argmax(dim=-1).tolist()
            still = []
            for i, token in zip(live, nxt):
                contexts[i].rope += 1
                if token == self.ids.im_end:
                    continue
                out[i].append(token)
                current[i] = token
                still.append(i)
            live = still
            if not live:
                break
        return out

    # ---- images --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_images(self, jobs: list[ImageJob]) -> list[torch.Tensor]:
        """Final latents [num_latent_tokens, p*p*z] of each job. Every step runs all live jobs' branches in one
        forward; jobs may differ in resolution, steps and CFG settings (a job leaves when its schedule ends)."""
        model = self.model
        start, end = model.embed_text(self._text_ids([self.ids.vision_start, self.ids.vision_end]))
        xs = [job.noise.to(self.device, torch.float32).clone() for job in jobs]
        schedules = [job.params.schedule() for job in jobs]
        latent_pos = [model.latent_positions(job.height, job.width).to(self.device) for job in jobs]
        for job, x, pos in zip(jobs, xs, latent_pos):
            if x.shape != (pos.shape[0], model.arch.patch_latent_dim):
                raise ValueError(f"noise of shape {tuple(x.shape)} does not fit a {job.height}x{job.width} image")
        for step in range(max(len(t) for t, _ in schedules)):
            live = [j for j, (t, _) in enumerate(schedules) if step < len(t)]
            parts, rows, positions, gen_rows, branches, offset = [], [], [], [], [], 0
            for j in live:
                job, t = jobs[j], float(schedules[j][0][step])
                text_scale, img_scale = job.params.scales_at(t)
                n = xs[j].shape[0]
                body = model.embed_latents(xs[j], torch.full((n,), t, device=self.device), latent_pos[j])
                block = torch.cat((start[None], body.to(start.dtype), end[None]))
                contexts = [job.context]
                if text_scale > 1.0:
                    contexts.append(job.cfg_text_context)
                    if img_scale > 1.0 and job.cfg_img_context is not None:
                        contexts.append(job.cfg_img_context)
                first = len(rows)
                for ctx in contexts:
                    parts.append(block)
                    rows.append(_Row(ctx, n + 2, causal=False, append=False))
                    positions += [ctx.rope] * (n + 2)
                    gen_rows += range(offset + 1, offset + n + 1)
                    offset += n + 2
                branches.append((j, first, len(contexts), text_scale, img_scale))
            hidden = self._forward(rows, torch.cat(parts), positions, gen_rows)
            per_row = model.velocity(hidden).float().split([r.num_tokens for r in rows])
            for j, first, count, text_scale, img_scale in branches:
                v = [per_row[first + b][1:-1] for b in range(count)]
                v_text = v[1] if count > 1 else None
                v_img = v[2] if count > 2 else v[0]  # reused conditional velocity when the contexts are equal
                p = jobs[j].params
                guided = cfg_combine(v[0], v_text, v_img, text_scale, img_scale, p.cfg_renorm_min, p.cfg_renorm_type)
                xs[j] = xs[j] - guided * schedules[j][1][step]
        return xs

    @torch.no_grad()
    def generate_images_sequential(self, jobs: list[ImageJob]) -> list[torch.Tensor]:
        """The official loop's shape on cached contexts, the baseline of the benchmarks: one image at a time and
        one forward per CFG branch (the image-unconditional one recomputed on the conditional context in plain
        T2I, and run whenever its scale is > 1 as ``_forward_flow`` does). Same results as
        :meth:`generate_images`."""
        model = self.model
        start, end = model.embed_text(self._text_ids([self.ids.vision_start, self.ids.vision_end]))
        results = []
        for job in jobs:
            x = job.noise.to(self.device, torch.float32).clone()
            pos = model.latent_positions(job.height, job.width).to(self.device)
            n = x.shape[0]
            gen_rows = list(range(1, n + 1))
            ts, dts = job.params.schedule()
            for t, dt in zip(ts.tolist(), dts):
                text_scale, img_scale = job.params.scales_at(t)
                body = model.embed_latents(x, torch.full((n,), t, device=self.device), pos)
                block = torch.cat((start[None], body.to(start.dtype), end[None]))

                def branch(ctx):
                    hidden = self._forward([_Row(ctx, n + 2, causal=False, append=False)], block, [ctx.rope] * (n + 2), gen_rows)
                    return model.velocity(hidden).float()[1:-1]

                v = branch(job.context)
                v_text = branch(job.cfg_text_context) if text_scale > 1.0 else None
                v_img = branch(job.cfg_img_context or job.context) if img_scale > 1.0 else None
                p = job.params
                x = x - cfg_combine(v, v_text, v_img, text_scale, img_scale, p.cfg_renorm_min, p.cfg_renorm_type) * dt
            results.append(x)
        return results
