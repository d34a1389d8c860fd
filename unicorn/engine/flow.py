"""Flow requests: images made by denoising latents over a prefilled context (BAGEL), batched at step granularity.

A flow request holds its context rows (the prompt, prefilled once like any prompt, prefix cache included) and
``n`` rollouts in lockstep. Each denoising step of the request runs, for every rollout, one query row per
branch the model asks for (``model.flow.plan(...).branches(step, i)``): ``cond`` over the conditional context,
``text_uncond`` over the empty context, which every request shares (no KV at all: its query rows have no
prefix). An image-conditioned request (``{"prompt", "images"}``) has a context row per branch instead
(``FlowState.contexts``; the model's ``flow.context_prompts`` says what each holds). A query row is the query block alone (bidirectional, at one rope position, see ImageInput.span);
its K/V is scratch, rewritten every step: it shares the context's full blocks, owns a copy of the context's
partial last block (copy-on-write at its first step) and its own blocks after that, and is never put in the
prefix cache. All branches of all rollouts of all requests scheduled in a step are rows of that step's one
forward, next to text rows. Requests join and leave between steps; each request keeps its own resolution,
schedule and per-rollout CFG settings (the model combines each image's branches on its own, so CFG renorm
is per image).

The model side (``model.flow``; BAGEL's is unicorn.models.bagel_generation.BagelFlowGeneration):
``plan(params, n)`` (height, width, ``num_steps``, ``query_ids``, ``branches(step, i)``, ``max_branches``),
``initial_latents(plan, seed)``, ``query_embeds(plan, step, latents)`` -> (embeds per rollout, generation-expert rows),
``update(plan, step, i, x, {branch: hidden})`` -> x, ``decode(plan, latents)`` -> pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from unicorn.engine.sequence import ImageInput, Sequence

COND, TEXT_UNCOND = "cond", "text_uncond"


@dataclass
class FlowState:
    """A flow request's denoising state: the plan, each rollout's latents and the next step. Survives
    preemption (only the KV rows are dropped and rebuilt), so a preempted request resumes at its step."""

    plan: Any
    latents: list[Any]  # per rollout, [num_latent_tokens, C] fp32
    step: int = 0
    query_rows: dict[tuple[int, str], Sequence] = field(default_factory=dict)
    # branch -> index of its context among the request's rows (cond first); a branch not named here queries
    # the empty context (plain T2I's text_uncond)
    contexts: dict[str, int] = field(default_factory=lambda: {COND: 0})

    @property
    def num_steps(self) -> int:
        return self.plan.num_steps

    @property
    def num_query_tokens(self) -> int:
        return len(self.plan.query_ids)

    @property
    def done(self) -> bool:
        return self.step >= self.num_steps

    def prefix(self, rows: list[Sequence], branch: str) -> Sequence | None:
        """The context row ``branch`` queries (None: the empty context)."""
        return rows[self.contexts[branch]] if branch in self.contexts else None

    def query_row(self, prefix: Sequence | None, i: int, branch: str) -> Sequence:
        """Rollout ``i``'s query row of ``branch`` over the context row ``prefix`` (None: the empty context),
        made at its first use; the caller shares the prefix's blocks."""
        row = self.query_rows.get((i, branch))
        if row is None:
            ids = (prefix.token_ids if prefix else []) + list(self.plan.query_ids)
            start = len(ids) - self.num_query_tokens
            block = ImageInput(start + 1, self.num_query_tokens - 2, 0, None, span=(start, len(ids)))
            row = Sequence(ids, images=(prefix.images if prefix else []) + [block], output_kind="text")
            row.cacheable = False
            row.flow_ref = (self, i, branch)
            self.query_rows[(i, branch)] = row
        return row

    def prefix_length(self, row: Sequence) -> int:
        return row.num_tokens - self.num_query_tokens


@dataclass
class FlowLatents:
    """What the image decoder receives for a finished flow request: its plan and final latents [n, N, C]."""

    plan: Any
    latents: Any

    def __len__(self) -> int:
        return len(self.latents)
