"""Prompt-paired UniCycle differences between models measured by bench/unicycle/measure.py on the same prompts and
image seeds: per prompt the mean over seeds, then the mean difference and its standard error over prompts.

    python bench/unicycle/paired.py base=/tmp/unicycle-base judge=/tmp/unicycle-judge control=/tmp/unicycle-control
Compares every later arm with the first, and each pair of later arms; for the model's own answers and for the oracle
reading the model's drawings (the drawings' share).
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

PARTS = {"model": "model answers from its drawing", "oracle-reads-drawings": "oracle reads the drawing"}


def per_prompt(work: Path, part: str) -> dict[str, np.ndarray]:
    """Prompt id -> [Soft, Hard] x 100, the mean over the seeds measured in ``work``."""
    scores: dict[str, list] = {}
    runs = sorted(work.glob(f"{part}-seed*/report.json"))
    if not runs:
        raise SystemExit(f"{work}: no {part}-seed*/report.json (a bench/unicycle/measure.py --work directory?)")
    for report in runs:
        for inst in json.loads(report.read_text())["instances"]:
            scores.setdefault(inst["id"], []).append((inst["soft"], inst["hard"]))
    return {k: 100 * np.mean(v, axis=0) for k, v in scores.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("arms", nargs="+", help="NAME=WORK_DIR; the first is the base")
    args = ap.parse_args()
    arms = dict(a.split("=", 1) for a in args.arms)
    names = list(arms)
    pairs = [(b, names[0]) for b in names[1:]] + list(itertools.combinations(names[1:], 2))
    print("| measure | arms | Soft diff. | Hard diff. | prompts |\n|---|---|---|---|---|")
    for part, label in PARTS.items():
        data = {n: per_prompt(Path(w), part) for n, w in arms.items()}
        ids = sorted(set.intersection(*(set(d) for d in data.values())))
        for a, b in pairs:
            d = np.array([data[a][i] - data[b][i] for i in ids])
            mean, se = d.mean(0), d.std(0, ddof=1) / np.sqrt(len(ids))
            print(f"| {label} | {a} - {b} | {mean[0]:+.2f} ± {se[0]:.2f} | {mean[1]:+.2f} ± {se[1]:.2f} | {len(ids)} |")


if __name__ == "__main__":
    main()
