"""The CPR build (rejection sampling + shards) of a self-play run at scale: seconds and peak memory at N prompts x 8
rollouts, on synthetic epoch files (seeded random scores, the toy model's 64 image tokens per rollout; the rollouts
share 64 image files, since the build only hashes and references them). Each size runs in a fresh process, so its
peak RSS is its own.

    python bench/selfplay/cpr_scale.py --sizes 2000 20000      # rows into bench/results/selfplay.jsonl
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from common import device_name, versions, write_rows  # noqa: E402

EPOCH = 64


def make_run(root: Path, num_prompts: int, seed: int = 0) -> None:
    from PIL import Image

    from unicorn.selfplay.recipe import RECIPE_FILES, load_recipe
    from unicorn.selfplay.store import RunDir

    recipe = load_recipe("toyworld")
    run = RunDir(root)
    run.open({"bench": "cpr_scale", "num_prompts": num_prompts})
    for name in RECIPE_FILES:
        (root / "recipe").mkdir(exist_ok=True)
        shutil.copyfile(Path(recipe.path) / name, root / "recipe" / name)
    for i in range(64):
        path = root / "images" / f"shared-{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (i * 4, 0, 255 - i * 4)).save(path)
    rng = random.Random(seed)
    categories = list(recipe.categories)
    state = {"active": categories, "assigned": {}, "in_row": {}, "stopped": {}}
    for k in range(-(-num_prompts // EPOCH)):
        slots = []
        for pid in range(k * EPOCH, min((k + 1) * EPOCH, num_prompts)):
            category, prompt = categories[pid % len(categories)], f"synthetic prompt {pid}"
            rollouts = [{"prompt_id": pid, "rollout": r, "category": category, "prompt": prompt,
                         "image": f"images/shared-{rng.randrange(64):02d}.png", "image_sha256": None,
                         "vq_codes": [rng.randrange(16384) for _ in range(64)], "cfg_scale": 3.0 + 5 * r / 7,
                         "temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": rng.getrandbits(62),
                         "judge_raw": "fine.\nScore: 7", "score": rng.choice([None, *range(11)]),
                         "analysis": "fine.", "form": "score_line", "expected_score": None, "judge_finish": "stop"}
                        for r in range(8)]
            slots.append({"slot": pid, "prompt_id": pid, "category": category, "status": "done", "prompt": prompt,
                          "attempts": [], "reason": None, "rollouts": rollouts})
        run.write_epoch(k, {"epoch": k, "slots": slots, "after": state, "demonstrations": {}, "best": []})


def build(root: Path, num_prompts: int) -> dict:
    from unicorn.selfplay.driver import SelfPlayConfig
    from unicorn.selfplay.recipe import load_recipe
    from unicorn.selfplay.run import finalize
    from unicorn.selfplay.store import RunDir

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    summary = finalize(RunDir(root), load_recipe(str(root / "recipe")), SelfPlayConfig(num_prompts, epoch_size=EPOCH))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "peak_rss_mib": peak / 1024, "rss_before_mib": base / 1024,
            "records": sum(summary["cpr_counts"].values()), "rollouts": summary["num_rollouts"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # a child: build one size
    parser.add_argument("--dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "selfplay.jsonl"))
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(build(Path(args.dir), args.one)))
        return
    common = {"bench": "selfplay_cpr_build", "device": device_name("cpu"), "versions": versions()}
    for size in args.sizes:
        work = Path(tempfile.mkdtemp(prefix="cpr-scale-"))
        try:
            make_run(work / "run", size)
            child = subprocess.run([sys.executable, __file__, "--one", str(size), "--dir", str(work / "run")],
                                   check=True, capture_output=True, text=True)
            got = json.loads(child.stdout.strip().splitlines()[-1])
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(f"{size} prompts x 8: CPR build {got['seconds']:.1f} s, peak RSS {got['peak_rss_mib']:.0f} MiB "
              f"({got['rss_before_mib']:.0f} MiB before), {got['records']} records", flush=True)
        config = {"num_prompts": size, "rollouts": 8, "image_tokens": 64, "records": got["records"],
                  "synthetic_epochs": True}
        rows = [{**common, "provider": "unicorn", "metric": "cpr_build_seconds", "value": got["seconds"], "unit": "s",
                 "config": config},
                {**common, "provider": "unicorn", "metric": "cpr_build_peak_rss", "value": got["peak_rss_mib"],
                 "unit": "MiB", "config": {**config, "rss_before_mib": got["rss_before_mib"]}}]
        if not args.no_write:
            write_rows(args.out, rows)


if __name__ == "__main__":
    main()
