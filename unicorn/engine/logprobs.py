"""Log-probabilities of sampled and prompt tokens under the model's raw distribution.

"Raw" means the log-softmax of the model's logits, before temperature, top-k, top-p and any grammar mask
(vLLM's default ``raw_logprobs``), so they score text the same whatever the sampling settings were.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class TokenLogprob:
    """One position: the token there, its log-probability, and the ``k`` most likely ids ``{id: logprob}``."""

    token_id: int
    logprob: float
    top: dict[int, float] = field(default_factory=dict)


def token_logprobs(logits: torch.Tensor, token_ids: list[int], k: int) -> list[TokenLogprob]:
    """logits: [R, V] (one row per position), token_ids: [R] the token each row scores; ``k`` top ids per row."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    ids = torch.tensor(token_ids, dtype=torch.long, device=logits.device)
    chosen = logprobs.gather(1, ids[:, None])[:, 0].tolist()
    if k > 0:
        values, indices = logprobs.topk(min(k, logprobs.shape[1]), dim=-1)
        tops = [dict(zip(i, v)) for i, v in zip(indices.tolist(), values.tolist())]
    else:
        tops = [{} for _ in token_ids]
    return [TokenLogprob(t, lp, top) for t, lp, top in zip(token_ids, chosen, tops)]


def expected_value(candidate_logprobs: list[float], values: list[float]) -> float:
    """The mean of ``values`` under the candidates' probabilities renormalised over the candidates (e.g. a
    judge's expected score from ``Engine.candidate_logprobs`` of "0" ... "10"): breaks ties that argmax hides."""
    if len(candidate_logprobs) != len(values) or not values:
        raise ValueError(f"need one value per candidate, got {len(values)} for {len(candidate_logprobs)}")
    weights = torch.softmax(torch.tensor(candidate_logprobs, dtype=torch.float64), dim=0)
    return float((weights * torch.tensor(values, dtype=torch.float64)).sum())
