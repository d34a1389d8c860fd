"""The toy world's oracle as an evaluator of ``unicorn improve`` (the interface of unicorn/selfplay/evaluation.py).

It lives here, beside the oracle, because the loop must never import it: improve loads it by name
(``--evaluator toyworld``). Figures on a held-out split (``test`` for reporting, ``val`` for choosing settings):

    accuracy             drawing: the oracle's accuracy on the prompt's questions, mean over the prompt's drawings
                         (``drawings`` at the CFG spread, as the Solver draws) and sampling seeds; one unit per prompt
    judge_pick_accuracy  the same for the drawing the model's own judge scores highest (ties: the expected score from
                         logprobs, then the first), what rejection sampling keeps
    selection_gain       judge_pick_accuracy - accuracy, per prompt: what the judge's ranking adds
    mean_score           the oracle's 0-10 score of the drawings
    understanding        greedy answers to every question about each scene's variant image, graded against what the
                         oracle reads in it; one unit per question
Units are named ``category/index``, so improve's paired deltas come per category too.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from unicorn.toyworld.model.data import make_item
from unicorn.toyworld.model.drawing_eval import DrawingEvalConfig, by_prompt, draw_and_judge, judge_pick
from unicorn.toyworld.model.evaluate import judge_and_answer
from unicorn.toyworld.scene import CATEGORIES

GEN_METRICS = ("accuracy", "judge_pick_accuracy", "selection_gain", "mean_score")


@dataclass(frozen=True)
class ToyWorldEvaluator:
    split: str = "test"
    prompts_per_category: int = 40
    scenes_per_category: int = 24  # for understanding (about 4-5 questions each)
    drawings: int = 8
    cfg_low: float = 3.0
    cfg_high: float = 8.0
    temperature: float = 1.0
    seeds: tuple = (0,)
    num_kv_blocks: int | None = 4096
    name = "toyworld"

    def __post_init__(self):
        if self.split not in ("val", "test"):
            raise ValueError(f"toyworld evaluator: split must be val or test (never train), got {self.split!r}")
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))

    def describe(self) -> dict:
        return {**asdict(self), "seeds": list(self.seeds)}

    def evaluate(self, model_path: str, out_dir, log=print) -> dict:
        from unicorn.engine.llm_engine import Engine

        with Engine(str(model_path), seed=0, num_kv_blocks=self.num_kv_blocks) as engine:
            return self._evaluate(engine, log)

    def evaluate_on(self, engine, model_path: str, out_dir, log=print) -> dict | None:
        """On ``unicorn improve``'s kept engine when it is the engine :meth:`evaluate` would open (CPU, fp32, the same
        KV blocks), so that the figures are the same; None otherwise (the loop then calls :meth:`evaluate`)."""
        from unicorn.selfplay.evaluation import is_default_engine

        if not is_default_engine(engine, self.num_kv_blocks):
            return None
        engine.reseed(0)  # as Engine(..., seed=0) in evaluate
        engine.reset_prefix_cache()
        return self._evaluate(engine, log)

    def _evaluate(self, engine, log) -> dict:
        cfg = DrawingEvalConfig(drawings=self.drawings, cfg_low=self.cfg_low, cfg_high=self.cfg_high,
                                temperature=self.temperature, seeds=self.seeds)
        items = [make_item(c, 10_000 + i, 0, self.split) for c in CATEGORIES for i in range(self.prompts_per_category)]
        names = [f"{it.category}/{i % self.prompts_per_category}" for i, it in enumerate(items)]
        per_prompt = {name: {m: [] for m in GEN_METRICS} for name in names}
        for seed in self.seeds:
            for p, group in by_prompt(draw_and_judge(engine, items, cfg, seed)).items():
                pick = judge_pick(group)
                mean = float(np.mean([r["soft"] for r in group]))
                entry = per_prompt[names[p]]
                entry["accuracy"].append(mean)
                entry["judge_pick_accuracy"].append(pick["soft"])
                entry["selection_gain"].append(pick["soft"] - mean)
                entry["mean_score"].append(float(np.mean([r["oracle"] for r in group])))
        scenes = [make_item(c, i, 0, self.split) for c in CATEGORIES for i in range(self.scenes_per_category)]
        _, qa_rows = judge_and_answer(engine, scenes, engine.model.vqmodel, log)
        units = {m: {n: float(np.mean(v[m])) for n, v in per_prompt.items()} for m in GEN_METRICS}
        seen: dict[str, int] = {}
        units["understanding"] = {}
        for row in qa_rows:
            k = seen[row["category"]] = seen.get(row["category"], -1) + 1
            units["understanding"][f"{row['category']}/{k}"] = float(row["correct"])
        metrics = {m: float(np.mean(list(u.values()))) for m, u in units.items()}
        per_category = {c: {m: float(np.mean([v for n, v in u.items() if n.startswith(c + "/")]))
                            for m, u in units.items() if any(n.startswith(c + "/") for n in u)} for c in CATEGORIES}
        log(f"toyworld eval ({self.split}): drawing accuracy {metrics['accuracy']:.3f} over {len(items)} prompts, "
            f"judge's pick {metrics['judge_pick_accuracy']:.3f}, understanding {metrics['understanding']:.3f} "
            f"on {len(qa_rows)} questions")
        return {"metrics": metrics, "per_category": per_category, "units": units,
                "counts": {"prompts": len(items), "drawings_per_prompt": self.drawings, "seeds": len(self.seeds),
                           "questions": len(qa_rows)}}
