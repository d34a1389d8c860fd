"""Turns logits into tokens: CFG combine, temperature, top-k, top-p, seeded per sample.

Randomness is a pure function of (request seed, sample index, output position, vocab index), so a request
draws the same tokens alone or inside any batch (see unicorn.kernels.sampling for the counter-based RNG).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from unicorn.kernels.sampling import sample_fast

_MASK64 = (1 << 63) - 1


def sample_seed(request_seed: int, sample_index: int) -> int:
    """Seed of one sample of a request: distinct per sample, fixed across batches and preemptions."""
    x = (request_seed * 0x9E3779B97F4A7C15 + sample_index * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & _MASK64
    x ^= x >> 31
    return (x * 0xD6E8FEB86659FD93) & _MASK64


@dataclass
class SamplingBatch:
    """Per-row sampling settings, aligned with the rows of the logits tensor."""

    temperature: list[float]
    top_k: list[int]
    top_p: list[float]
    seeds: list[int]
    steps: list[int]


class Sampler:
    """Samples with the fused Triton kernel, the one-pass C++ CPU op, or torch: same contract, same ids."""

    def __init__(self, backend: str = "torch") -> None:
        assert backend in ("torch", "cpu", "triton"), backend
        self.backend = backend
        # "cpu": the fused CFG + Gumbel-max op for unfiltered batches; False keeps the previous one-pass op after
        # torch's CFG (same ids; bench/janus_images.py --compare times both in one run).
        self.fused = True

    def __call__(
        self, cond: torch.Tensor, uncond: torch.Tensor | None, cfg_scale: list[float] | None, batch: SamplingBatch
    ) -> torch.Tensor:
        """cond (and uncond) logits: [B, V]; the guided logits are ``uncond + scale * (cond - uncond)``.

        Returns token ids [B] (int64, on the logits' device)."""
        device = cond.device
        args = (
            torch.tensor(cfg_scale or [1.0] * cond.shape[0], dtype=torch.float32, device=device),
            torch.tensor(batch.temperature, dtype=torch.float32, device=device),
            torch.tensor(batch.top_k, dtype=torch.int64, device=device),
            torch.tensor(batch.top_p, dtype=torch.float32, device=device),
            torch.tensor(batch.seeds, dtype=torch.int64, device=device),
            torch.tensor(batch.steps, dtype=torch.int64, device=device),
        )
        if self.backend == "triton":
            from unicorn.kernels.sampling import sample

            return sample(cond, uncond, *args)
        if self.backend == "cpu":
            from unicorn.kernels import cpu_ops

            return sample_fast(cond, uncond, *args, cpu_ops=cpu_ops.load(), fused=self.fused)
        return sample_fast(cond, uncond, *args)
