"""The toy world as a self-play testbed: every figure of issue toyworld-v2 beside its floors, on one split.

    .venv/bin/python bench/toyworld/testbed.py [--model DIR] [--split test] [--prompts 40] [--scenes 24]
                                               [--drawings 8] [--cfg-low 3 --cfg-high 8] [--seeds 0 1 2]

- Understanding: greedy answers to every question about each scene's variant image (clean, degraded, wrong, ...),
  graded against what the oracle reads in that image; standard error binomial over questions. Floor: a blind
  answerer fitted on train-split questions (floors.BlindAnswerer).
- Drawing and its own judge: drawing_eval (``--drawings`` per prompt at the CFG spread, over ``--seeds``; mean and
  standard error over seeds). Floors, judged by the oracle as drawings are: a blank image, the prompt's background
  alone, another scene of the category through the codec; ceiling: the prompt's own render through the codec.
Appends one JSON row to bench/toyworld/testbed_results.jsonl and prints the tables. Choose settings with
``--split val``; report ``--split test``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from unicorn import Engine  # noqa: E402
from unicorn.toyworld.model import default_model_path  # noqa: E402
from unicorn.toyworld.model.data import make_item  # noqa: E402
from unicorn.toyworld.model.drawing_eval import DrawingEvalConfig, evaluate_drawing  # noqa: E402
from unicorn.toyworld.model.evaluate import judge_and_answer, reference_question, variant_images  # noqa: E402
from unicorn.toyworld.model.floors import DRAWING_FLOORS, BlindAnswerer, drawing_floors, mean_se  # noqa: E402
from unicorn.toyworld.pretrain import file_sha256  # noqa: E402
from unicorn.toyworld.questions import grade_answer  # noqa: E402
from unicorn.toyworld.roles import question_text  # noqa: E402
from unicorn.toyworld.scene import CATEGORIES  # noqa: E402
from unicorn.toyworld.splits import assignment_digest  # noqa: E402


def binomial(values) -> dict:
    values = list(values)
    mean, se = mean_se(values)
    return {"mean": mean, "se": se, "n": len(values)}


def understanding(engine, vq, split: str, scenes: int, log) -> dict:
    items = [make_item(c, i, 0, split) for c in CATEGORIES for i in range(scenes)]
    _, qa_rows = judge_and_answer(engine, items, vq, log)
    fit = [make_item(c, i, 0, "train") for c in CATEGORIES for i in range(4 * scenes)]
    blind = BlindAnswerer().fit((question_text(q), reference_question(q, report.answers[q.id]))
                                for item, _, _, report in variant_images(fit, vq) for q in item.questions)
    for row in qa_rows:
        row["blind"] = grade_answer(row["ref"], blind.answer(row["text"], row["ref"]))

    def summary(rows):
        return {"model": binomial([r["correct"] for r in rows]), "blind": binomial([r["blind"] for r in rows])}

    return {**summary(qa_rows), "per_category": {c: summary([r for r in qa_rows if r["category"] == c]) for c in CATEGORIES},
            "per_type": {t: summary([r for r in qa_rows if r["type"] == t]) for t in sorted({r["type"] for r in qa_rows})}}


def floor_summary(rows: dict[str, list[dict]]) -> dict:
    def one(rs):
        return {"accuracy": float(np.mean([r["soft"] for r in rs])), "mean_score": float(np.mean([r["score"] for r in rs])),
                "pass_rate": float(np.mean([r["score"] >= 8 for r in rs]))}

    return {name: {**one(rs), "per_category": {c: one([r for r in rs if r["category"] == c]) for c in CATEGORIES}}
            for name, rs in rows.items()}


def print_tables(row: dict) -> None:
    u, d, f = row["understanding"], row["drawing"], row["floors"]
    pm = lambda v: f"{v['mean']:.3f} ± {v['se']:.3f}"  # noqa: E731
    print(f"understanding: {pm(u['model'])} on {u['model']['n']} questions (blind answerer {u['blind']['mean']:.3f})")
    o = d["overall"]
    print(f"drawing ({row['split']}, {o['prompts']['mean']:.0f} prompts x {d['config']['drawings']}, CFG "
          f"{d['config']['cfg_scales'][0]}..{d['config']['cfg_scales'][-1]}, {len(d['per_seed'])} seeds): accuracy "
          f"{pm(o['accuracy'])}, mean score {pm(o['mean_score'])}, >= 8 {pm(o['pass_rate'])}, best-of-n passes "
          f"{pm(o['best_pass_rate'])}")
    print("floors (accuracy / mean score / >= 8): " + ", ".join(
        f"{n} {f[n]['accuracy']:.3f} / {f[n]['mean_score']:.2f} / {f[n]['pass_rate']:.3f}" for n in DRAWING_FLOORS))
    for name in ("judge", "judge_tie_break"):
        j = o[name]
        print(f"{name}: pair accuracy {pm(j['pair_accuracy'])}, ties {pm(j['tie_rate'])}, Score 10 "
              f"{pm(j['top_rate'])}, pick gain {pm(j['pick_gain'])} of {pm(j['oracle_gain'])}")
    print(f"{'category':<12} {'und':>6} {'blind':>6} {'gen acc':>14} {'blank':>6} {'bg':>6} {'other':>6} {'codec':>6} "
          f"{'score':>13} {'>=8':>6} {'best8':>6} {'pair':>6} {'ties':>5} {'gain':>6}")
    for c in CATEGORIES:
        pc, uc = d["per_category"].get(c), u["per_category"][c]
        if pc is None:
            continue
        fl = [f[n]["per_category"][c]["accuracy"] for n in DRAWING_FLOORS]
        print(f"{c:<12} {uc['model']['mean']:>6.3f} {uc['blind']['mean']:>6.3f} {pm(pc['accuracy']):>14} "
              + " ".join(f"{x:>6.3f}" for x in fl)
              + f" {pc['mean_score']['mean']:>6.2f}±{pc['mean_score']['se']:.2f} {pc['pass_rate']['mean']:>6.3f} "
              f"{pc['best_pass_rate']['mean']:>6.3f} {pc['judge']['pair_accuracy']['mean']:>6.3f} "
              f"{pc['judge']['tie_rate']['mean']:>5.2f} {pc['judge']['pick_gain']['mean']:>6.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(default_model_path()))
    p.add_argument("--split", choices=("val", "test"), default="test")
    p.add_argument("--prompts", type=int, default=40, help="drawn prompts per category")
    p.add_argument("--scenes", type=int, default=24, help="judged / questioned scenes per category")
    p.add_argument("--drawings", type=int, default=8)
    p.add_argument("--cfg-low", type=float, default=DrawingEvalConfig.cfg_low)
    p.add_argument("--cfg-high", type=float, default=DrawingEvalConfig.cfg_high)
    p.add_argument("--temperature", type=float, default=DrawingEvalConfig.temperature)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "testbed_results.jsonl"))
    args = p.parse_args()
    engine = Engine(args.model, seed=0, num_kv_blocks=4096)
    vq = engine.model.vqmodel
    start = time.perf_counter()
    und = understanding(engine, vq, args.split, args.scenes, print)
    items = [make_item(c, 10_000 + i, 0, args.split) for c in CATEGORIES for i in range(args.prompts)]
    drawing = evaluate_drawing(engine, items, DrawingEvalConfig(
        drawings=args.drawings, cfg_low=args.cfg_low, cfg_high=args.cfg_high, temperature=args.temperature,
        seeds=tuple(args.seeds)))
    row = {"bench": "toyworld_testbed", "model": args.model,
           "model_sha256": file_sha256(os.path.join(args.model, "model.safetensors")), "split": args.split,
           "split_assignment": assignment_digest(), "device": platform.processor() or platform.machine(),
           "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
           "understanding": und, "drawing": drawing, "floors": floor_summary(drawing_floors(items, vq)),
           "wall_s": time.perf_counter() - start}
    print_tables(row)
    with open(args.out, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"row appended to {args.out} ({row['wall_s']:.0f}s)")


if __name__ == "__main__":
    main()
