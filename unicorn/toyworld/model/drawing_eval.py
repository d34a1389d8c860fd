"""Drawing and judging its own drawings, measured by the oracle, over sampling seeds: what self-play will face.

For each prompt of a split the model draws ``drawings`` images in one request, the i-th at the i-th CFG scale of
the spread (as the official recipe spreads 3 to 8 over its 8 rollouts), then judges each drawing with its own judge
(greedy; ``Score: N`` parsed, and the expected score from the score token's top logprobs as a tie-breaker). The
oracle scores every drawing; figures are per seed, then mean and standard error over the seeds:

    accuracy        mean fraction of the prompt's questions the oracle answers right from the drawing
    mean_score      mean oracle score; ``pass_rate`` the share of drawings >= 8
    best_pass_rate  share of prompts whose oracle-best drawing passes (what rejection sampling can find)
    judge           judge_stats.judge_ranking of the judge's scores, without and with the tie-break
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from unicorn.toyworld.model.evaluate import judge_request, parse_score
from unicorn.toyworld.model.floors import mean_se, oracle_accuracy
from unicorn.toyworld.model.judge_stats import Drawing, judge_ranking

METRICS = ("accuracy", "mean_score", "pass_rate", "best_pass_rate")


def cfg_spread(low: float, high: float, n: int) -> list[float]:
    """``n`` CFG scales evenly from ``low`` to ``high`` (one per rollout)."""
    if n == 1:
        return [float(low)]
    return [round(low + (high - low) * i / (n - 1), 4) for i in range(n)]


@dataclass(frozen=True)
class DrawingEvalConfig:
    drawings: int = 8
    cfg_low: float = 3.0
    cfg_high: float = 8.0
    temperature: float = 1.0
    seeds: tuple[int, ...] = (0, 1, 2)
    judge_max_tokens: int = 64
    judge_top_logprobs: int = 20  # the score token's distribution, for the expected score


def score_token_index(token_ids: list[int], decode) -> int | None:
    """Index of the last generated token that decodes to an integer 0..10 (the N of ``Score: N``)."""
    for k in range(len(token_ids) - 1, -1, -1):
        if _as_score(decode([token_ids[k]])) is not None:
            return k
    return None


def _as_score(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() and 0 <= int(text) <= 10 else None


def expected_score(sample, decode) -> float | None:
    """Mean score under the judge's distribution at its score token (top logprobs renormalised over the tokens that
    are scores); None when the reply has no score token or no logprobs."""
    k = score_token_index(sample.token_ids, decode)
    if k is None or not sample.logprobs:
        return None
    weights = {}
    for token, logprob in sample.logprobs[k].top.items():
        value = _as_score(decode([token]))
        if value is not None:
            weights[value] = weights.get(value, 0.0) + math.exp(logprob)
    total = sum(weights.values())
    return sum(v * w for v, w in weights.items()) / total if total > 0 else None


def draw_and_judge(engine, items, cfg: DrawingEvalConfig, seed: int) -> list[dict]:
    """One seed: rows ``{category, prompt_index, rollout, oracle, soft, codes, judge, expected}`` per drawing
    (``codes``: the drawing's VQ codes, what a fine-tune on it trains towards)."""
    from unicorn.engine.params import ImageGenParams, SamplingParams

    params = ImageGenParams(n=cfg.drawings, cfg_scale=cfg_spread(cfg.cfg_low, cfg.cfg_high, cfg.drawings),
                            temperature=cfg.temperature, seed=seed)
    drawn = engine.generate_images([it.prompt for it in items], params)
    rows, requests = [], []
    for p, (item, out) in enumerate(zip(items, drawn)):
        if out.error:
            raise RuntimeError(f"drawing prompt {p} failed: {out.error}")
        for j, image in enumerate(out.images):
            score, soft = oracle_accuracy(item.scene, image, item.questions)
            rows.append({"category": item.category, "prompt_index": p, "rollout": j, "oracle": score, "soft": soft,
                         "codes": out.image_tokens[j].tolist()})
            requests.append(judge_request(item.prompt, image))
    judged = engine.generate(requests, SamplingParams(max_tokens=cfg.judge_max_tokens, temperature=0.0,
                                                      logprobs=cfg.judge_top_logprobs))
    decode = engine.tokenizer.decode
    for row, out in zip(rows, judged):
        row["judge"] = parse_score(out.text)
        row["expected"] = expected_score(out.samples[0], decode)
    return rows


def by_prompt(rows: list[dict]) -> dict[int, list[dict]]:
    """One seed's rows grouped by prompt index, each group in rollout order (the order the rows were made)."""
    groups: dict[int, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["prompt_index"], []).append(r)
    return groups


def judge_pick(group: list[dict]) -> dict:
    """The drawing the judge keeps of one prompt's: its highest ``Score: N`` (unparsed lowest), then the expected
    score, then the first rollout."""
    return max(group, key=lambda r: (-1 if r["judge"] is None else r["judge"], r["expected"] or 0.0))


def summarise_seed(rows: list[dict]) -> dict:
    """The module's figures over one seed's rows."""
    groups = by_prompt(rows)
    drawings = [[Drawing(r["oracle"], r["judge"], r["expected"]) for r in g] for g in groups.values()]
    return {
        "accuracy": float(np.mean([r["soft"] for r in rows])),
        "mean_score": float(np.mean([r["oracle"] for r in rows])),
        "pass_rate": float(np.mean([r["oracle"] >= 8 for r in rows])),
        "best_pass_rate": float(np.mean([max(r["oracle"] for r in g) >= 8 for g in groups.values()])),
        "judge": judge_ranking(drawings),
        "judge_tie_break": judge_ranking(drawings, tie_break=True),
        "prompts": len(groups), "drawings": len(rows),
    }


def aggregate(per_seed: list[dict]) -> dict:
    """Mean and standard error over seeds of every number in the per-seed summaries (nested dicts kept)."""
    def walk(values: list):
        first = values[0]
        if isinstance(first, dict):
            return {k: walk([v[k] for v in values]) for k in first}
        if isinstance(first, (int, float)) and not isinstance(first, bool):
            mean, se = mean_se(values)
            return {"mean": mean, "se": se}
        return first

    return walk(per_seed)


def evaluate_drawing(engine, items, cfg: DrawingEvalConfig, log=print) -> dict:
    """Per seed and aggregated, overall and per category."""
    per_seed, per_category = [], {}
    for seed in cfg.seeds:
        rows = draw_and_judge(engine, items, cfg, seed)
        per_seed.append(summarise_seed(rows))
        for category in dict.fromkeys(r["category"] for r in rows):
            per_category.setdefault(category, []).append(summarise_seed([r for r in rows if r["category"] == category]))
        log(f"drawing eval: seed {seed}: accuracy {per_seed[-1]['accuracy']:.3f}, "
            f"pair accuracy {per_seed[-1]['judge']['pair_accuracy']:.3f}")
    return {"config": {**cfg.__dict__, "cfg_scales": cfg_spread(cfg.cfg_low, cfg.cfg_high, cfg.drawings)},
            "overall": aggregate(per_seed), "per_category": {c: aggregate(v) for c, v in per_category.items()},
            "per_seed": per_seed}
