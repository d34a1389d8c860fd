"""Images/s of the engine vs transformers' JanusForConditionalGeneration.generate, in the same run.

Workload (the `engine-core` issue): P prompts x N rollouts, CFG 5, temperature 1, random weights at the
given preset's shapes. transformers gets its best use: the faster of one prompt per call with N return
sequences, or all prompts in one call (left-padded). Token generation (the engine with ``decode=False``) and VQ
decoding are timed apart; ``--hf-decode`` also times transformers' VQ decoder on the same codes, for the end-to-end
ratio. On a CPU the bench prints where the engine's step time goes next to this machine's limits (bench/step_profile.py:
measured matmul GFLOP/s and memory bandwidth, FLOPs and bytes counted in the run).

    python bench/janus_images.py --preset janus-mid --prompts 8 --rollouts 8          # CPU
    python bench/janus_images.py --preset janus-pro-7b --device cuda --dtype bfloat16  # a GPU
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, versions, write_rows  # noqa: E402
from step_profile import StepProfile, count_flops, measure_machine  # noqa: E402


def make_prompts(tokenizer, count: int) -> list[str]:
    subjects = ["a red fox", "two blue cups", "a castle at dusk", "the word HELLO on a sign", "a bowl of lemons",
                "a cat under a table", "three stars above a lake", "an old green bicycle", "a tiny robot",
                "a stormy sea"]
    return [f"{subjects[i % len(subjects)]}, variant {i}" for i in range(count)]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="janus-mid")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--rollouts", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--hf-mode", choices=["auto", "per-prompt", "batched"], default="auto",
                        help="auto: time both and keep the faster")
    parser.add_argument("--hf-decode", action="store_true", help="also time transformers' VQ decoder")
    parser.add_argument("--breakdown", choices=["auto", "on", "off"], default="auto",
                        help="per-step time breakdown (auto: on a CPU only; on CUDA it syncs every region)")
    parser.add_argument("--engine-kwargs", default="{}", help="JSON of extra Engine(...) arguments, e.g. a lever off")
    parser.add_argument("--decode-images", type=int, default=0,
                        help="time VQ decoding on the first N images and scale to all (0: all)")
    parser.add_argument("--compare", action="store_true",
                        help="also time the hot path before issue 14's levers (same run, same warm-up)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "janus_images.jsonl"))
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)

    from unicorn.models.janus_tiny import write_random_janus_checkpoint

    workdir = Path(tempfile.mkdtemp(prefix="unicorn-bench-"))
    path = workdir / args.preset
    write_random_janus_checkpoint(path, preset=args.preset, seed=0)

    engine_kwargs = json.loads(args.engine_kwargs)
    num_images = args.prompts * args.rollouts
    breakdown = args.breakdown == "on" or (args.breakdown == "auto" and not args.device.startswith("cuda"))
    previous = None
    if args.compare:  # the hot path before issue 14's levers, same warm-up, same run
        previous = run_engine(path, args, dtype, {**engine_kwargs, **PREVIOUS_KWARGS}, breakdown, previous=True)
    current = run_engine(path, args, dtype, engine_kwargs, breakdown)
    engine_tokens_s, engine_decode_s, codes, prompt_ids, figures, machine = current
    if previous is not None:
        print(f"current vs previous hot path (same run): tokens {previous[0] / engine_tokens_s:.2f}x faster "
              f"({previous[0]:.1f}s -> {engine_tokens_s:.1f}s); codes equal: {torch.equal(previous[2], codes)}")

    config = {"preset": args.preset, "prompts": args.prompts, "rollouts": args.rollouts, "cfg": 5.0,
              "temperature": 1.0, "dtype": args.dtype, "threads": torch.get_num_threads()}
    if breakdown:  # the limits' method (earlier rows: FLOPs only, peaks from a few long repeats)
        config["limits"] = "gemm roofline, peaks best of many short repeats"
    if args.decode_images:
        config["decode_timed_on_images"] = min(args.decode_images, num_images)
    if engine_kwargs:
        config["engine_kwargs"] = engine_kwargs
    common = {"bench": "janus_images", "device": device_name(args.device), "versions": versions(), "config": config}
    rows = [
        {**common, "provider": "unicorn", "metric": "img_per_s_tokens", "value": num_images / engine_tokens_s, "unit": "img/s"},
        {**common, "provider": "unicorn", "metric": "vq_decode_s", "value": engine_decode_s, "unit": "s"},
    ]
    if figures is not None:
        rows += [
            {**common, "provider": "limit", "metric": "img_per_s_tokens", "value": figures["token_limit_img_per_s"],
             "unit": "img/s"},
            {**common, "provider": "unicorn", "metric": "share_of_token_limit", "value": figures["token_share_of_limit"],
             "unit": "fraction"},
            {**common, "provider": "machine", "metric": "gemm_gflops", "value": machine["gemm_gflops"], "unit": "GFLOP/s"},
            {**common, "provider": "machine", "metric": "read_gbs", "value": machine["read_gbs"], "unit": "GB/s"},
        ]
        rows += [{**common, "provider": "unicorn", "metric": f"step_time_s:{part}", "value": seconds, "unit": "s"}
                 for part, seconds in figures["parts_s"].items()]
        rows += [{**common, "provider": "limit", "metric": f"step_time_s:{part}", "value": seconds, "unit": "s"}
                 for part, seconds in figures["limits_s"].items()]
        if "decode_limit_s" in figures:
            rows.append({**common, "provider": "limit", "metric": "vq_decode_s", "value": figures["decode_limit_s"],
                         "unit": "s"})
    if previous is not None:
        rows += [
            {**common, "provider": "unicorn-previous", "metric": "img_per_s_tokens", "value": num_images / previous[0],
             "unit": "img/s"},
            {**common, "provider": "unicorn", "metric": "speedup_vs_previous", "value": previous[0] / engine_tokens_s,
             "unit": "x"},
        ]
        if previous[4] is not None:
            rows += [{**common, "provider": "unicorn-previous", "metric": f"step_time_s:{part}", "value": seconds,
                      "unit": "s"} for part, seconds in previous[4]["parts_s"].items()]
    if not args.skip_transformers:
        hf_tokens_s, mode, hf_decode_s = time_transformers(path, prompt_ids, args, dtype, codes)
        print(f"transformers ({mode}): tokens {hf_tokens_s:.1f}s ({num_images / hf_tokens_s:.3f} img/s)")
        rows.append({**common, "provider": f"transformers-{mode}", "metric": "img_per_s_tokens",
                     "value": num_images / hf_tokens_s, "unit": "img/s"})
        ratio = hf_tokens_s / engine_tokens_s
        rows.append({**common, "provider": "unicorn", "metric": "speedup_vs_transformers", "value": ratio, "unit": "x"})
        print(f"speed-up vs transformers' best: {ratio:.2f}x")
        if figures is not None:
            print(f"transformers reaches {100 * figures['token_limit_img_per_s'] ** -1 * num_images / hf_tokens_s:.0f}% "
                  "of the same tokens limit")
        if hf_decode_s is not None:
            engine_e2e, hf_e2e = engine_tokens_s + engine_decode_s, hf_tokens_s + hf_decode_s
            print(f"transformers VQ decode {hf_decode_s:.1f}s; end to end {num_images / engine_e2e:.3f} vs "
                  f"{num_images / hf_e2e:.3f} img/s: {hf_e2e / engine_e2e:.2f}x")
            rows += [
                {**common, "provider": "transformers", "metric": "vq_decode_s", "value": hf_decode_s, "unit": "s"},
                {**common, "provider": "unicorn", "metric": "img_per_s_end_to_end", "value": num_images / engine_e2e,
                 "unit": "img/s"},
                {**common, "provider": f"transformers-{mode}", "metric": "img_per_s_end_to_end",
                 "value": num_images / hf_e2e, "unit": "img/s"},
                {**common, "provider": "unicorn", "metric": "speedup_end_to_end", "value": hf_e2e / engine_e2e,
                 "unit": "x"},
            ]
    write_rows(args.out, rows)
    print(f"rows appended to {args.out}")


# The engine as it was before issue 14's levers (each lever's switch off), for --compare: logits mixed after the
# head (cfg_head_mix=False), the one-pass sampling op after torch's CFG, separate q/k/v and gate/up GEMMs.
# The codes may differ: the head mix rounds differently, and a sampled token that flips changes the rest.
PREVIOUS_KWARGS = {"cfg_head_mix": False}


def run_engine(path, args, dtype, engine_kwargs, breakdown, previous=False):
    """Times token generation (decode=False) and then VQ decoding of the same codes; on request a step
    breakdown. Returns (tokens_s, decode_s, codes, prompt_ids, figures or None, machine or None)."""
    from unicorn import Engine, ImageGenParams

    engine = Engine(str(path), device=args.device, dtype=dtype,
                    max_num_seqs=max(256, 2 * args.prompts * args.rollouts), **engine_kwargs)
    if previous:
        from unicorn.models.layers import FusedLinears

        engine.runner.sampler.fused = False
        for module in engine.model.modules():
            for value in vars(module).values():
                if isinstance(value, FusedLinears):
                    value.enabled = False
    label = "engine (previous hot path)" if previous else "engine"
    prompts = make_prompts(engine.tokenizer, args.prompts)
    num_images = args.prompts * args.rollouts
    params = ImageGenParams(n=args.rollouts, cfg_scale=5.0, temperature=1.0, seed=0, decode=False)
    engine.generate_images(prompts[:1], ImageGenParams(n=1, seed=1))  # warm-up (allocator, kernels)
    profile = StepProfile().attach(engine) if breakdown else None
    request_ids = [engine.submit_image(p, params) for p in prompts]
    sync(args.device)
    start = time.perf_counter()
    finished = {}
    while engine.has_unfinished():
        finished.update((o.request_id, o) for o in engine.step() if o.finished)
    sync(args.device)
    tokens_s = time.perf_counter() - start
    if profile is not None:
        profile.detach()
    codes = torch.cat([finished[i].image_tokens for i in request_ids])
    decode_s = None
    if not previous:  # the levers leave VQ decoding alone: time it once
        decode_codes = codes[: args.decode_images or len(codes)]
        start = time.perf_counter()
        engine.runner.decode_images(decode_codes)
        sync(args.device)
        decode_s = (time.perf_counter() - start) * len(codes) / len(decode_codes)  # for all the images
    stats = engine.stats
    print(f"{label}: {num_images} images, tokens {tokens_s:.1f}s ({num_images / tokens_s:.3f} img/s), "
          + (f"VQ decode {decode_s:.1f}s; " if decode_s is not None else "") + f"steps {stats.num_steps}, preemptions {stats.num_preemptions}, "
          f"prefix hits {stats.prefix_hit_tokens}/{stats.prefix_query_tokens} tokens")
    figures = machine = None
    if profile is not None:
        decode_flops = None if previous else count_flops(lambda: engine.runner.decode_images(codes[:1])) * len(codes)
        shapes = sorted(profile.gemm_shapes, key=lambda s: -profile.gemm_shapes[s] * s[0] * s[1] * s[2])[:3]
        shapes = [shape[:3] for shape in shapes]
        machine = measure_machine(dtype, shapes)
        print(f"machine ({machine['threads']} thread(s), {machine['dtype']}): matmul {machine['gemm_gflops_512']:.0f} "
              f"GFLOP/s (512^3); at the run's largest GEMM shapes (M x K x N): "
              + ", ".join(f"{k} {v:.0f}" for k, v in machine["gemm_gflops_at_shapes"].items())
              + f"; memory read {machine['read_gbs']:.1f} GB/s")
        text, figures = profile.table(machine, tokens_s, decode_s, decode_flops, num_images)
        print(text)
    prompt_ids = [engine.prompts.image(p) for p in prompts]
    engine.close()
    return tokens_s, decode_s, codes, prompt_ids, figures, machine


def time_transformers(path, prompt_ids, args, dtype, codes) -> tuple[float, str, float | None]:
    from transformers import GenerationConfig, JanusForConditionalGeneration

    model = JanusForConditionalGeneration.from_pretrained(str(path), dtype=dtype).to(args.device).eval()
    spec_cfg = GenerationConfig.from_pretrained(str(path))
    pad = spec_cfg.pad_token_id

    def gen_config():
        cfg = GenerationConfig.from_pretrained(str(path))
        cfg.do_sample, cfg.temperature, cfg.top_k, cfg.top_p = True, 1.0, None, None
        cfg.guidance_scale = 5.0
        cfg.num_return_sequences = args.rollouts
        return cfg

    def per_prompt() -> float:
        sync(args.device)
        start = time.perf_counter()
        for ids in prompt_ids:
            x = torch.tensor([ids], device=args.device)
            with torch.no_grad():
                model.generate(input_ids=x, attention_mask=torch.ones_like(x), generation_mode="image",
                               generation_config=gen_config())
        sync(args.device)
        return time.perf_counter() - start

    def batched() -> float:
        width = max(len(ids) for ids in prompt_ids)
        x = torch.tensor([[pad] * (width - len(ids)) + ids for ids in prompt_ids], device=args.device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompt_ids], device=args.device)
        sync(args.device)
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(input_ids=x, attention_mask=mask, generation_mode="image", generation_config=gen_config())
        sync(args.device)
        return time.perf_counter() - start

    timings = {}
    if args.hf_mode in ("auto", "batched"):
        timings["batched"] = batched()
        print(f"  transformers batched: {timings['batched']:.1f}s")
    if args.hf_mode in ("auto", "per-prompt"):
        timings["per-prompt"] = per_prompt()
        print(f"  transformers per-prompt: {timings['per-prompt']:.1f}s")
    mode = min(timings, key=timings.get)
    decode_s = None
    if args.hf_decode:
        scale_to = len(codes)
        codes = codes[: args.decode_images or len(codes)].to(args.device)
        sync(args.device)
        start = time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(codes), 8):  # 8 a call (the engine decodes 1 a call on a CPU; bench/vq_decode.py times both)
                model.decode_image_tokens(codes[i : i + 8])
        sync(args.device)
        decode_s = (time.perf_counter() - start) * scale_to / len(codes)
    return timings[mode], mode, decode_s


if __name__ == "__main__":
    main()
