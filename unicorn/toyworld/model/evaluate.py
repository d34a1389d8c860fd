"""Measures a Janus checkpoint on held-out toy-world data with the oracle as ground truth.

Held-out means a split of toyworld/splits.py whose prompt combinations no train scene contains: ``val`` (the default)
for choosing checkpoints and settings, ``test`` for the numbers that are reported (bench/toyworld/measure.py).

    judge          Spearman between the model's ``Score: N`` and the oracle's score, on held-out images of every
                   variant (clean, degraded, wrong, other scene, VQ round trips, blank) and, separately, on images
                   the model drew itself; plus the parse rate of ``Score: N``.
    understanding  accuracy of the model's answers to held-out questions (graded by ``questions.grade_answer``
                   against the oracle's answer for that image).
    generation     n images drawn per held-out prompt, per category: mean oracle score, pass rate (score >= 8),
                   "oracle accuracy" = mean fraction of the prompt's questions the oracle answers right from the
                   drawn image (UniCycle's soft score with a perfect reader), best-of-n pass rate, and the oracle
                   score of the drawing the model's own judge ranks first (what self-play's rejection sampling keeps),
                   and the judge's pair accuracy within a prompt's drawings (chance 0.5).
    codec          the same prompts' clean renders through the VQ round trip: the ceiling of the drawing scores.
The model is prompted with the trainer's own formats (unicorn/training/formats.py), through the public Engine API.
"""
from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

from unicorn.toyworld.model.data import make_item, variant_image, vq_roundtrip
from unicorn.toyworld.model.floors import oracle_accuracy
from unicorn.toyworld.model.judge_stats import Drawing, judge_ranking
from unicorn.toyworld.oracle import judge
from unicorn.toyworld.questions import Question, grade_answer
from unicorn.toyworld.roles import question_text
from unicorn.toyworld.scene import CATEGORIES
from unicorn.toyworld.splits import assignment_digest
from unicorn.training import formats

SCORE_LINE = re.compile(r"Score:\s*(\d+)\s*$")


@dataclass(frozen=True)
class EvalConfig:
    scenes_per_category: int = 12  # held-out scenes for judging and questions
    prompts_per_category: int = 8  # held-out prompts to draw
    samples_per_prompt: int = 4  # drawings per prompt (the Solver draws 8): best-of-n and the judge's pick
    cfg_scale: float = 1.0
    temperature: float = 1.0
    seed: int = 0
    split: str = "val"  # val: for choosing; test: for reporting

    def __post_init__(self):
        if self.split not in ("val", "test"):
            raise ValueError(f"the evaluation split must be 'val' or 'test' (never 'train'), got {self.split!r}")


def parse_score(text: str) -> int | None:
    """The last ``Score: N`` line with 0 <= N <= 10 (method.md), else None."""
    for line in reversed(text.strip().splitlines()):
        m = SCORE_LINE.search(line.strip())
        if m:
            n = int(m.group(1))
            return n if 0 <= n <= 10 else None
    return None


def rank(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank)."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    for value in np.unique(x):
        tie = x == value
        ranks[tie] = ranks[tie].mean()
    return ranks


def spearman(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2:
        return float("nan")
    ra, rb = rank(a), rank(b)
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def reference_question(q: Question, oracle_answer: str) -> Question:
    """The question graded against what the oracle reads in this image (not what the prompt asked for); an empty
    reading (e.g. no letters found) is the answer "none", as in the training data."""
    answer = oracle_answer or "none"
    if q.type == "text":
        return Question(q.id, "text", q.question, answer, keywords=[answer])
    return Question(q.id, "open", q.question, answer)  # exact match, like mc / yesno, without the options check


def judge_request(prompt: str, image: Image.Image) -> dict:
    """The judge prompt as the trainer formats judgement records (default instruction)."""
    return {"messages": [{"role": "user", "content": [
        {"type": "image", "image": image}, {"type": "text", "text": formats.JUDGE_INSTRUCTION.format(prompt=prompt)}]}]}


def question_request(question: str, image: Image.Image) -> dict:
    return {"messages": [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}]}


# The judged images of the evaluation (fixed, so figures stay comparable across models; the training data also has
# "vq_mixed" images, which need the clean render's codes)
VARIANTS = ("clean", "degraded", "wrong", "wrong_degraded", "other", "vq", "vq_wrong", "blank")


def variant_images(items, vq=None) -> list[tuple]:
    """(item, variant, uint8 image, oracle report) per item: each category's items cycle through ``VARIANTS``; the VQ variants
    go through ``vq`` when given. The oracle side of judging and answering, without the model."""
    pending, seen = [], {}
    for item in items:
        i = seen[item.category] = seen.get(item.category, -1) + 1  # the index within its category
        rng = random.Random("eval:" + item.key)
        nrng = np.random.default_rng(i)
        variant = VARIANTS[i % len(VARIANTS)]
        pending.append([item, variant, variant_image(item, variant, rng, nrng, 64)])
    to_vq = [k for k, p in enumerate(pending) if p[1].startswith("vq")]
    if to_vq and vq is not None:
        recons, _ = vq_roundtrip(vq, [pending[k][2] for k in to_vq])
        for k, rgb in zip(to_vq, recons):
            pending[k][2] = rgb
    return [(item, variant, rgb, judge(item.scene, rgb, item.questions)) for item, variant, rgb in pending]


def judge_and_answer(engine, items, vq=None, log=print) -> tuple[list[dict], list[dict]]:
    """The model judges each item's variant image (greedy) and answers every question about it (greedy, graded
    against what the oracle reads in that image): (judge rows, question rows)."""
    from unicorn.engine.params import SamplingParams

    start = time.perf_counter()
    judge_rows, qa_rows, requests, q_requests = [], [], [], []
    for item, variant, rgb, report in variant_images(items, vq):
        image = Image.fromarray(rgb)
        judge_rows.append({"category": item.category, "variant": variant, "oracle": report.score})
        requests.append(judge_request(item.prompt, image))
        for q in item.questions:
            ref = reference_question(q, report.answers[q.id])
            qa_rows.append({"category": item.category, "variant": variant, "type": q.type, "ref": ref,
                            "text": question_text(q)})
            q_requests.append(question_request(question_text(q), image))
    outputs = engine.generate(requests, SamplingParams(max_tokens=48, temperature=0.0))
    for row, out in zip(judge_rows, outputs):
        row["text"], row["model"] = out.text, parse_score(out.text)
    answers = engine.generate(q_requests, SamplingParams(max_tokens=12, temperature=0.0))
    for row, out in zip(qa_rows, answers):
        row["answer"] = out.text.strip()
        row["correct"] = grade_answer(row["ref"], row["answer"])
    log(f"eval: judged {len(judge_rows)} images, answered {len(qa_rows)} questions ({time.perf_counter() - start:.0f}s)")
    return judge_rows, qa_rows


def evaluate(engine, cfg: EvalConfig, vq=None, log=print) -> dict:
    """``engine``: a unicorn Engine on the checkpoint; ``vq``: its VQModel (for the VQ round-trip variants)."""
    from unicorn.engine.params import ImageGenParams, SamplingParams

    start = time.perf_counter()
    greedy_judge = SamplingParams(max_tokens=48, temperature=0.0)
    items = [make_item(c, i, cfg.seed, cfg.split) for c in CATEGORIES for i in range(cfg.scenes_per_category)]
    judge_rows, qa_rows = judge_and_answer(engine, items, vq, log)

    # ---- generation from held-out prompts -------------------------------------------------------------------
    gen_items = [make_item(c, 10_000 + i, cfg.seed, cfg.split) for c in CATEGORIES for i in range(cfg.prompts_per_category)]
    params = ImageGenParams(n=cfg.samples_per_prompt, cfg_scale=cfg.cfg_scale, temperature=cfg.temperature, seed=cfg.seed)
    drawn = engine.generate_images([it.prompt for it in gen_items], params)
    gen_rows = []
    for p, (item, out) in enumerate(zip(gen_items, drawn)):
        for image in out.images:
            score, soft = oracle_accuracy(item.scene, image, item.questions)
            gen_rows.append({"category": item.category, "oracle": score, "soft": soft, "image": image,
                             "prompt": item.prompt, "prompt_index": p})
    drawn_judgements = engine.generate([judge_request(r["prompt"], r["image"]) for r in gen_rows], greedy_judge)
    for row, out in zip(gen_rows, drawn_judgements):
        row["model"] = parse_score(out.text)
    log(f"eval: drew and judged {len(gen_rows)} images ({time.perf_counter() - start:.0f}s)")
    codec = codec_ceiling(vq, gen_items) if vq is not None else None
    return {**summarise(judge_rows, qa_rows, gen_rows, cfg, time.perf_counter() - start), "codec_roundtrip": codec,
            "split_assignment": assignment_digest()}


def codec_ceiling(vq, items) -> dict:
    """The oracle on the prompts' own clean renders after a VQ encode/decode round trip: what a perfect LM could
    reach through this codec, the ceiling of the generation scores."""
    decoded, _ = vq_roundtrip(vq, [it.rgb for it in items])
    scores = [judge(it.scene, rgb, it.questions).score for it, rgb in zip(items, decoded)]
    return {"mean_score": float(np.mean(scores)), "pass_rate": float(np.mean([s >= 8 for s in scores])), "n": len(scores)}


def _judge_stats(rows: list[dict]) -> dict:
    parsed = [r for r in rows if r["model"] is not None]
    return {"n": len(rows), "parse_rate": len(parsed) / max(1, len(rows)),
            "spearman": spearman([r["model"] for r in parsed], [r["oracle"] for r in parsed]),
            "mean_abs_error": float(np.mean([abs(r["model"] - r["oracle"]) for r in parsed])) if parsed else None}


def _per_prompt(rows: list[dict]) -> dict:
    """Over each prompt's drawings: did any pass (best-of-n), and the oracle score of the judge's pick (its highest
    ``Score: N``, first on ties) against the mean; the pick beats the mean when the judge ranks drawings usefully."""
    groups: dict[int, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["prompt_index"], []).append(r)
    picks = [max(g, key=lambda r: -1 if r["model"] is None else r["model"]) for g in groups.values()]
    return {"best_of_n_pass_rate": float(np.mean([any(r["oracle"] >= 8 for r in g) for g in groups.values()])),
            "judge_pick_score": float(np.mean([r["oracle"] for r in picks])),
            "best_score": float(np.mean([max(r["oracle"] for r in g) for g in groups.values()])),
            **pair_accuracy(groups.values())}


def pair_accuracy(groups) -> dict:
    """Over pairs of drawings of the same prompt that the oracle scores differently: the share the judge orders the
    same way (a tie or an unparsed score counts half; chance is 0.5). What rejection sampling needs from a judge."""
    stats = judge_ranking([[Drawing(r["oracle"], r["model"]) for r in g] for g in groups])
    return {"judge_pair_accuracy": stats["pair_accuracy"], "judge_pairs": stats["pairs"]}


def summarise(judge_rows, qa_rows, gen_rows, cfg: EvalConfig, elapsed: float) -> dict:
    by_cat = lambda rows, c: [r for r in rows if r["category"] == c]  # noqa: E731
    understanding = {c: float(np.mean([r["correct"] for r in by_cat(qa_rows, c)])) for c in CATEGORIES if by_cat(qa_rows, c)}
    generation = {c: {"oracle_accuracy": float(np.mean([r["soft"] for r in by_cat(gen_rows, c)])),
                      "mean_score": float(np.mean([r["oracle"] for r in by_cat(gen_rows, c)])),
                      "pass_rate": float(np.mean([r["oracle"] >= 8 for r in by_cat(gen_rows, c)])),
                      **_per_prompt(by_cat(gen_rows, c))}
                  for c in CATEGORIES if by_cat(gen_rows, c)}
    return {
        "config": cfg.__dict__,
        "judge": {**_judge_stats(judge_rows), "per_variant": {v: _judge_stats([r for r in judge_rows if r["variant"] == v])
                                                              for v in VARIANTS if any(r["variant"] == v for r in judge_rows)}},
        "judge_on_own_drawings": _judge_stats(gen_rows),
        "understanding": {"accuracy": float(np.mean([r["correct"] for r in qa_rows])), "n": len(qa_rows),
                          "per_category": understanding,
                          "per_type": {t: float(np.mean([r["correct"] for r in qa_rows if r["type"] == t]))
                                       for t in sorted({r["type"] for r in qa_rows})}},
        "generation": {"oracle_accuracy": float(np.mean([r["soft"] for r in gen_rows])),
                       "mean_score": float(np.mean([r["oracle"] for r in gen_rows])),
                       "pass_rate": float(np.mean([r["oracle"] >= 8 for r in gen_rows])), "n": len(gen_rows),
                       **_per_prompt(gen_rows),
                       "per_category": generation},
        "elapsed_s": elapsed,
    }
