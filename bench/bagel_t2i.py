"""BAGEL T2I and judge throughput, every provider in the same run on the same weights, CPU or GPU.

T2I: the UniCorn Solver's shape (prompts x 8 rollouts, text-CFG scale spread 3..8, CFG on every step, shift 3,
text CFG only), same noise for every provider (rows record the max latent difference to the official loop):
``official_loop`` (the official loop's shape on cached contexts: one image at a time, one forward per branch),
``batched`` (BagelInference: every branch of every rollout in one forward per step) and ``engine``
(Engine.generate_images: paged KV, the contexts prefilled once, step-granularity batching). Each provider is
warmed up on one prompt's rollouts at the same size for one step (2 timesteps) before it is timed.
``--configs 512:20,1024:50:2`` times several SIZE:STEPS[:ROLLOUTS] settings after one model build (rows written
as each provider finishes); every config prints s/img, the denoising FLOPs counted from the shapes
(bench/roofline.py), the TFLOP/s reached next to the device's (datasheet and measured, bench/device_stats.py)
and the peak memory of each provider.

Judge: ``--judge N`` requests in the UniCorn judge's layout (method.md "Judge"): the ViT image, then one text
segment of ``--judge-prompt-tokens`` tokens (default 228: a rendered unicorn-official rubric prompt, see
JUDGE_PROMPT_TOKENS), then greedy decoding of each length in ``--judge-tokens`` (a sweep, default 64,256,1024; the
official judge allows up to 2048) with EOS ignored so every provider decodes the same count. Token content is random,
as are the weights. ``engine`` (all submitted at once) against batch 1: ``engine`` with max_num_seqs=1, and the
official shape (BagelInference on cached contexts, one request at a time). Each provider first runs the same
warm-up (2 other requests, 4 reply tokens); rows also split each provider's time into prefill and decode forwards.

    PYTHONPATH=. python bench/bagel_t2i.py --preset cpu-small --prompts 2 --steps 10 --size 128 --judge 16 \
        --judge-tokens 64,256,1024
    PYTHONPATH=. python bench/bagel_t2i.py --preset bagel-7b-mot --device cuda --dtype bfloat16 --prompts 1 \
        --configs 512:20:8,1024:50:2          # a GPU (bench/gpu/run.sh); weights built on the device
"""
from __future__ import annotations

import argparse
import gc
import time
from collections import defaultdict

import torch

from bench.common import device_name, run_stamp, versions, write_rows
from bench.device_stats import Monitor, device_peaks
from bench.roofline import bagel_denoise_flops
from unicorn.engine.llm_engine import Engine
from unicorn.engine.params import ImageGenParams, SamplingParams
from unicorn.models.bagel_flow import FlowParams
from unicorn.models.bagel_infer import BagelInference, ImageJob
from unicorn.models.bagel_tiny import build_random_bagel

PROVIDERS = ("official_loop", "engine", "batched")  # the order they run in
# The text after the judge's image: unicorn-official's judge template rendered for each of its 30 seed prompts
# (10 categories x 3; Recipe.render_judge) is 206-241 tokens under Qwen2's BPE (151,643 ranks, Qwen2's split
# regex), median 228; the tiny models' own tokenizers are near byte-level and would count about 3x that.
JUDGE_PROMPT_TOKENS = 228
JUDGE_WARM_REQUESTS, JUDGE_WARM_TOKENS = 2, 4  # every judge provider's warm-up, on other requests


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--rollouts", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10, help="num_timesteps (forwards per branch = steps - 1)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--configs", default=None,
                    help="SIZE:STEPS[:ROLLOUTS],... timed in turn (default: --size:--steps:--rollouts)")
    ap.add_argument("--providers", default=",".join(PROVIDERS),
                    help="T2I providers, comma-separated (official_loop always runs: it is the baseline)")
    ap.add_argument("--judge", type=int, default=0, help="judge requests (0: no judge rows)")
    ap.add_argument("--judge-tokens", default="64,256,1024",
                    help="reply tokens per judge request, comma-separated: one set of rows per length")
    ap.add_argument("--judge-prompt-tokens", type=int, default=JUDGE_PROMPT_TOKENS,
                    help="text tokens after the image (default: a rendered unicorn-official rubric prompt)")
    ap.add_argument("--judge-image", type=int, default=224, help="ViT image side in px (clipped to the table)")
    ap.add_argument("--no-engine", action="store_true", help="T2I without the engine row")
    ap.add_argument("--out", default="bench/results/bagel_t2i.jsonl")
    args = ap.parse_args()
    providers = [p for p in args.providers.split(",") if p]
    unknown = [p for p in providers if p not in PROVIDERS]
    if unknown:
        ap.error(f"unknown provider {unknown[0]!r}; known: {', '.join(PROVIDERS)}")
    args.providers = [p for p in PROVIDERS if p in providers or p == "official_loop"]
    if args.no_engine and "engine" in args.providers:
        args.providers.remove("engine")
    try:
        args.judge_tokens = [int(x) for x in args.judge_tokens.split(",") if x]
        assert args.judge_tokens and min(args.judge_tokens) >= 1 and args.judge_prompt_tokens >= 1
    except (ValueError, AssertionError):
        ap.error(f"--judge-tokens takes positive counts separated by commas, got {args.judge_tokens!r}")
    try:
        specs = ([[int(x) for x in c.split(":")] for c in args.configs.split(",")] if args.configs
                 else [[args.size, args.steps]])
        args.configs = [(c[0], c[1], c[2] if len(c) > 2 else args.rollouts) for c in specs if 2 <= len(c) <= 3]
        assert len(args.configs) == len(specs)
    except (ValueError, AssertionError):
        ap.error(f"--configs takes SIZE:STEPS[:ROLLOUTS] separated by commas, got {args.configs!r}")
    return args


def main() -> None:
    args = parse_args()
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    device = device_name(args.device)
    print(f"device {device}; {', '.join(f'{k} {v}' for k, v in versions().items())}")
    peaks = device_peaks(args.device, dtype)
    with Monitor(args.device) as build:
        model = build_random_bagel(args.preset, device=args.device, dtype=dtype, seed=0)
    print(f"{args.preset} built on {args.device} in {args.dtype}: {build.seconds:.1f}s, "
          f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters; {build.describe()}")
    stamp = run_stamp()  # one time for every row of the run, written as each provider finishes
    for size, steps, rollouts in args.configs:
        _t2i(model, args, size, steps, rollouts, device, peaks, stamp)
    if args.judge:
        write_rows(args.out, _judge(model, BagelInference(model), args), stamp=stamp)
    print(f"rows appended to {args.out}")


def _jobs(infer, args, size, steps, rollouts, seed_base=0, prompts=None):
    """prompts x rollouts ImageJobs over prefilled contexts (the empty uncond context shared), with the engine's
    noise; returns (jobs, prompts, seeds, scales)."""
    gen = torch.Generator().manual_seed(1 + seed_base)
    tokens = (size // 16) ** 2
    scales = torch.linspace(3.0, 8.0, rollouts).tolist()  # method.md §2: the official spread
    uncond = infer.new_context()  # empty: shared by every request
    jobs, prompt_ids, seeds = [], [], []
    for k in range(args.prompts if prompts is None else prompts):
        prompt_ids.append(torch.randint(0, 400, (24,), generator=gen).tolist())
        seeds.append([seed_base + 1000 * k + i for i in range(rollouts)])
        ctx = infer.new_context()
        infer.add_text([ctx], [prompt_ids[-1]])
        for s, seed in zip(scales, seeds[-1]):
            params = FlowParams(num_timesteps=steps, timestep_shift=3.0, cfg_text_scale=s, cfg_img_scale=1.0,
                                cfg_interval=(0.0, 1.0))
            noise = torch.randn(tokens, 64, generator=torch.Generator().manual_seed(seed))  # the engine's noise
            jobs.append(ImageJob(ctx, uncond, size, size, noise, params))
    return jobs, prompt_ids, seeds, scales


def _t2i(model, args, size, steps, rollouts, device, peaks, stamp) -> None:
    """Times each provider on one config and writes its rows as soon as it is done (a killed run keeps them)."""
    infer = BagelInference(model)
    jobs, prompts, seeds, scales = _jobs(infer, args, size, steps, rollouts)
    # the warm-up: the same shape (one prompt's rollouts, all branches) for one step, on another prompt
    warm_jobs, warm_prompts, warm_seeds, warm_scales = _jobs(infer, args, size, 2, rollouts, seed_base=10**6, prompts=1)
    flops = sum(bagel_denoise_flops(model, size, size, job.params, job.context.length, job.cfg_text_context.length)
                for job in jobs)
    config = dict(preset=args.preset, prompts=args.prompts, rollouts=rollouts, num_timesteps=steps, size=size,
                  dtype=args.dtype, threads=torch.get_num_threads())
    common = dict(bench="bagel_t2i", device=device, versions=versions())
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    print(f"\n== {size}x{size}, {steps} timesteps, {args.prompts} prompt(s) x {rollouts} rollouts "
          f"({len(jobs)} images): {flops / len(jobs) / 1e12:.3g} TFLOP of denoising per image; weights "
          f"{weights:.1f} GiB ==")
    rows = [dict(common, provider="workload", config=config, metric="denoise_tflop_per_image",
                 value=flops / len(jobs) / 1e12, unit="TFLOP"),
            dict(common, provider="model", config=config, metric="weights_gib", value=weights, unit="GiB")]
    for label in ("datasheet", "measured"):
        if peaks[f"{label}_tflops"]:
            ceiling = flops / len(jobs) / (peaks[f"{label}_tflops"] * 1e12)
            rows.append(dict(common, provider=f"limit-{label}", config=config, metric="s_per_image", value=ceiling,
                             unit="s"))
            print(f"  ceiling at the {label} {peaks[f'{label}_tflops']:.3g} TFLOP/s: {ceiling:.3g} s/img")
    write_rows(args.out, rows, stamp=stamp)
    runs = {"official_loop": infer.generate_images_sequential, "batched": infer.generate_images,
            "engine": lambda js: _engine_t2i(model, prompts, seeds, scales, size, steps, args.device)}
    warm = {"official_loop": lambda: infer.generate_images_sequential(warm_jobs),
            "batched": lambda: infer.generate_images(warm_jobs),
            "engine": lambda: _engine_t2i(model, warm_prompts, warm_seeds, warm_scales, size, 2, args.device)}
    sheet, measured = peaks["datasheet_tflops"], peaks["measured_tflops"]
    print(f"  {'provider':<14} {'img/s':>8} {'s/img':>8} {'TFLOP/s':>8} {'of sheet':>9} {'of measured':>12} "
          f"{'peak GiB':>9} {'vs official':>12}  max latent diff  (peak: torch's allocator on a GPU, RSS on a CPU)")
    baseline = baseline_s = None
    for name in args.providers:
        try:
            warm[name]()
            with Monitor(args.device) as monitor:
                out = runs[name](jobs)
        except Exception as e:  # e.g. out of memory: the other providers' rows stand
            print(f"  {name} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            continue
        finally:
            if args.device.startswith("cuda"):
                gc.collect()
                torch.cuda.empty_cache()
        sec = monitor.seconds
        if name == "official_loop":
            baseline, baseline_s = out, sec
        diff = (max(float((a.float() - b.to(a.device).float()).abs().max()) for a, b in zip(out, baseline))
                if baseline is not None else float("nan"))
        cfg = dict(config, max_latent_diff=diff)
        tflops = flops / sec / 1e12
        share = f"{100 * tflops / sheet:8.0f}%" if sheet else f"{'-':>9}"
        speedup = baseline_s / sec if baseline_s else None
        print(f"  {name:<14} {len(jobs) / sec:8.3f} {sec / len(jobs):8.2f} {tflops:8.3g} {share} "
              f"{100 * tflops / measured:11.0f}% {monitor.peak_gib:9.1f} "
              f"{(f'{speedup:11.2f}x' if speedup else f'{chr(45):>12}')}  {diff:.1e}")
        base = dict(common, provider=name, config=cfg)
        rows = [dict(base, metric="images_per_s", value=len(jobs) / sec, unit="img/s"),
                dict(base, metric="s_per_image", value=sec / len(jobs), unit="s"),
                dict(base, metric="denoise_tflops", value=tflops, unit="TFLOP/s")]
        if sheet:
            rows.append(dict(base, metric="mfu_datasheet", value=tflops / sheet, unit="fraction"))
        if speedup and name != "official_loop":
            rows.append(dict(base, metric="speedup_vs_official_loop", value=speedup, unit="x"))
        rows += monitor.rows(dict(common, config=cfg), name)
        write_rows(args.out, rows, stamp=stamp)


def _engine(model, device="cpu", **kwargs) -> Engine:
    return Engine("<random bagel>", model=model, device=device, num_kv_blocks=kwargs.pop("num_kv_blocks", 2048),
                  block_size=16, **kwargs)


def _engine_t2i(model, prompts, seeds, scales, size, steps, device) -> list[torch.Tensor]:
    ids = model.token_ids
    params = [ImageGenParams(n=len(scales), cfg_scale=scales, seed=s, num_timesteps=steps, timestep_shift=3.0,
                             cfg_img_scale=1.0, cfg_interval=(0.0, 1.0), height=size, width=size,
                             decode=False)  # the other providers stop at the latents too
              for s in seeds]
    tokens_per_step = len(prompts) * len(scales) * 2 * ((size // 16) ** 2 + 2)
    blocks = max(2048, 2 * -(-tokens_per_step // 16) + 16 * len(prompts))  # query rows + their prompts' blocks
    with _engine(model, device=device, num_kv_blocks=blocks,
                 max_num_batched_tokens=max(4096, tokens_per_step)) as engine:
        request_ids = [engine.submit_image([ids.im_start, *p, ids.im_end], q) for p, q in zip(prompts, params)]
        done = engine.run()
        outs = [done[i] for i in request_ids]
    for out in outs:
        if out.error:
            raise RuntimeError(out.error)
    return [x for out in outs for x in out.latents]


def _judge(model, infer, args) -> list[dict]:
    """One set of rows per reply length in ``--judge-tokens``: requests/s of each provider, its prefill and decode
    seconds, and the engine's speedups over both batch-1 shapes."""
    arch = model.arch
    side = min(args.judge_image, arch.vit_max_num_patch_per_side * arch.vit.patch_size)
    side -= side % arch.vit.patch_size
    requests = _judge_requests(model, args.judge, side, args.judge_prompt_tokens, seed=2)
    warm = _judge_requests(model, JUDGE_WARM_REQUESTS, side, args.judge_prompt_tokens, seed=3)
    rows = []
    for max_tokens in args.judge_tokens:
        rows += _judge_one(model, infer, args, requests, warm, side, max_tokens)
    return rows


def _judge_requests(model, n: int, side: int, prompt_tokens: int, seed: int) -> list[tuple[torch.Tensor, list[int]]]:
    """n (image [3, side, side], text ids) pairs of random content (the weights are random too)."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.rand(3, side, side, generator=gen) * 2 - 1,
             torch.randint(0, 400, (prompt_tokens,), generator=gen).tolist()) for _ in range(n)]


def _judge_prompt(model, side: int, image: torch.Tensor, text: list[int]) -> dict:
    """The judge's layout (bagel_chat): the image block, the rubric text as one segment, then ``<|im_start|>``."""
    ids = model.token_ids
    n_vit = (side // model.arch.vit.patch_size) ** 2
    return {"prompt_token_ids": [ids.vision_start, *[ids.image_pad] * n_vit, ids.vision_end, ids.im_start, *text,
                                 ids.im_end, ids.im_start], "images": [image]}


def _official_judge(infer, requests, max_tokens: int, phases: dict[str, float]) -> list[list[int]]:
    """The official shape: one request at a time on a cached context (prefill, then greedy decode)."""
    outs = []
    for image, text in requests:
        start = time.perf_counter()
        ctx = infer.new_context()
        infer.add_vit_images([ctx], [image.to(infer.device)])
        infer.add_text([ctx], [text])
        mid = time.perf_counter()
        outs += infer.generate_text([ctx], max_tokens=max_tokens)
        phases["prefill"] += mid - start
        phases["decode"] += time.perf_counter() - mid
    return outs


def _engine_judge(engine, prompts, params, phases: dict[str, float]) -> list[list[int]]:
    """Engine.generate, with the forward time of each step added to ``phases``: "prefill" for a step that holds a
    prompt chunk (decode rows riding along included), "decode" for one of decode rows only."""
    execute = engine.runner.execute

    def timed(out):
        start = time.perf_counter()
        sampled = execute(out)
        phases["prefill" if any(r.num_new_tokens > 1 for r in out.rows) else "decode"] += time.perf_counter() - start
        return sampled

    engine.runner.execute = timed
    try:
        return [o.token_ids for o in engine.generate(prompts, params)]
    finally:
        engine.runner.execute = execute


def _judge_one(model, infer, args, requests, warm, side: int, max_tokens: int) -> list[dict]:
    prompts = [_judge_prompt(model, side, image, text) for image, text in requests]
    warm_prompts = [_judge_prompt(model, side, image, text) for image, text in warm]
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    warm_params = SamplingParams(temperature=0.0, max_tokens=JUDGE_WARM_TOKENS, ignore_eos=True)
    per_request = len(prompts[0]["prompt_token_ids"]) + max_tokens
    blocks = max(2048, len(prompts) * -(-per_request // 16) + 16)
    timings, tokens, phases = {}, {}, {}
    for name, kwargs in (("engine", {}), ("engine_batch1", dict(max_num_seqs=1))):
        with _engine(model, device=args.device, num_kv_blocks=blocks, **kwargs) as engine:
            _engine_judge(engine, warm_prompts, warm_params, defaultdict(float))  # every provider: the same warm-up
            phases[name] = defaultdict(float)
            with Monitor(args.device) as monitor:
                tokens[name] = _engine_judge(engine, prompts, params, phases[name])
        timings[name] = monitor.seconds
    _official_judge(infer, warm, JUDGE_WARM_TOKENS, defaultdict(float))
    phases["official_batch1"] = defaultdict(float)
    with Monitor(args.device) as monitor:
        tokens["official_batch1"] = _official_judge(infer, requests, max_tokens, phases["official_batch1"])
    timings["official_batch1"] = monitor.seconds
    n_vit = (side // model.arch.vit.patch_size) ** 2
    config = dict(preset=args.preset, requests=len(requests), image=side, image_tokens=n_vit,
                  prompt_tokens=args.judge_prompt_tokens, max_tokens=max_tokens, threads=torch.get_num_threads(),
                  same_tokens_as_batch1=tokens["engine"] == tokens["engine_batch1"],
                  official_decoded_tokens=sum(map(len, tokens["official_batch1"])),
                  same_tokens_as_official=tokens["engine"] == tokens["official_batch1"])
    device, vers = device_name(args.device), versions()

    def row(provider, metric, value, unit):
        return dict(bench="bagel_judge", provider=provider, metric=metric, value=value, unit=unit, config=config,
                    device=device, versions=vers)

    rows = []
    print(f"\n== judge: {len(requests)} requests of {n_vit} image + {args.judge_prompt_tokens} text tokens, "
          f"{max_tokens} reply tokens ==")
    print(f"  {'provider':<16} {'req/s':>8} {'s':>8} {'prefill s':>10} {'decode s':>9} {'other s':>8}")
    for name, sec in timings.items():
        p = phases[name]
        print(f"  {name:<16} {len(requests) / sec:8.2f} {sec:8.2f} {p['prefill']:10.2f} {p['decode']:9.2f} "
              f"{sec - p['prefill'] - p['decode']:8.2f}")
        rows += [row(name, "requests_per_s", len(requests) / sec, "req/s"), row(name, "prefill_s", p["prefill"], "s"),
                 row(name, "decode_s", p["decode"], "s")]
    rows += [row("engine", f"speedup_vs_{base}", timings[base] / timings["engine"], "x")
             for base in ("engine_batch1", "official_batch1")]
    vs_b1, vs_official = (timings[b] / timings["engine"] for b in ("engine_batch1", "official_batch1"))
    print(f"  judge speedup at {max_tokens} reply tokens: {vs_b1:.2f}x vs engine batch 1, {vs_official:.2f}x vs the "
          f"official shape; same tokens as batch 1: {config['same_tokens_as_batch1']}; as the official shape: "
          f"{config['same_tokens_as_official']} "
          f"(it decoded {config['official_decoded_tokens']} of {len(requests) * max_tokens})")
    return rows


if __name__ == "__main__":
    main()
