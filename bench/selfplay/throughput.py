"""Prompts/hour of the whole self-play stage (propose, draw 8 rollouts, judge each, CPR build) on CPU: unicorn's loop
against a faithful official-style loop, same toy model, same run, same warm-up, outputs checked equal.

- unicorn: ``SelfPlayDriver`` on one ``Engine`` as ``unicorn selfplay`` runs it: every role's requests in flight
  together (all rollouts of a prompt in one request, judge requests queued as their images appear, the rubric
  prefix shared).
- official-style: batch 1 in every role, roles one after another, as the official scripts loop: one request at a
  time, each image its own request (its rollout's CFG scale and seed), no prefix cache (``OneAtATime`` below). It
  drives the same deterministic epoch structure, so both must write the same prompts, image tokens, judge replies,
  scores and CPR records (checked); decoded pixels are compared too. Where fp32 logits are not exactly invariant to the
  batch, a rollout may draw other tokens: counted and reported.

    python bench/selfplay/throughput.py --sizes 64 256            # rows into bench/results/selfplay.jsonl
    python bench/selfplay/throughput.py --sizes 8 --no-write      # a quick look
    python bench/selfplay/throughput.py --sizes 64 256 1024 --baseline-up-to 256   # 1024: unicorn's rate only
"""
from __future__ import annotations

import argparse
import collections
import json
import dataclasses
import os
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


class OneAtATime:
    """An engine front that runs one request at a time, batch 1: an image request of n rollouts becomes n requests
    of one image each (rollout i's settings and seed), whose outputs are joined back into one output."""

    def __init__(self, engine):
        self.engine, self.tokenizer = engine, engine.tokenizer
        self.queue: collections.deque = collections.deque()  # (outer id, "text"|"image", prompt, params, index)
        self.active = None  # (inner id, outer id, kind, index)
        self.parts: dict[int, list] = {}  # outer image id -> the single-image outputs so far
        self.n: dict[int, int] = {}
        self.done: list = []
        self.next_id = 1 << 40  # apart from the engine's own ids

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    def submit_text(self, prompt, params, *, priority: int = 0) -> int:
        rid = self._id()
        self.queue.append((rid, "text", prompt, params, 0))
        return rid

    def submit_image(self, prompt, params, *, priority: int = 0) -> int:
        rid = self._id()
        self.n[rid], self.parts[rid] = params.n, []
        for i in range(params.n):
            single = dataclasses.replace(params, n=1, cfg_scale=params.value("cfg_scale", i),
                                         temperature=params.value("temperature", i), seed=[params.value("seed", i)])
            self.queue.append((rid, "image", prompt, single, i))
        return rid

    def has_unfinished(self) -> bool:
        return bool(self.queue or self.active or self.done)

    def abort(self, rid: int):
        """Drops a request still queued here (the driver's preflight probes, aborted before any step)."""
        from unicorn.engine.outputs import TextOutput

        assert self.active is None or self.active[1] != rid, "only queued requests are aborted here"
        self.queue = collections.deque(q for q in self.queue if q[0] != rid)
        self.parts.pop(rid, None)
        self.n.pop(rid, None)
        return TextOutput(rid, [], finished=True)

    def step(self) -> list:
        if self.active is None and self.queue:
            rid, kind, prompt, params, index = self.queue.popleft()
            submit = self.engine.submit_text if kind == "text" else self.engine.submit_image
            self.active = (submit(prompt, params), rid, kind, index)
        outputs, self.done = self.done, []
        for out in self.engine.step():
            if self.active is None or out.request_id != self.active[0] or not out.finished:
                continue
            _, rid, kind, index = self.active
            self.active = None
            if kind == "text":
                outputs.append(dataclasses.replace(out, request_id=rid))
                continue
            self.parts[rid].append(out)
            if len(self.parts[rid]) == self.n[rid]:
                parts = self.parts.pop(rid)
                error = next((p.error for p in parts if p.error is not None), None)
                joined = dataclasses.replace(
                    parts[0], request_id=rid, images=[im for p in parts for im in p.images],
                    image_tokens=None if error else torch.cat([p.image_tokens for p in parts]),
                    finish_reasons=[r for p in parts for r in p.finish_reasons], error=error, pixel_values=None)
                outputs.append(joined)
        return outputs


def run_stage(engine, recipe_name: str, num_prompts: int, out: Path, seed: int, epoch_size: int) -> float:
    """The whole stage into a fresh ``out``: open, the loop, the CPR build; returns its seconds."""
    from unicorn.selfplay.driver import SelfPlayConfig, SelfPlayDriver
    from unicorn.selfplay.recipe import load_recipe
    from unicorn.selfplay.run import finalize
    from unicorn.selfplay.store import RunDir

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    recipe = load_recipe(recipe_name)
    cfg = SelfPlayConfig(num_prompts, seed=seed, epoch_size=epoch_size)
    run = RunDir(out)
    run.open({"bench": "selfplay", "num_prompts": num_prompts, "seed": seed})
    SelfPlayDriver(engine, recipe, cfg, run, progress=False, log=lambda *_: None).run()
    finalize(run, recipe, cfg, source_model="toy")
    return time.perf_counter() - start


def compare(a: Path, b: Path) -> dict:
    """What differs between two runs: files present, epochs and the rollouts table (their image sha256 aside), CPR
    records, summary; and the decoded pixels image by image (on a CPU the engine decodes each image alone, so equal
    codes give equal pixels; on a GPU it decodes 8 at a time, which may round a pixel differently)."""
    import numpy as np
    from PIL import Image

    from unicorn.cpr.schema import read_records

    def files(root):
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    def no_sha(obj):
        if isinstance(obj, dict):
            return {k: no_sha(v) for k, v in obj.items() if k != "image_sha256"}
        if isinstance(obj, list):
            return [no_sha(v) for v in obj]
        return obj

    out = {"files": sorted(set(files(a)) ^ set(files(b))), "epochs": [], "rollouts": False, "records": False,
           "summary": False}
    for epoch in sorted((a / "epochs").glob("epoch-*.json")):
        if no_sha(json.loads(epoch.read_text())) != no_sha(json.loads((b / "epochs" / epoch.name).read_text())):
            out["epochs"].append(epoch.name)
    table = [[no_sha(json.loads(line)) for line in (root / "rollouts.jsonl").read_text().splitlines()] for root in (a, b)]
    out["rollouts"] = table[0] != table[1]
    out["records"] = list(read_records(str(a))) != list(read_records(str(b)))
    out["summary"] = (a / "summary.json").read_bytes() != (b / "summary.json").read_bytes()
    rows = [{(r["prompt_id"], r["rollout"]): r for r in t} for t in table]
    same_prompts = set(rows[0]) & set(rows[1])
    for field in ("prompt", "vq_codes", "judge_raw", "score"):
        out[f"rollouts_with_other_{field}"] = sum(rows[0][k][field] != rows[1][k][field] for k in same_prompts)
    out["rollouts_compared"], out["rollouts_unmatched"] = len(same_prompts), len(set(rows[0]) ^ set(rows[1]))
    images, pixels, worst = 0, 0, 0
    for png in sorted((a / "images").rglob("*.png")):
        x = np.asarray(Image.open(png)).astype(np.int16)
        if not (b / png.relative_to(a)).exists():
            continue
        y = np.asarray(Image.open(b / png.relative_to(a))).astype(np.int16)
        differ = int((x != y).sum())
        images, pixels, worst = images + (differ > 0), pixels + differ, max(worst, int(np.abs(x - y).max()))
    out.update(images_with_pixel_diff=images, pixel_diffs=pixels, max_pixel_diff=worst,
               num_images=len(list((a / "images").rglob("*.png"))))
    out["equal"] = not (out["files"] or out["epochs"] or out["rollouts"] or out["records"] or out["summary"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--epoch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=4, help="prompts of the warm-up run of each loop")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--num-kv-blocks", type=int, default=16384, help="KV blocks of each engine (16 tokens each)")
    parser.add_argument("--keep", default=None, help="keep the run directories here")
    parser.add_argument("--baseline-up-to", type=int, default=None,
                        help="run the official-style loop only at sizes up to this (it is ~5x slower); larger sizes "
                             "give unicorn's prompts/h alone")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "selfplay.jsonl"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from unicorn.engine.llm_engine import Engine
    from unicorn.toyworld.model import default_model_path

    model = str(default_model_path())
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench-selfplay-"))
    ours = Engine(model, seed=args.seed, num_kv_blocks=args.num_kv_blocks)
    official = OneAtATime(Engine(model, seed=args.seed, num_kv_blocks=args.num_kv_blocks, enable_prefix_caching=False))
    loops = {"unicorn": ours, "official-style": official}
    for name, engine in loops.items():  # the same warm-up for both
        run_stage(engine, "toyworld", args.warmup, work / f"warmup-{name}", args.seed, args.epoch_size)
    common = {"bench": "selfplay", "device": device_name("cpu"), "versions": versions()}
    rows = []
    for size in args.sizes:
        seconds = {}
        with_baseline = args.baseline_up_to is None or size <= args.baseline_up_to
        for name, engine in loops.items():
            if name == "official-style" and not with_baseline:
                continue
            seconds[name] = run_stage(engine, "toyworld", size, work / f"{name}-{size}", args.seed, args.epoch_size)
            print(f"{size} prompts, {name}: {seconds[name]:.1f} s, {size / seconds[name] * 3600:.0f} prompts/h",
                  flush=True)
        if not with_baseline:
            row = {**common, "provider": "unicorn", "metric": "prompts_per_hour", "value": size / seconds["unicorn"] * 3600,
                   "unit": "prompts/h", "config": {"model": "toy", "recipe": "toyworld", "num_prompts": size, "rollouts": 8,
                                                   "epoch_size": args.epoch_size, "threads": torch.get_num_threads(),
                                                   "seconds": round(seconds["unicorn"], 2), "baseline": "not run"}}
            rows.append(row)
            if not args.no_write:
                write_rows(args.out, [row])
            continue
        diff = compare(work / f"unicorn-{size}", work / f"official-style-{size}")
        speedup = seconds["official-style"] / seconds["unicorn"]
        print(f"{size} prompts: {speedup:.1f}x; prompts, image tokens, judge replies, scores and CPR records "
              f"{'equal' if diff['equal'] else 'DIFFER'}; {json.dumps(diff)}", flush=True)
        config = {"model": "toy", "recipe": "toyworld", "num_prompts": size, "rollouts": 8,
                  "epoch_size": args.epoch_size, "threads": torch.get_num_threads(), "outputs_equal": diff["equal"],
                  **{k: v for k, v in diff.items() if isinstance(v, int) and not isinstance(v, bool)}}
        for name in loops:
            rows.append({**common, "provider": name, "metric": "prompts_per_hour",
                         "value": size / seconds[name] * 3600, "unit": "prompts/h",
                         "config": {**config, "seconds": round(seconds[name], 2)}})
        rows.append({**common, "provider": "unicorn-vs-official-style", "metric": "speedup", "value": speedup,
                     "unit": "x", "config": config})
        if not args.no_write:
            write_rows(args.out, rows[-3:])
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
