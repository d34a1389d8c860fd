"""Does lower precision cost drawing quality? The toy model on the test split in fp32, bf16 and with an fp8 KV cache.

    .venv/bin/python bench/toyworld/precision.py [--model DIR] [--split test] [--prompts 40] [--seeds 0 1 2]
                                                 [--configs fp32 bf16 bf16-fp8kv fp32-fp8kv]

Each configuration draws ``--prompts`` prompts per category x 8 at the recipe's CFG spread (3..8), temperature 1, the
same sampling seeds; the oracle scores every drawing. Reported per configuration: oracle accuracy (mean ± standard
error over seeds), its prompt-paired delta against fp32 (bootstrap standard error over prompts), and how often its
drawings' codes equal fp32's (whole drawings and single codes). The issue's bar (engine-perf): accuracy within one
standard error of fp32. Appends one row to bench/results/toyworld_precision.jsonl.
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
from unicorn.engine.params import ImageGenParams  # noqa: E402
from unicorn.selfplay.evaluation import paired_delta  # noqa: E402
from unicorn.toyworld.model import default_model_path  # noqa: E402
from unicorn.toyworld.model.data import make_item  # noqa: E402
from unicorn.toyworld.model.drawing_eval import cfg_spread  # noqa: E402
from unicorn.toyworld.model.floors import mean_se, oracle_accuracy  # noqa: E402
from unicorn.toyworld.pretrain import file_sha256  # noqa: E402
from unicorn.toyworld.scene import CATEGORIES  # noqa: E402

CONFIGS = {"fp32": ("float32", "auto"), "bf16": ("bfloat16", "auto"), "bf16-fp8kv": ("bfloat16", "fp8_e4m3"),
           "fp32-fp8kv": ("float32", "fp8_e4m3")}
RESULTS = os.path.join(os.path.dirname(__file__), "..", "results", "toyworld_precision.jsonl")


def draw(model: str, config: str, items, seeds: list[int]) -> dict:
    """Per seed: the drawings' codes [prompts, 8, tokens] and oracle accuracies [prompts, 8]."""
    dtype, kv = CONFIGS[config]
    out = {}
    with Engine(model, dtype=dtype, kv_cache_dtype=kv, seed=0, num_kv_blocks=4096) as engine:
        for seed in seeds:
            params = ImageGenParams(n=8, cfg_scale=cfg_spread(3.0, 8.0, 8), temperature=1.0, seed=seed)
            drawn = engine.generate_images([it.prompt for it in items], params)
            codes = np.stack([o.image_tokens.cpu().numpy() for o in drawn])
            soft = np.array([[oracle_accuracy(it.scene, image, it.questions)[1] for image in o.images]
                             for it, o in zip(items, drawn)])
            out[seed] = {"codes": codes, "soft": soft}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--split", default="test", choices=["val", "test"])
    ap.add_argument("--prompts", type=int, default=40)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    model = args.model or str(default_model_path())
    if not os.path.isfile(os.path.join(model, "config.json")):
        raise SystemExit(f"precision: --model {model}: no checkpoint there (config.json missing)")
    configs = ["fp32"] + [c for c in args.configs if c != "fp32"]
    items = [make_item(c, 10_000 + i, 0, args.split) for c in CATEGORIES for i in range(args.prompts)]
    names = [f"{it.category}/{i % args.prompts}" for i, it in enumerate(items)]
    runs, seconds = {}, {}
    for config in configs:
        t = time.time()
        runs[config] = draw(model, config, items, args.seeds)
        seconds[config] = time.time() - t
        print(f"{config}: drawn in {seconds[config]:.0f}s", flush=True)

    def per_prompt(run: dict) -> dict[str, float]:
        return {n: float(np.mean([run[s]["soft"][p].mean() for s in args.seeds])) for p, n in enumerate(names)}

    base = runs["fp32"]
    base_units = per_prompt(base)
    rows = {}
    for config in configs:
        run = runs[config]
        per_seed = [float(run[s]["soft"].mean()) for s in args.seeds]
        units = per_prompt(run)
        same_drawing = np.mean([(run[s]["codes"] == base[s]["codes"]).all(axis=-1).mean() for s in args.seeds])
        same_code = np.mean([(run[s]["codes"] == base[s]["codes"]).mean() for s in args.seeds])
        mean, se = mean_se(per_seed)
        rows[config] = {"accuracy": mean, "accuracy_se": se, "per_seed": per_seed,
                        "delta_vs_fp32": paired_delta(base_units, units) if config != "fp32" else None,
                        "same_drawing_as_fp32": float(same_drawing), "same_code_as_fp32": float(same_code),
                        "seconds": seconds[config]}
    row = {"bench": "toyworld_precision", "split": args.split, "prompts": len(items), "drawings_per_prompt": 8,
           "seeds": args.seeds, "model_sha256": file_sha256(os.path.join(model, "model.safetensors")),
           "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
           "threads": torch.get_num_threads(), "note": args.note, "configs": rows}
    with open(RESULTS, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"\n{'config':<12} {'accuracy':>16} {'delta vs fp32 (paired)':>24} {'same drawing':>13} {'same code':>10}")
    for config, r in rows.items():
        d = r["delta_vs_fp32"]
        delta = f"{d['delta']:+.4f} ± {d['se']:.4f}" if d else "-"
        print(f"{config:<12} {r['accuracy']:>8.4f} ± {r['accuracy_se']:.4f} {delta:>24} "
              f"{r['same_drawing_as_fp32']:>13.3f} {r['same_code_as_fp32']:>10.3f}")


if __name__ == "__main__":
    main()
