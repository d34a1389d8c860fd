"""BAGEL T2I on the CPU: the UniCorn Solver's shape (prompts x 8 rollouts, text-CFG scale spread 3..8, CFG on every
step, shift 3, text CFG only) with every branch of every rollout in one forward per step (BagelInference), against
the official loop's shape on the same cached contexts (one image at a time, one forward per branch). Both in the
same run, same noise; the rows record the max latent difference between them.

    PYTHONPATH=. python bench/bagel_t2i.py --preset tiny --prompts 2 --steps 10 --size 64
"""
from __future__ import annotations

import argparse
import time

import torch

from bench.common import device_name, versions, write_rows
from unicorn.models.bagel_flow import FlowParams
from unicorn.models.bagel_infer import BagelInference, ImageJob
from unicorn.models.bagel_tiny import build_random_bagel


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--rollouts", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10, help="num_timesteps (forwards per branch = steps - 1)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--out", default="bench/results/bagel_t2i.jsonl")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = build_random_bagel(args.preset, dtype=torch.float32, seed=0)
    infer = BagelInference(model)
    gen = torch.Generator().manual_seed(1)
    tokens = (args.size // 16) ** 2
    scales = torch.linspace(3.0, 8.0, args.rollouts).tolist()  # method.md §2: the official spread
    uncond = infer.new_context()  # empty: shared by every request
    jobs = []
    for _ in range(args.prompts):
        ctx = infer.new_context()
        infer.add_text([ctx], [torch.randint(0, 400, (24,), generator=gen).tolist()])
        for s in scales:
            params = FlowParams(num_timesteps=args.steps, timestep_shift=3.0, cfg_text_scale=s, cfg_img_scale=1.0,
                                cfg_interval=(0.0, 1.0))
            jobs.append(ImageJob(ctx, uncond, args.size, args.size, torch.randn(tokens, 64, generator=gen), params))
    timings = {}
    outputs = {}
    for name, run in (("official_loop", infer.generate_images_sequential), ("batched", infer.generate_images)):
        t0 = time.perf_counter()
        outputs[name] = run(jobs)
        timings[name] = time.perf_counter() - t0
    diff = max(float((a - b).abs().max()) for a, b in zip(outputs["batched"], outputs["official_loop"]))
    config = dict(preset=args.preset, prompts=args.prompts, rollouts=args.rollouts, num_timesteps=args.steps,
                  size=args.size, threads=torch.get_num_threads(), max_latent_diff=diff)
    rows = [dict(bench="bagel_t2i", provider=name, metric="images_per_s", value=len(jobs) / sec, unit="img/s",
                 config=config, device=device_name(), versions=versions()) for name, sec in timings.items()]
    write_rows(args.out, rows)
    for row in rows:
        print(f"{row['provider']:>14}: {row['value']:.2f} img/s")
    print(f"speedup {timings['official_loop'] / timings['batched']:.2f}x, max latent diff {diff:.2e}")


if __name__ == "__main__":
    main()
