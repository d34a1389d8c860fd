"""Images/s of the engine vs transformers' JanusForConditionalGeneration.generate, in the same run.

Workload (the `engine-core` issue): P prompts x N rollouts, CFG 5, temperature 1, random weights at the
given preset's shapes. transformers gets its best use: the faster of one prompt per call with N return
sequences, or all prompts in one call (left-padded). Token generation and VQ decoding are timed apart.

    python bench/janus_images.py --preset janus-mid --prompts 8 --rollouts 8          # CPU
    python bench/janus_images.py --preset janus-pro-7b --device cuda --dtype bfloat16  # a GPU
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, versions, write_rows  # noqa: E402


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
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "janus_images.jsonl"))
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)

    from unicorn import Engine, ImageGenParams
    from unicorn.models.janus_tiny import write_random_janus_checkpoint

    workdir = Path(tempfile.mkdtemp(prefix="unicorn-bench-"))
    path = workdir / args.preset
    write_random_janus_checkpoint(path, preset=args.preset, seed=0)

    engine = Engine(str(path), device=args.device, dtype=dtype,
                    max_num_seqs=max(256, 2 * args.prompts * args.rollouts))
    prompts = make_prompts(engine.tokenizer, args.prompts)
    num_images = args.prompts * args.rollouts
    params = ImageGenParams(n=args.rollouts, cfg_scale=5.0, temperature=1.0, seed=0)
    engine.generate_images(prompts[:1], ImageGenParams(n=1, seed=1))  # warm-up (allocator, kernels)
    request_ids = [engine.submit_image(p, params) for p in prompts]
    sync(args.device)
    start = time.perf_counter()
    finished = {}
    while engine.has_unfinished():
        finished.update((o.request_id, o) for o in engine.step() if o.finished)
    sync(args.device)
    engine_tokens_s = time.perf_counter() - start
    codes = torch.cat([finished[i].image_tokens for i in request_ids])
    start = time.perf_counter()
    engine.runner.decode_images(codes)
    sync(args.device)
    engine_decode_s = time.perf_counter() - start
    stats = engine.stats
    print(f"engine: {num_images} images, tokens {engine_tokens_s:.1f}s ({num_images / engine_tokens_s:.3f} img/s), "
          f"VQ decode {engine_decode_s:.1f}s; steps {stats.num_steps}, preemptions {stats.num_preemptions}, "
          f"prefix hits {stats.prefix_hit_tokens}/{stats.prefix_query_tokens} tokens")
    prompt_ids = [engine.prompts.image(p) for p in prompts]
    del engine

    config = {"preset": args.preset, "prompts": args.prompts, "rollouts": args.rollouts, "cfg": 5.0,
              "temperature": 1.0, "dtype": args.dtype}
    common = {"bench": "janus_images", "device": device_name(args.device), "versions": versions(), "config": config}
    rows = [
        {**common, "provider": "unicorn", "metric": "img_per_s_tokens", "value": num_images / engine_tokens_s, "unit": "img/s"},
        {**common, "provider": "unicorn", "metric": "vq_decode_s", "value": engine_decode_s, "unit": "s"},
    ]
    if not args.skip_transformers:
        hf_tokens_s, mode = time_transformers(path, prompt_ids, args, dtype)
        print(f"transformers ({mode}): tokens {hf_tokens_s:.1f}s ({num_images / hf_tokens_s:.3f} img/s)")
        rows.append({**common, "provider": f"transformers-{mode}", "metric": "img_per_s_tokens",
                     "value": num_images / hf_tokens_s, "unit": "img/s"})
        ratio = hf_tokens_s / engine_tokens_s
        rows.append({**common, "provider": "unicorn", "metric": "speedup_vs_transformers", "value": ratio, "unit": "x"})
        print(f"speed-up vs transformers' best: {ratio:.2f}x")
    write_rows(args.out, rows)
    print(f"rows appended to {args.out}")


def time_transformers(path, prompt_ids, args, dtype) -> tuple[float, str]:
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
    return timings[mode], mode


if __name__ == "__main__":
    main()
