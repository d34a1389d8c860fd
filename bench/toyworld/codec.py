"""The toy world's VQ codec: how much of what the oracle checks survives an encode / decode round trip of clean renders
(the ceiling of every drawing), for a codec architecture trained here, beside the shipped codec on the same prompts.

    .venv/bin/python bench/toyworld/codec.py --arch grid16 [--steps 4000] [--per-category 40] [--out DIR]
    .venv/bin/python bench/toyworld/codec.py --arch grid16 --codec DIR/vq.safetensors   # measure a trained codec again

Per split (val: for choosing; test: for reporting) and category: mean oracle score, oracle accuracy (share of the
prompt's questions the oracle answers right from the round trip) and pass rate (score >= 8), with standard errors
over prompts. The issue's target: >= 8.5 / 10 mean and >= 0.85 accuracy. Appends rows to
bench/results/toyworld_codec.jsonl.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from bench.common import device_name, versions, write_rows  # noqa: E402
from unicorn.models.vq import VQModel  # noqa: E402
from unicorn.toyworld.model import default_model_path  # noqa: E402
from unicorn.toyworld.model.data import make_item, vq_roundtrip  # noqa: E402
from unicorn.toyworld.model.floors import oracle_accuracy  # noqa: E402
from unicorn.toyworld.model.vq_train import VQTrainConfig, train_vq  # noqa: E402
from unicorn.toyworld.pretrain import ARCHS  # noqa: E402
from unicorn.toyworld.scene import CATEGORIES  # noqa: E402


def shipped_codec() -> VQModel:
    from unicorn.models import load_model

    return load_model(str(default_model_path())).vqmodel.float().eval()


def measure(vq, split: str, per_category: int) -> dict:
    items = [make_item(c, i, 0, split) for c in CATEGORIES for i in range(per_category)]
    decoded, _ = vq_roundtrip(vq, [it.rgb for it in items])
    rows = [(it.category, *oracle_accuracy(it.scene, rgb, it.questions)) for it, rgb in zip(items, decoded)]

    def stats(rs):
        score, acc = np.array([r[1] for r in rs]), np.array([r[2] for r in rs])
        se = lambda x: float(x.std(ddof=1) / np.sqrt(len(x)))  # noqa: E731
        return {"mean_score": float(score.mean()), "mean_score_se": se(score), "accuracy": float(acc.mean()),
                "accuracy_se": se(acc), "pass_rate": float((score >= 8).mean()), "n": len(rs)}

    return {**stats(rows), "per_category": {c: stats([r for r in rows if r[0] == c]) for c in CATEGORIES}}


def print_table(name: str, results: dict) -> None:
    for split, r in results.items():
        print(f"{name} {split}: mean {r['mean_score']:.2f} ± {r['mean_score_se']:.2f}, accuracy {r['accuracy']:.3f} ± "
              f"{r['accuracy_se']:.3f}, pass {r['pass_rate']:.3f} (n={r['n']})")
        print("   " + "  ".join(f"{c} {v['accuracy']:.2f}/{v['mean_score']:.1f}" for c, v in r["per_category"].items()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="grid16", choices=sorted(ARCHS))
    p.add_argument("--steps", type=int, default=VQTrainConfig.steps)
    p.add_argument("--codec", help="a trained codec (vq.safetensors) to measure instead of training one (--steps then "
                                    "records the steps it was trained with)")
    p.add_argument("--per-category", type=int, default=40)
    p.add_argument("--out", default="toyworld-codec")
    p.add_argument("--results", default=os.path.join(os.path.dirname(__file__), "..", "results", "toyworld_codec.jsonl"))
    args = p.parse_args()
    from safetensors.torch import load_file, save_file

    arch = ARCHS[args.arch]
    train_cfg = VQTrainConfig(steps=args.steps)
    start = time.perf_counter()
    if args.codec:
        vq = VQModel(arch.vq_arch(), grid=arch.grid)
        try:
            vq.load_state_dict(load_file(args.codec))
        except (OSError, RuntimeError) as err:  # missing file, or a codec of another --arch
            p.error(f"--codec {args.codec}: not a {args.arch} codec ({str(err).splitlines()[0]})")
        vq.eval()
        train_s = None
    else:
        vq, stats = train_vq(arch.vq_arch(), arch.grid, train_cfg)
        train_s = stats["elapsed_s"]
        os.makedirs(args.out, exist_ok=True)
        save_file({k: v.contiguous() for k, v in vq.state_dict().items()}, os.path.join(args.out, "vq.safetensors"))
    codecs = {args.arch: vq, "shipped": shipped_codec()}
    config = {"arch": args.arch, "vq": arch.vq, "grid": arch.grid, "train": vars(train_cfg), "codec": args.codec,
              "per_category": args.per_category, "train_s": train_s, "torch_threads": torch.get_num_threads()}
    rows = []
    for name, codec in codecs.items():
        results = {split: measure(codec, split, args.per_category) for split in ("val", "test")}
        print_table(name, results)
        for split, r in results.items():
            for metric in ("mean_score", "accuracy", "pass_rate"):
                rows.append({"bench": "toyworld_codec", "provider": name, "metric": f"{split}_{metric}",
                             "value": r[metric], "se": r.get(f"{metric}_se"), "unit": "oracle", "config": config,
                             "per_category": {c: v[metric] for c, v in r["per_category"].items()},
                             "device": device_name(), "versions": versions()})
    write_rows(args.results, rows)
    print(f"wrote {len(rows)} rows to {args.results} ({time.perf_counter() - start:.0f}s)")


if __name__ == "__main__":
    main()
