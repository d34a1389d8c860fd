"""Seconds per round that ``unicorn improve`` spends on engines: a fresh engine per stage (every self-play and
evaluation opens one: model load, KV pool, kernels) against the one kept engine (sleep for training, wake up with
the export loaded in place). Same toy-model run both ways, same process (one warm-up engine start first, so neither
pays the imports), outputs checked equal.

    python bench/selfplay/improve_engine.py                      # rows into bench/results/selfplay.jsonl
    python bench/selfplay/improve_engine.py --no-write --rounds 2
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from common import device_name, versions, write_rows  # noqa: E402


def _digests(root: Path) -> dict:
    skip = ("timing.json", "metrics.jsonl", "improve.png")  # wall clock, and the plot matplotlib stamps
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes().replace(str(root).encode(), b"OUT")).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name not in skip and "checkpoints" not in p.parts}


def main() -> None:
    from unicorn.engine.llm_engine import Engine
    from unicorn.selfplay.improve import ImproveConfig, TrainSettings, improve
    from unicorn.toyworld.model import default_model_path

    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--num-prompts", type=int, default=4)
    ap.add_argument("--train-steps", type=int, default=2)
    ap.add_argument("--no-control", action="store_true")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each; the order alternates (fresh first, then kept "
                                                           "first), the figures are means")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "selfplay.jsonl"))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    model = str(default_model_path())
    evaluation = {"split": "val", "prompts_per_category": 1, "scenes_per_category": 1, "drawings": 2, "seeds": [0],
                  "num_kv_blocks": 512}
    cfg = ImproveConfig(model=model, recipe="toyworld", num_prompts=args.num_prompts, epoch_size=2, seed=0,
                        train=TrainSettings(steps=args.train_steps, micro_batch=2, warmup=1, ema=0.5),
                        evaluator="toyworld", eval_options=evaluation, control=not args.no_control,
                        num_kv_blocks=512)
    Engine(model, num_kv_blocks=512).close()  # warm-up: imports and kernel loading paid by neither run

    starts: list[float] = []
    init = Engine.__init__

    def timed_init(self, *a, **k):
        t = time.perf_counter()
        init(self, *a, **k)
        starts.append(time.perf_counter() - t)

    Engine.__init__ = timed_init
    work = Path(tempfile.mkdtemp(prefix="improve-engine-"))
    seconds, engine_s, counts = {"fresh": 0.0, "kept": 0.0}, {"fresh": 0.0, "kept": 0.0}, {}
    equal = True
    try:
        for repeat in range(args.repeats):
            order = (("fresh", False), ("kept", True))
            for name, keep in order if repeat % 2 == 0 else order[::-1]:
                starts.clear()
                out = work / f"{name}-{repeat}"
                t = time.perf_counter()
                improve(cfg, args.rounds, str(out), log=lambda *_: None, progress=False, keep_engine=keep)
                wall = time.perf_counter() - t
                kept = [a for r in range(1, args.rounds + 1)
                        for a in json.loads((out / f"round-{r:02d}" / "timing.json").read_text())["kept_engine"]]
                if keep:  # its one start, its sleeps and its wake-ups with weight loads
                    spent = sum(a["s"] for a in kept)
                    counts[name] = {a["action"]: sum(b["action"] == a["action"] for b in kept) for a in kept}
                else:
                    spent = sum(starts)
                    counts[name] = {"start": len(starts)}
                seconds[name] += wall / args.repeats
                engine_s[name] += spent / args.repeats
                print(f"{name}: {wall:.1f} s for {args.rounds} rounds, {spent:.2f} s on engines {counts[name]}",
                      flush=True)
            equal = equal and _digests(work / f"fresh-{repeat}") == _digests(work / f"kept-{repeat}")
    finally:
        Engine.__init__ = init
        shutil.rmtree(work, ignore_errors=True)
    saved = (engine_s["fresh"] - engine_s["kept"]) / args.rounds
    print(f"saved per round: {saved:.2f} s of engine starts ({(seconds['fresh'] - seconds['kept']) / args.rounds:.2f} s "
          f"of wall time); round directories {'equal' if equal else 'DIFFER'}", flush=True)
    config = {"model": "toy", "rounds": args.rounds, "repeats": args.repeats, "num_prompts": args.num_prompts, "train_steps": args.train_steps,
              "control": not args.no_control, "evaluator": "toyworld (tiny)", "threads": torch.get_num_threads(),
              "outputs_equal": equal}
    common = {"bench": "improve-engine", "device": device_name("cpu"), "versions": versions()}
    rows = [{**common, "provider": name, "metric": "engine_s_per_round", "value": engine_s[name] / args.rounds,
             "unit": "s", "config": {**config, "actions": counts[name],
                                     "wall_s_per_round": round(seconds[name] / args.rounds, 2)}}
            for name in ("fresh", "kept")]
    rows.append({**common, "provider": "kept-vs-fresh", "metric": "engine_s_saved_per_round", "value": saved,
                 "unit": "s", "config": config})
    if not args.no_write:
        write_rows(args.out, rows)


if __name__ == "__main__":
    main()
