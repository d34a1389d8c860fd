"""BAGEL T2I and judge throughput on the CPU, every provider in the same run on the same weights.

T2I: the UniCorn Solver's shape (prompts x 8 rollouts, text-CFG scale spread 3..8, CFG on every step, shift 3,
text CFG only), same noise for every provider (rows record the max latent difference to the official loop):
``official_loop`` (the official loop's shape on cached contexts: one image at a time, one forward per branch),
``batched`` (BagelInference: every branch of every rollout in one forward per step) and ``engine``
(Engine.generate_images: paged KV, the contexts prefilled once, step-granularity batching).

Judge: ``--judge N`` understanding requests (a ViT image + a question, greedy, ``--judge-tokens`` tokens each, EOS
ignored so every provider decodes the same count): ``engine`` (all submitted at once) against batch 1 (``engine``
with max_num_seqs=1, and the official shape: BagelInference on cached contexts, one request at a time).

    PYTHONPATH=. python bench/bagel_t2i.py --preset cpu-small --prompts 2 --steps 10 --size 128 --judge 16
"""
from __future__ import annotations

import argparse
import time

import torch

from bench.common import device_name, versions, write_rows
from unicorn.engine.llm_engine import Engine
from unicorn.engine.params import ImageGenParams, SamplingParams
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
    ap.add_argument("--judge", type=int, default=0, help="judge requests (0: no judge rows)")
    ap.add_argument("--judge-tokens", type=int, default=32)
    ap.add_argument("--judge-image", type=int, default=224, help="ViT image side in px (clipped to the table)")
    ap.add_argument("--no-engine", action="store_true", help="T2I without the engine row")
    ap.add_argument("--out", default="bench/results/bagel_t2i.jsonl")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = build_random_bagel(args.preset, dtype=torch.float32, seed=0)
    infer = BagelInference(model)
    gen = torch.Generator().manual_seed(1)
    tokens = (args.size // 16) ** 2
    scales = torch.linspace(3.0, 8.0, args.rollouts).tolist()  # method.md §2: the official spread
    uncond = infer.new_context()  # empty: shared by every request
    jobs, prompts, seeds = [], [], []
    for k in range(args.prompts):
        prompts.append(torch.randint(0, 400, (24,), generator=gen).tolist())
        seeds.append([1000 * k + i for i in range(args.rollouts)])
        ctx = infer.new_context()
        infer.add_text([ctx], [prompts[-1]])
        for s, seed in zip(scales, seeds[-1]):
            params = FlowParams(num_timesteps=args.steps, timestep_shift=3.0, cfg_text_scale=s, cfg_img_scale=1.0,
                                cfg_interval=(0.0, 1.0))
            noise = torch.randn(tokens, 64, generator=torch.Generator().manual_seed(seed))  # the engine's noise
            jobs.append(ImageJob(ctx, uncond, args.size, args.size, noise, params))
    timings = {}
    outputs = {}
    for name, run in (("official_loop", infer.generate_images_sequential), ("batched", infer.generate_images)):
        t0 = time.perf_counter()
        outputs[name] = run(jobs)
        timings[name] = time.perf_counter() - t0
    if not args.no_engine:
        t0 = time.perf_counter()
        outputs["engine"] = _engine_t2i(model, prompts, seeds, scales, args)
        timings["engine"] = time.perf_counter() - t0
    diffs = {name: max(float((a - b).abs().max()) for a, b in zip(out, outputs["official_loop"]))
             for name, out in outputs.items()}
    config = dict(preset=args.preset, prompts=args.prompts, rollouts=args.rollouts, num_timesteps=args.steps,
                  size=args.size, threads=torch.get_num_threads())
    rows = [dict(bench="bagel_t2i", provider=name, metric="images_per_s", value=len(jobs) / sec, unit="img/s",
                 config=dict(config, max_latent_diff=diffs[name]), device=device_name(), versions=versions())
            for name, sec in timings.items()]
    for row in rows:
        print(f"t2i {row['provider']:>14}: {row['value']:.2f} img/s (max latent diff {row['config']['max_latent_diff']:.1e})")
    base = timings["official_loop"]
    print("t2i speedup vs official loop: " + ", ".join(f"{k} {base / v:.2f}x" for k, v in timings.items() if k != "official_loop"))
    if args.judge:
        rows += _judge(model, infer, args)
    write_rows(args.out, rows)


def _engine(model, **kwargs) -> Engine:
    return Engine("<random bagel>", model=model, num_kv_blocks=kwargs.pop("num_kv_blocks", 2048), block_size=16,
                  **kwargs)


def _engine_t2i(model, prompts, seeds, scales, args) -> list[torch.Tensor]:
    ids = model.token_ids
    params = [ImageGenParams(n=len(scales), cfg_scale=scales, seed=s, num_timesteps=args.steps, timestep_shift=3.0,
                             cfg_img_scale=1.0, cfg_interval=(0.0, 1.0), height=args.size, width=args.size,
                             decode=False)  # the other providers stop at the latents too
              for s in seeds]
    tokens_per_step = len(prompts) * len(scales) * 2 * ((args.size // 16) ** 2 + 2)
    with _engine(model, max_num_batched_tokens=max(4096, tokens_per_step)) as engine:
        request_ids = [engine.submit_image([ids.im_start, *p, ids.im_end], q) for p, q in zip(prompts, params)]
        done = engine.run()
        outs = [done[i] for i in request_ids]
    for out in outs:
        if out.error:
            raise RuntimeError(out.error)
    return [x for out in outs for x in out.latents]


def _judge(model, infer, args) -> list[dict]:
    gen = torch.Generator().manual_seed(2)
    ids = model.token_ids
    side = min(args.judge_image, model.arch.vit_max_num_patch_per_side * model.arch.vit.patch_size)
    side -= side % model.arch.vit.patch_size
    n_vit = (side // model.arch.vit.patch_size) ** 2
    requests = [(torch.rand(3, side, side, generator=gen) * 2 - 1, torch.randint(0, 400, (32,), generator=gen).tolist())
                for _ in range(args.judge)]
    prompts = [{"prompt_token_ids": [ids.vision_start, *[ids.image_pad] * n_vit, ids.vision_end, ids.im_start, *q,
                                     ids.im_end, ids.im_start], "images": [img]} for img, q in requests]
    params = SamplingParams(temperature=0.0, max_tokens=args.judge_tokens, ignore_eos=True)
    timings, tokens = {}, {}
    for name, kwargs in (("engine", {}), ("engine_batch1", dict(max_num_seqs=1))):
        with _engine(model, **kwargs) as engine:
            t0 = time.perf_counter()
            outs = engine.generate(prompts, params)
            timings[name] = time.perf_counter() - t0
        tokens[name] = [o.token_ids for o in outs]
    t0 = time.perf_counter()
    official = []
    for img, q in requests:  # the official shape: one request at a time on cached contexts
        ctx = infer.new_context()
        infer.add_vit_images([ctx], [img])
        infer.add_text([ctx], [q])
        official.append(infer.generate_text([ctx], max_tokens=args.judge_tokens))
    timings["official_batch1"] = time.perf_counter() - t0
    config = dict(preset=args.preset, requests=args.judge, image=side, max_tokens=args.judge_tokens,
                  threads=torch.get_num_threads(), same_tokens_as_batch1=tokens["engine"] == tokens["engine_batch1"])
    rows = [dict(bench="bagel_judge", provider=name, metric="requests_per_s", value=args.judge / sec, unit="req/s",
                 config=config, device=device_name(), versions=versions()) for name, sec in timings.items()]
    for row in rows:
        print(f"judge {row['provider']:>15}: {row['value']:.2f} req/s")
    print(f"judge speedup: {timings['engine_batch1'] / timings['engine']:.2f}x vs engine batch 1, "
          f"{timings['official_batch1'] / timings['engine']:.2f}x vs the official shape; "
          f"same tokens as batch 1: {config['same_tokens_as_batch1']}")
    return rows


if __name__ == "__main__":
    main()
