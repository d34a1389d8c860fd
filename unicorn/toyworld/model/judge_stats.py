"""How well a judge ranks the drawings of one prompt, the only thing rejection sampling needs from it.

A *group* is the drawings of one prompt: per drawing the oracle's score (the truth), the judge's integer score
(``None`` when its reply did not parse) and optionally an expected score (the mean of the judge's score-token
distribution, ``logprobs.expected_value``), used only to break ties between equal integer scores.

    pair accuracy   over pairs of drawings the oracle scores differently: 1 when the judge orders them the same way,
                    1/2 for a tie or an unparsed score, 0 otherwise (chance 0.5)
    tie rate        the share of those pairs the judge ties
    top rate        the share of drawings it gives the top score (10): a judge that gives everything 10 ranks nothing
    pick gain       oracle score of the judge's pick (its highest score; ties to the earliest drawing) minus the
                    group's mean, averaged over groups; ``oracle gain`` the same for the oracle's own best drawing,
                    and ``gain share`` = pick gain / oracle gain (the part of best-of-n the judge recovers)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Drawing:
    oracle: float
    judge: int | None
    expected: float | None = None

    def key(self, tie_break: bool) -> tuple[float, float]:
        """Sort key of the judge's preference: unparsed scores rank below every score."""
        score = -1.0 if self.judge is None else float(self.judge)
        extra = self.expected if tie_break and self.expected is not None and self.judge is not None else 0.0
        return score, extra


def _order(a: Drawing, b: Drawing, tie_break: bool) -> int:
    """+1 when the judge prefers a, -1 when b, 0 for a tie (or either unparsed)."""
    if a.judge is None or b.judge is None:
        return 0
    ka, kb = a.key(tie_break), b.key(tie_break)
    return (ka > kb) - (ka < kb)


def judge_ranking(groups: list[list[Drawing]], tie_break: bool = False, top_score: int = 10) -> dict:
    """The figures of the module docstring over ``groups`` (each: one prompt's drawings)."""
    credit = ties = pairs = 0.0
    pick_gains, oracle_gains = [], []
    drawings = [d for g in groups for d in g]
    for group in groups:
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                if a.oracle == b.oracle:
                    continue
                pairs += 1
                order = _order(a, b, tie_break)
                if order == 0:
                    ties += 1
                    credit += 0.5
                elif (order > 0) == (a.oracle > b.oracle):
                    credit += 1.0
        if group:
            mean = float(np.mean([d.oracle for d in group]))
            pick = max(range(len(group)), key=lambda k: (group[k].key(tie_break), -k))
            pick_gains.append(group[pick].oracle - mean)
            oracle_gains.append(max(d.oracle for d in group) - mean)
    pick_gain = float(np.mean(pick_gains)) if pick_gains else float("nan")
    oracle_gain = float(np.mean(oracle_gains)) if oracle_gains else float("nan")
    return {
        "pair_accuracy": credit / pairs if pairs else float("nan"),
        "tie_rate": ties / pairs if pairs else float("nan"),
        "pairs": int(pairs),
        "top_rate": float(np.mean([d.judge == top_score for d in drawings])) if drawings else float("nan"),
        "parse_rate": float(np.mean([d.judge is not None for d in drawings])) if drawings else float("nan"),
        "pick_gain": pick_gain,
        "oracle_gain": oracle_gain,
        "gain_share": pick_gain / oracle_gain if oracle_gain and oracle_gain > 0 else float("nan"),
    }
