"""Images/s of the engine vs transformers' JanusForConditionalGeneration.generate, in the same run.

Workload (the `engine-core` issue): P prompts x N rollouts, CFG 5, temperature 1, random weights at the
given preset's shapes; ``--prompts 8,64`` times several workloads in turn, each workload's rows written when
they exist (an engine built and warmed up per workload; transformers built and warmed up once, freed while an
engine runs). transformers gets its best use: the faster of one prompt per call with N return sequences, or the
prompts in one call (left-padded; ``--hf-prompts K``: K prompts per call, timed once and scaled, where all do
not fit in memory).
Token generation (the engine with ``decode=False``) and VQ decoding are timed apart; ``--hf-decode`` also times
transformers' VQ decoder on the same codes, for the end-to-end ratio. Every run prints the decode's work (KV and
weight bytes, FLOPs; bench/roofline.py) against the device's bandwidth and matmul rate (datasheet and measured,
bench/device_stats.py), with peak memory and, given nvidia-ml-py, GPU utilisation. On a CPU the bench also
prints where the engine's step time goes (bench/step_profile.py).

``--weights device`` (the default on CUDA) builds the random weights on the device in the run's dtype (no weights
file; transformers' model gets the same values by name); ``files`` writes a checkpoint and both load it.

    python bench/janus_images.py --preset janus-mid --prompts 8 --rollouts 8          # CPU
    python bench/janus_images.py --preset janus-pro-7b --device cuda --dtype bfloat16 --prompts 8,64 \
        --hf-mode batched --hf-prompts 8                                              # a GPU (bench/gpu/run.sh)
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, run_stamp, versions, write_rows  # noqa: E402
from device_stats import Monitor, device_peaks  # noqa: E402
from roofline import janus_decode_work, janus_weight_bytes  # noqa: E402
from step_profile import StepProfile, count_flops, measure_machine  # noqa: E402


def make_prompts(count: int, start: int = 0) -> list[str]:
    subjects = ["a red fox", "two blue cups", "a castle at dusk", "the word HELLO on a sign", "a bowl of lemons",
                "a cat under a table", "three stars above a lake", "an old green bicycle", "a tiny robot",
                "a stormy sea"]
    return [f"{subjects[i % len(subjects)]}, variant {i}" for i in range(start, start + count)]


def warmup_shape(args, prompts: int) -> tuple[list[str], int]:
    """The warm-up every provider gets before a workload: (prompts, images per prompt). On a CPU one image; on CUDA
    the workload's shape at a smaller scale (2 prompts x the rollouts), because the Triton kernels specialise on the
    batch (decode split-K or not, partition sizes) and would otherwise compile inside the timed part. Prompts
    other than the timed ones, so no prefix-cache block of the warm-up serves the timed run."""
    if not args.device.startswith("cuda"):
        return make_prompts(1, start=10**4), 1
    return make_prompts(min(2, prompts), start=10**4), args.rollouts


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="janus-mid")
    parser.add_argument("--prompts", default="8", help="prompts per workload; a comma list times each in turn")
    parser.add_argument("--rollouts", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--weights", choices=["auto", "device", "files"], default="auto",
                        help="random weights built on the device, or written to a checkpoint and loaded "
                             "(auto: device on CUDA, files elsewhere)")
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--hf-mode", choices=["auto", "per-prompt", "batched"], default="auto",
                        help="auto: time both and keep the faster")
    parser.add_argument("--hf-prompts", type=int, default=0,
                        help="transformers timed on the first K prompts (batched: one call of K), scaled to the "
                             "workload; a later workload reuses the time (0: all prompts)")
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
    try:
        args.workloads = [int(p) for p in args.prompts.split(",")]
    except ValueError:
        parser.error(f"--prompts takes counts separated by commas, got {args.prompts!r}")
    if args.weights == "auto":
        args.weights = "device" if args.device.startswith("cuda") else "files"
    return args


def main() -> None:
    args = parse_args()
    dtype = getattr(torch, args.dtype)
    from unicorn.models.janus_tiny import write_janus_files, write_random_janus_checkpoint

    path = Path(tempfile.mkdtemp(prefix="unicorn-bench-")) / args.preset
    if args.weights == "files":
        write_random_janus_checkpoint(str(path), preset=args.preset, seed=0)
    else:
        write_janus_files(str(path), preset=args.preset, dtype=dtype)
    device = device_name(args.device)
    print(f"device {device}; {', '.join(f'{k} {v}' for k, v in versions().items())}; weights: {args.weights}")
    peaks = device_peaks(args.device, dtype)
    stamp = run_stamp()  # one time for every row of this run, though they are written in parts

    engine_kwargs = json.loads(args.engine_kwargs)
    breakdown = args.breakdown == "on" or (args.breakdown == "auto" and not args.device.startswith("cuda"))
    hf = None
    for prompts in args.workloads:  # each workload's rows are written as soon as they exist (a killed run keeps them)
        previous = None
        if args.compare:  # the hot path before issue 14's levers, same warm-up, same run
            previous = run_engine(path, args, dtype, {**engine_kwargs, **PREVIOUS_KWARGS}, breakdown, prompts, True)
        current = run_engine(path, args, dtype, engine_kwargs, breakdown, prompts)
        common = common_fields(args, device, engine_kwargs, breakdown, prompts)
        write_rows(args.out, engine_rows(common, peaks, current, previous), stamp=stamp)
        if args.skip_transformers:
            continue
        if hf is None:
            from janus_hf import TransformersJanus

            hf = TransformersJanus(str(path), args.device, dtype, args.weights, args.rollouts, *current["warmup"])
        try:
            theirs = time_transformers(hf, args, current)
        except Exception as e:  # e.g. out of memory: the engine's rows stand
            print(f"transformers failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            hf.release()
            free_device_memory(args.device, "transformers")
            continue
        if theirs["timed_prompts"] != prompts:
            common["config"] = {**common["config"], "transformers_timed_prompts": theirs["timed_prompts"]}
        write_rows(args.out, hf_rows(common, peaks, theirs, current, args.rollouts), stamp=stamp)
    print(f"rows appended to {args.out}")


def common_fields(args, device, engine_kwargs, breakdown, prompts) -> dict:
    num_images = prompts * args.rollouts
    config = {"preset": args.preset, "prompts": prompts, "rollouts": args.rollouts, "cfg": 5.0,
              "temperature": 1.0, "dtype": args.dtype, "threads": torch.get_num_threads(), "weights": args.weights}
    if breakdown:  # the limits' method (earlier rows: FLOPs only, peaks from a few long repeats)
        config["limits"] = "gemm roofline, peaks best of many short repeats"
    if args.decode_images:
        config["decode_timed_on_images"] = min(args.decode_images, num_images)
    if engine_kwargs:
        config["engine_kwargs"] = engine_kwargs
    config["kv_pool"] = "populated" if {**POOL_KWARGS, **engine_kwargs}["populate_kv_cache"] else "lazy"
    return {"bench": "janus_images", "device": device, "versions": versions(), "config": config}


def engine_rows(common, peaks, current, previous) -> list[dict]:
    num_images = current["prompts"] * current["rollouts"]
    engine_tokens_s, figures, machine = current["tokens_s"], current["figures"], current["machine"]
    print(f"\n== {current['prompts']} prompts x {current['rollouts']} rollouts ({num_images} images), the engine ==")
    rows = [
        {**common, "provider": "unicorn", "metric": "img_per_s_tokens", "value": num_images / engine_tokens_s,
         "unit": "img/s"},
        {**common, "provider": "unicorn", "metric": "vq_decode_s", "value": current["decode_s"], "unit": "s"},
    ]
    rows += current["monitor"].rows(common, "unicorn")
    rows.append({**common, "provider": "unicorn", "metric": "kv_pool_gib", "value": current["kv_pool_gib"],
                 "unit": "GiB"})
    rows.append({**common, "provider": "unicorn", "metric": "kv_populate_s", "value": current["kv_populate_s"],
                 "unit": "s"})
    rows += ceiling_rows(common, peaks, current["work"])
    rows += bandwidth_rows(common, peaks, current["work"], "unicorn", engine_tokens_s, current["forwards"], num_images)
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
        print(f"current vs previous hot path (same run): tokens {previous['tokens_s'] / engine_tokens_s:.2f}x faster "
              f"({previous['tokens_s']:.1f}s -> {engine_tokens_s:.1f}s); "
              f"codes equal: {torch.equal(previous['codes'], current['codes'])}")
        rows += [
            {**common, "provider": "unicorn-previous", "metric": "img_per_s_tokens",
             "value": num_images / previous["tokens_s"], "unit": "img/s"},
            {**common, "provider": "unicorn", "metric": "speedup_vs_previous",
             "value": previous["tokens_s"] / engine_tokens_s, "unit": "x"},
        ]
        if previous["figures"] is not None:
            rows += [{**common, "provider": "unicorn-previous", "metric": f"step_time_s:{part}", "value": seconds,
                      "unit": "s"} for part, seconds in previous["figures"]["parts_s"].items()]
    return rows


def ceiling_rows(common, peaks, work) -> list[dict]:
    """The decode's work per image and the img/s it allows at the device's bandwidth (KV reads alone, as
    ../shared/engine-notes.md §5.1) and at its matmul rate: datasheet and measured."""
    print(f"decode work: {work['kv_bytes_per_image'] / 1e9:.3g} GB of KV reads and "
          f"{work['flops_per_image'] / 1e12:.3g} TFLOP per image, {work['weight_bytes_per_forward'] / 1e9:.3g} GB of "
          "weights per forward")
    rows = []
    for label in ("datasheet", "measured"):
        tbs, tflops = peaks[f"{label}_tbs"], peaks[f"{label}_tflops"]
        if tbs is None:
            continue
        kv_ceiling = tbs * 1e12 / work["kv_bytes_per_image"]
        flop_ceiling = tflops * 1e12 / work["flops_per_image"]
        print(f"ceilings at the {label} {tbs:.3g} TB/s and {tflops:.3g} TFLOP/s: {kv_ceiling:.3g} img/s from the KV "
              f"reads alone, {flop_ceiling:.3g} img/s from the FLOPs")
        rows += [{**common, "provider": f"limit-{label}", "metric": "img_per_s_kv_bandwidth", "value": kv_ceiling,
                  "unit": "img/s"},
                 {**common, "provider": f"limit-{label}", "metric": "img_per_s_compute", "value": flop_ceiling,
                  "unit": "img/s"},
                 {**common, "provider": f"device-{label}", "metric": "read_tbs", "value": tbs, "unit": "TB/s"},
                 {**common, "provider": f"device-{label}", "metric": "matmul_tflops", "value": tflops,
                  "unit": "TFLOP/s"}]
    return rows


def bandwidth_rows(common, peaks, work, provider, seconds, forwards, num_images) -> list[dict]:
    """Achieved read bandwidth (KV reads plus the weights once per forward) and FLOP rate of one provider."""
    read = (work["kv_bytes"] + work["weight_bytes_per_forward"] * forwards) / seconds
    rate = work["flops"] / seconds
    shares = ", ".join(f"{100 * read / (peaks[f'{label}_tbs'] * 1e12):.0f} % of the {label} bandwidth"
                       for label in ("datasheet", "measured") if peaks[f"{label}_tbs"])
    label = "datasheet" if peaks["datasheet_tbs"] else "measured"
    kv_ceiling = peaks[f"{label}_tbs"] * 1e12 / work["kv_bytes_per_image"]
    print(f"{provider}: {num_images / seconds:.3f} img/s = {100 * num_images / seconds / kv_ceiling:.0f} % of the "
          f"KV-read ceiling at the {label} bandwidth; reads {read / 1e9:.4g} GB/s ({shares}) over {forwards} "
          f"forwards, {rate / 1e12:.3g} TFLOP/s")
    return [{**common, "provider": provider, "metric": "decode_read_gbs", "value": read / 1e9, "unit": "GB/s"},
            {**common, "provider": provider, "metric": "decode_tflops", "value": rate / 1e12, "unit": "TFLOP/s"},
            {**common, "provider": provider, "metric": f"share_of_kv_ceiling_{label}",
             "value": num_images / seconds / kv_ceiling, "unit": "fraction"}]


def hf_rows(common, peaks, hf, current, rollouts) -> list[dict]:
    num_images = current["prompts"] * rollouts
    mode, hf_tokens_s, engine_tokens_s = hf["mode"], hf["tokens_s"], current["tokens_s"]
    provider = f"transformers-{mode}"
    timed = f" (timed on {hf['timed_prompts']} prompts, scaled)" if hf["timed_prompts"] != current["prompts"] else ""
    print(f"\n== {current['prompts']} prompts x {rollouts} rollouts ({num_images} images), transformers ==")
    print(f"transformers ({mode}): tokens {hf_tokens_s:.1f}s ({num_images / hf_tokens_s:.3f} img/s){timed}; "
          f"{hf['monitor'].describe()}")
    print(f"unicorn: tokens {engine_tokens_s:.1f}s ({num_images / engine_tokens_s:.3f} img/s); "
          f"{current['monitor'].describe()}")
    ratio = hf_tokens_s / engine_tokens_s
    print(f"speed-up vs transformers' best: {ratio:.2f}x")
    rows = [{**common, "provider": provider, "metric": "img_per_s_tokens", "value": num_images / hf_tokens_s,
             "unit": "img/s"},
            {**common, "provider": "unicorn", "metric": "speedup_vs_transformers", "value": ratio, "unit": "x"}]
    rows += hf["monitor"].rows(common, provider)
    rows += bandwidth_rows(common, peaks, current["work"], provider, hf_tokens_s, hf["forwards"], num_images)
    figures = current["figures"]
    if figures is not None:
        print(f"transformers reaches {100 * num_images / hf_tokens_s / figures['token_limit_img_per_s']:.0f}% "
              "of the same tokens limit")
    if hf["decode_s"] is not None:
        engine_e2e, hf_e2e = engine_tokens_s + current["decode_s"], hf_tokens_s + hf["decode_s"]
        print(f"transformers VQ decode {hf['decode_s']:.1f}s; end to end {num_images / engine_e2e:.3f} vs "
              f"{num_images / hf_e2e:.3f} img/s: {hf_e2e / engine_e2e:.2f}x")
        rows += [
            {**common, "provider": "transformers", "metric": "vq_decode_s", "value": hf["decode_s"], "unit": "s"},
            {**common, "provider": "unicorn", "metric": "img_per_s_end_to_end", "value": num_images / engine_e2e,
             "unit": "img/s"},
            {**common, "provider": provider, "metric": "img_per_s_end_to_end", "value": num_images / hf_e2e,
             "unit": "img/s"},
            {**common, "provider": "unicorn", "metric": "speedup_end_to_end", "value": hf_e2e / engine_e2e, "unit": "x"},
        ]
    return rows


# The engine as it was before issue 14's levers (each lever's switch off), for --compare: logits mixed after the
# head (cfg_head_mix=False), the one-pass sampling op after torch's CFG, separate q/k/v and gate/up GEMMs, torch's
# GEMM instead of oneDNN's on packed weights, a KV pool mapped page by page as blocks are first used. The codes may
# differ: the head mix and the packed GEMM round differently, and a sampled token that flips changes the rest.
PREVIOUS_KWARGS = {"cfg_head_mix": False, "populate_kv_cache": False}
PROGRESS_S = 30  # seconds between progress lines of a timed engine run
POOL_KWARGS = {"populate_kv_cache": True}  # --engine-kwargs '{"populate_kv_cache": false}' times a lazy pool


def run_engine(path, args, dtype, engine_kwargs, breakdown, prompts, previous=False) -> dict:
    """Builds an engine, warms it up, then times token generation (decode=False) of ``prompts`` x rollouts images
    and VQ decoding of the same codes, with the decode's work counted (bench/roofline.py) and on request a step
    breakdown. Returns a dict (prompts, rollouts, tokens_s, decode_s, codes, prompt_ids, figures, machine, monitor,
    forwards, work); the engine and its model are freed before it returns."""
    from unicorn import Engine, ImageGenParams
    from unicorn.models.janus_tiny import build_random_janus

    model = None
    if args.weights == "device":
        model = build_random_janus(str(path), device=args.device, dtype=dtype, seed=0)
    # The pool populated at start-up (as a long run's pool is after its first pass through it), so that no step
    # pays the page faults of a block's first use: here ~25 us per 4 KiB page, 15-25 % of a decode step.
    engine = Engine(str(path), device=args.device, dtype=dtype, model=model,
                    max_num_seqs=max(256, 2 * prompts * args.rollouts), **{**POOL_KWARGS, **engine_kwargs})
    if previous:
        from unicorn.kernels.cpu_linear import packed_weights
        from unicorn.models.layers import FusedLinears

        engine.runner.sampler.fused = False
        for packed in packed_weights(engine.model):
            packed.enabled = False
        for module in engine.model.modules():
            for value in vars(module).values():
                if isinstance(value, FusedLinears):
                    value.enabled = False
    label = "engine (previous hot path)" if previous else "engine"
    caches = engine.runner.kv_caches
    kv_bytes_per_token = len(caches) * 2 * caches[0].key[0, 0].numel() * caches[0].key.element_size()
    pool_gib = sum(c.key.numel() * c.key.element_size() + c.value.numel() * c.value.element_size()
                   for c in caches) / 2**30
    weight_bytes = janus_weight_bytes(engine.model)
    warm_texts, warm_n = warmup_shape(args, prompts)
    engine.generate_images(warm_texts, ImageGenParams(n=warm_n, cfg_scale=5.0, temperature=1.0, seed=1))
    texts = make_prompts(prompts)
    num_images = prompts * args.rollouts
    params = ImageGenParams(n=args.rollouts, cfg_scale=5.0, temperature=1.0, seed=0, decode=False)
    profile = StepProfile().attach(engine) if breakdown else None
    steps_before = engine.stats.num_steps
    request_ids = [engine.submit_image(p, params) for p in texts]
    finished = {}
    with Monitor(args.device) as monitor:
        report_at = time.perf_counter() + PROGRESS_S
        while engine.has_unfinished():
            finished.update((o.request_id, o) for o in engine.step() if o.finished)
            if time.perf_counter() > report_at:  # progress, for a run that ends at its time limit
                report_at += PROGRESS_S
                print(f"  ... {len(finished) * args.rollouts}/{num_images} images after "
                      f"{time.perf_counter() - monitor.start:.0f}s, {engine.stats.num_steps - steps_before} steps")
    tokens_s = monitor.seconds
    if profile is not None:
        profile.detach()
    codes = torch.cat([finished[i].image_tokens for i in request_ids])
    decode_s = None
    if not previous:  # the levers leave VQ decoding alone: time it once
        decode_codes = codes[: args.decode_images or len(codes)]
        with Monitor(args.device) as decode_monitor:
            engine.runner.decode_images(decode_codes)
        decode_s = decode_monitor.seconds * len(codes) / len(decode_codes)  # for all the images
    stats = engine.stats
    forwards = stats.num_steps - steps_before
    print(f"{label}, {prompts} prompts: {num_images} images, tokens {tokens_s:.1f}s "
          f"({num_images / tokens_s:.3f} img/s), " + (f"VQ decode {decode_s:.1f}s; " if decode_s is not None else "")
          + f"{forwards} steps; with the warm-up {stats.num_preemptions} preemptions, "
          f"prefix hits {stats.prefix_hit_tokens}/{stats.prefix_query_tokens} tokens; {monitor.describe()} "
          f"(a preallocated KV pool of {pool_gib:.1f} GiB included, populated at start-up in "
          f"{stats.kv_populate_s:.1f}s)")
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
    prompt_ids = [engine.prompts.image(p) for p in texts]
    warm_ids = [engine.prompts.image(p) for p in warm_texts]
    work = janus_decode_work(engine.model, codes.shape[1], [len(ids) for ids in prompt_ids], args.rollouts,
                             kv_bytes_per_token, weight_bytes, forwards)
    work["weight_bytes_per_forward"] = weight_bytes
    result = dict(prompts=prompts, rollouts=args.rollouts, tokens_s=tokens_s, decode_s=decode_s, codes=codes.cpu(),
                  prompt_ids=prompt_ids, figures=figures, machine=machine, monitor=monitor, forwards=forwards,
                  work=work, kv_pool_gib=pool_gib, kv_populate_s=stats.kv_populate_s, warmup=(warm_ids, warm_n))
    engine.close()
    engine.runner.kv_caches = []  # the pool goes even if something still holds the engine
    del engine, model, caches
    free_device_memory(args.device, "the engine")
    return result


def free_device_memory(device: str, what: str) -> None:
    if device.startswith("cuda"):  # a freed model's memory back before the next provider allocates
        gc.collect()
        torch.cuda.empty_cache()
        print(f"device memory still allocated after {what}: {torch.cuda.memory_allocated() / 2**30:.1f} GiB")


def time_transformers(hf, args, current) -> dict:
    """transformers on the workload's prompts (bench/janus_hf.py), then its model freed: a dict (mode, tokens_s,
    timed_prompts, forwards, monitor, decode_s)."""
    modes = ["batched", "per-prompt"] if args.hf_mode == "auto" else [args.hf_mode]
    timings = {}
    for mode in modes:
        seconds, timed, calls, monitor, fresh = timings[mode] = hf.time(current["prompt_ids"], mode, args.hf_prompts)
        print(f"  transformers {mode}, {current['prompts']} prompts: {seconds:.1f}s"
              + (f" (scaled from {timed} prompts per call" + ("" if fresh else ", timed earlier in this run") + ")"
                 if timed != current["prompts"] else ""))
    mode = min(timings, key=lambda m: timings[m][0])
    seconds, timed, calls, monitor, _ = timings[mode]
    codes = current["codes"]
    decode_s = hf.decode_s(codes, args.decode_images or len(codes), len(codes)) if args.hf_decode else None
    hf.release()
    free_device_memory(args.device, "transformers")
    return dict(mode=mode, tokens_s=seconds, timed_prompts=timed, forwards=calls * codes.shape[1], monitor=monitor,
                decode_s=decode_s)


if __name__ == "__main__":
    main()
