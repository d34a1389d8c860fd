"""Cross-entropy on text and image tokens, summed per CPR kind (fp32), and the weighted step loss.

The step loss divides each kind's summed CE by that kind's target-token count over the *whole global step*
(all micro-batches, all ranks), so that gradient averaging over ranks and summing over micro-batches gives exactly
the single-process mean: loss_rank = sum_k w_k * sum_ce_k(rank, micro) / N_k(global) * world_size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_LIGER = None


def _liger_flce():
    """Liger-Kernel's fused linear cross-entropy (CUDA only, optional), or None."""
    global _LIGER
    if _LIGER is None:
        try:
            from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

            _LIGER = liger_fused_linear_cross_entropy
        except ImportError:
            _LIGER = False
    return _LIGER or None


def linear_cross_entropy(hidden: torch.Tensor, linear: torch.nn.Linear, labels: torch.Tensor,
                         use_liger: bool = True) -> torch.Tensor:
    """Per-token CE of ``linear(hidden)`` against ``labels``: hidden [N, D] -> [N] fp32.

    On CUDA with Liger-Kernel installed (and ``use_liger``) the logits are never materialised; otherwise the module
    is called (so ZeRO-3 gathers its weight) and the logits are cast to fp32.
    """
    fused = _liger_flce() if (use_liger and hidden.is_cuda and hidden.shape[0]) else None
    if fused is not None:
        return fused(hidden, linear.weight, labels, bias=linear.bias, reduction="none").float()
    return F.cross_entropy(linear(hidden).float(), labels, reduction="none")


def per_kind_sums(ce: torch.Tensor, kinds: torch.Tensor, num_kinds: int) -> torch.Tensor:
    """ce [N] fp32, kinds [N] -> summed CE per kind [num_kinds] fp32."""
    return torch.zeros(num_kinds, dtype=torch.float32, device=ce.device).index_add(0, kinds, ce)


def weighted_step_loss(ce_sums: torch.Tensor, global_counts: torch.Tensor, weights: torch.Tensor,
                       world_size: int) -> torch.Tensor:
    """ce_sums [K] of this micro-batch on this rank; global_counts [K] of the whole step -> scalar to backward."""
    denom = global_counts.to(ce_sums).clamp(min=1)
    return (weights.to(ce_sums) * ce_sums / denom).sum() * world_size
