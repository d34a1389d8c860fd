"""A dry run of self-play's selection, with the oracle only as the measure (toyworld-v2, must-show 3).

    .venv/bin/python bench/toyworld/dryrun.py --out DIR [--model DIR] [--prompts 112] [--data-seed 7]
                                              [--steps 200] [--lr 1e-4] [--split test] [--eval-prompts 40]
                                              [--eval-seeds 0 1 2]

1. Pool: fresh train-split scenes (data seed ``--data-seed``, never used in pretraining: seed 0), ``--prompts`` per
   category; the model draws 8 per prompt at the CFG spread 3..8 and judges each drawing with its own judge
   (drawing_eval.draw_and_judge); the oracle scores every drawing.
2. Three T2I data sets of one drawing per prompt: the judge's pick (its ``Score: N``, then the expected score from
   logprobs, then the first), a random one (seeded per prompt), and the oracle's best (score, then accuracy).
3. The same ``unicorn train`` fine-tune on each (same seed, steps and learning rate; improve's settings).
4. The toy world's evaluator (improve_eval.ToyWorldEvaluator: drawing accuracy over the split's prompts at the CFG
   spread and ``--eval-seeds``, the judge's pick, understanding) on the base model and each arm; prompt-paired
   bootstrap deltas (selfplay.evaluation.compare), overall and per category.

Each stage keeps its output under DIR and is skipped when it is there, so a killed run resumes. Writes
DIR/report.json and appends one row to bench/toyworld/dryrun_results.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, ROOT)

from unicorn.cpr.schema import ImageRef, T2IRecord, write_dataset  # noqa: E402
from unicorn.cpr.shards import atomic_write  # noqa: E402
from unicorn.selfplay.evaluation import compare  # noqa: E402
from unicorn.toyworld.model import default_model_path  # noqa: E402
from unicorn.toyworld.model.data import make_item  # noqa: E402
from unicorn.toyworld.model.drawing_eval import DrawingEvalConfig, by_prompt, draw_and_judge, judge_pick  # noqa: E402
from unicorn.toyworld.model.improve_eval import ToyWorldEvaluator  # noqa: E402
from unicorn.toyworld.model.judge_stats import Drawing, judge_ranking  # noqa: E402
from unicorn.toyworld.pretrain import file_sha256  # noqa: E402
from unicorn.toyworld.scene import CATEGORIES  # noqa: E402

ARMS = ("judge", "random", "oracle")
RESULTS = os.path.join(os.path.dirname(__file__), "dryrun_results.jsonl")


def write_json(path: str, obj) -> None:
    atomic_write(path, json.dumps(obj).encode())


def pick(arm: str, group: list[dict], seed: int, prompt_index: int) -> dict:
    """The drawing an arm keeps of one prompt's rollouts (in rollout order)."""
    if arm == "judge":
        return judge_pick(group)
    if arm == "oracle":
        return max(group, key=lambda r: (r["oracle"], r["soft"]))
    return group[random.Random(f"{seed}:{prompt_index}").randrange(len(group))]


def build_pool(args, out: str, log) -> list[dict]:
    path = os.path.join(out, "pool.json")
    if os.path.exists(path):
        return json.load(open(path))["rows"]
    from unicorn import Engine

    items = [make_item(c, i, args.data_seed, "train") for c in CATEGORIES for i in range(args.prompts)]
    t = time.time()
    with Engine(args.model, seed=0, num_kv_blocks=4096) as engine:
        rows = draw_and_judge(engine, items, DrawingEvalConfig(), args.sample_seed)
    for r in rows:
        r["prompt"] = items[r["prompt_index"]].prompt
        r["key"] = items[r["prompt_index"]].key
    log(f"pool: {len(items)} prompts x 8 drawn and judged in {time.time() - t:.0f}s")
    write_json(path, {"rows": rows, "seconds": time.time() - t})
    return rows


def pool_summary(groups: dict[int, list[dict]], seed: int) -> dict:
    """What each arm keeps, as the oracle scores it (accuracy / score of the kept drawing, and of the mean one)."""
    kept = {arm: [pick(arm, g, seed, p) for p, g in groups.items()] for arm in ARMS}
    drawings = [[Drawing(r["oracle"], r["judge"], r["expected"]) for r in g] for g in groups.values()]
    return {"prompts": len(groups),
            "mean_accuracy": float(np.mean([r["soft"] for g in groups.values() for r in g])),
            "mean_score": float(np.mean([r["oracle"] for g in groups.values() for r in g])),
            "kept": {arm: {"accuracy": float(np.mean([r["soft"] for r in rs])),
                           "score": float(np.mean([r["oracle"] for r in rs]))} for arm, rs in kept.items()},
            "judge": judge_ranking(drawings), "judge_tie_break": judge_ranking(drawings, tie_break=True)}


def write_arm(arm: str, groups: dict[int, list[dict]], seed: int, data_dir: str) -> None:
    if os.path.exists(os.path.join(data_dir, "manifest.json")):
        return
    records = []
    for p, group in groups.items():
        r = pick(arm, group, seed, p)
        records.append(T2IRecord(id=f"{r['category']}-{p:05d}-{arm}", category=r["category"], prompt=r["prompt"],
                                 seed=seed, image=ImageRef(vq_codes=tuple(r["codes"])), score=r["judge"],
                                 provenance={"source": "dryrun", "key": r["key"], "rollout": r["rollout"], "arm": arm}))
    write_dataset(data_dir, records, source_model="dryrun", seed=seed, config={"arm": arm})


def train_arm(args, out: str, arm: str, log) -> str:
    model = os.path.join(out, "models", arm)
    if os.path.exists(os.path.join(model, "model.safetensors")):
        return model
    cmd = [sys.executable, "-m", "unicorn.cli", "train", "--model", args.model, "--data", os.path.join(out, "data", arm),
           "--out", os.path.join(out, "train", arm), "--export", model, "--steps", str(args.steps), "--lr", str(args.lr),
           "--warmup", "10", "--micro-batch", "4", "--seq-len", "512", "--cond-dropout", "0.1", "--seed", "0",
           "--log-every", "50"]
    t = time.time()
    done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"dryrun: training arm {arm} failed: {(done.stderr.strip().splitlines() or ['no output'])[-1]}")
    log(f"train {arm}: {time.time() - t:.0f}s; " + done.stdout.strip().splitlines()[-1][:200])
    return model


def evaluate(args, out: str, name: str, model: str, log) -> dict:
    path = os.path.join(out, "eval", f"{name}.json")
    if os.path.exists(path):
        return json.load(open(path))
    evaluator = ToyWorldEvaluator(split=args.split, prompts_per_category=args.eval_prompts,
                                  scenes_per_category=args.eval_scenes, seeds=tuple(args.eval_seeds))
    t = time.time()
    result = evaluator.evaluate(model, out, log=log)
    result["seconds"] = time.time() - t
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_json(path, result)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default=None, help="default: the embedded toy model")
    ap.add_argument("--prompts", type=int, default=112, help="fresh train scenes per category (9 categories)")
    ap.add_argument("--data-seed", type=int, default=7)
    ap.add_argument("--sample-seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--split", default="test", choices=["val", "test"])
    ap.add_argument("--eval-prompts", type=int, default=40)
    ap.add_argument("--eval-scenes", type=int, default=24)
    ap.add_argument("--eval-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    args.model = args.model or str(default_model_path())
    if not os.path.isfile(os.path.join(args.model, "config.json")):
        raise SystemExit(f"dryrun: --model {args.model}: no checkpoint there (config.json missing)")
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    log = lambda m: print(m, flush=True)  # noqa: E731
    t0 = time.time()

    groups = by_prompt(build_pool(args, out, log))
    pool = pool_summary(groups, args.sample_seed)
    log("pool: mean accuracy {:.3f}; kept accuracy judge {judge[accuracy]:.3f} random {random[accuracy]:.3f} "
        "oracle {oracle[accuracy]:.3f}; judge pair accuracy {:.3f}".format(
            pool["mean_accuracy"], pool["judge"]["pair_accuracy"], **pool["kept"]))
    results = {"base": evaluate(args, out, "base", args.model, log)}
    for arm in ARMS:
        write_arm(arm, groups, args.sample_seed, os.path.join(out, "data", arm))
        results[arm] = evaluate(args, out, arm, train_arm(args, out, arm, log), log)

    pairs = [("base", "judge"), ("base", "random"), ("base", "oracle"), ("random", "judge"), ("random", "oracle")]
    deltas = {f"{b}-{a}": compare(results[a], results[b]) for a, b in pairs}
    report = {"config": {k: v for k, v in vars(args).items()}, "model_sha256": file_sha256(
                  os.path.join(args.model, "model.safetensors")),
              "pool": pool, "metrics": {n: r["metrics"] for n, r in results.items()},
              "per_category": {n: r["per_category"] for n, r in results.items()},
              "deltas": deltas,
              "seconds": time.time() - t0}
    write_json(os.path.join(out, "report.json"), report)
    with open(RESULTS, "a") as f:
        f.write(json.dumps({k: report[k] for k in ("config", "model_sha256", "pool", "metrics", "seconds")}
                           | {"deltas": {k: {m: d[m]["overall"] for m in d} for k, d in deltas.items()}}) + "\n")

    log(f"\n{'model':<8} {'draw acc':>9} {'judge pick':>11} {'understanding':>14}")
    for n, r in results.items():
        m = r["metrics"]
        log(f"{n:<8} {m['accuracy']:>9.3f} {m['judge_pick_accuracy']:>11.3f} {m['understanding']:>14.3f}")
    log("\npaired deltas (bootstrap s.e. over prompts / questions):")
    for k, d in deltas.items():
        log(f"  {k:<14} " + "  ".join(f"{m} {d[m]['overall']['delta']:+.4f} ± {d[m]['overall']['se']:.4f}"
                                        for m in ("accuracy", "understanding") if m in d))
    log("per category, accuracy delta judge-random / oracle-random:")
    for c in CATEGORIES:
        a = deltas["judge-random"]["accuracy"]["per_category"].get(c)
        b = deltas["oracle-random"]["accuracy"]["per_category"].get(c)
        if a and b:
            log(f"  {c:<12} {a['delta']:+.4f} ± {a['se']:.4f}   {b['delta']:+.4f} ± {b['se']:.4f}")
    log(f"report: {os.path.join(out, 'report.json')} ({time.time() - t0:.0f}s)")


if __name__ == "__main__":
    main()
