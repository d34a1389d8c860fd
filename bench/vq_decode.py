"""VQ decoding: our decoder vs transformers' JanusVQVAE.decode on the same codes, same warm-up, same run.

Random weights at a preset's VQ shapes (janus-mid; janus-pro-7b = Janus' VQ-16: 576 codes -> 384 px), copied
from transformers' model into ours. Providers are timed interleaved (one repeat of each in turn, medians), so a
machine shared with other jobs slows all of them alike. Each row records the output against transformers':
``exact`` (torch.equal), the max abs pixel error and the share of uint8 pixels that differ
(``JanusImageProcessor.postprocess``: round((x + 1) * 127.5)). The FLOPs (convolutions and matmuls, torch's flop
counter) at the measured matmul rate (bench/step_profile.py) give the share of the matmul limit reached.

    python bench/vq_decode.py                                        # janus-mid and janus-pro-7b, b 1 and 8, 1 and 2 threads
    python bench/vq_decode.py --presets janus-mid --batches 1 --threads 1 --providers transformers,unicorn
    python bench/vq_decode.py --profile                              # torch.profiler table per provider

Providers: ``transformers`` (the batch in one decode, as its decode_image_tokens); ``unicorn`` (as the engine
decodes on a CPU: one image per decode; fp32, bit-identical to transformers); at batch > 1 also
``transformers-per-image`` and ``unicorn-batched`` (the other way round); ``unicorn-cl`` (channels-last
activations, one image per decode, not bit-identical); ``unicorn-bf16`` (bf16 weights and activations,
fp32 pixels out; not in the default list: ~100x slower on a CPU without bf16 instructions).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, versions, write_rows  # noqa: E402
from step_profile import count_flops, measure_machine  # noqa: E402

PROVIDERS = ("transformers", "transformers-per-image", "unicorn", "unicorn-batched", "unicorn-cl", "unicorn-bf16")
PER_IMAGE_ONLY = ("transformers-per-image", "unicorn-batched")  # differ from another provider only at batch > 1
GRID = 24  # 384 px / 16: the codes of one image are 24 x 24


def build_pair(preset: str, seed: int = 0):
    """transformers' JanusVQVAE with random weights (norms and biases perturbed) and ours with the same weights."""
    from transformers import JanusVQVAEConfig
    from transformers.models.janus.modeling_janus import JanusVQVAE

    from unicorn.models.janus_config import VQArch
    from unicorn.models.janus_tiny import PRESETS
    from unicorn.models.vq import VQModel

    vq = dict(PRESETS[preset]["vq"])
    torch.manual_seed(seed)
    hf = JanusVQVAE(JanusVQVAEConfig(**vq, num_patches=GRID)).eval()
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.05)
    ours = VQModel(VQArch(**vq), grid=GRID).eval()
    ours.load_state_dict(hf.state_dict())
    return hf, ours


def decoders(hf, ours) -> dict:
    import copy

    bf16 = copy.deepcopy(ours).to(torch.bfloat16)

    def per_image(decode):  # as ModelRunner.decode_images on a CPU: one image per decode
        return lambda ids: torch.cat([decode(ids[i : i + 1]) for i in range(len(ids))])

    return {
        "transformers": lambda ids: hf.decode(ids),
        "transformers-per-image": per_image(hf.decode),
        "unicorn": per_image(ours.decode),
        "unicorn-batched": lambda ids: ours.decode(ids),
        "unicorn-cl": per_image(lambda ids: ours.decode(ids, channels_last=True)),
        "unicorn-bf16": per_image(lambda ids: bf16.decode(ids).float()),
    }


def to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    return ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def error_figures(out: torch.Tensor, ref: torch.Tensor) -> dict:
    return {"exact": bool(torch.equal(out, ref)), "max_abs_err": (out - ref).abs().max().item(),
            "uint8_differ_share": (to_uint8(out) != to_uint8(ref)).float().mean().item()}


def run_case(fns: dict, providers: list[str], ids: torch.Tensor, repeats: int, warmup: int) -> tuple[dict, dict]:
    """``warmup`` untimed rounds, then ``repeats`` rounds, each running every provider once in turn. Returns
    the seconds per provider and each provider's last output."""
    outs = {}
    with torch.inference_mode():
        for _ in range(warmup):  # oneDNN primitives, the allocator's pages
            for name in providers:
                outs[name] = fns[name](ids)
        times = {name: [] for name in providers}
        for _ in range(repeats):
            for name in providers:
                start = time.perf_counter()
                outs[name] = fns[name](ids)
                times[name].append(time.perf_counter() - start)
    return times, outs


def profile_table(fn, ids: torch.Tensor, rows: int = 14) -> str:
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        fn(ids)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="janus-mid,janus-pro-7b")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--providers", default="transformers,transformers-per-image,unicorn,unicorn-batched,unicorn-cl")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds of every provider before the timed ones")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per case (after one warm-up round)")
    parser.add_argument("--max-repeats-s", type=float, default=120.0,
                        help="fewer rounds where one decode of the batch (estimated from one image) exceeds this / repeats")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table per provider")
    parser.add_argument("--note", default="", help="free text stored in each row's config (e.g. the machine's load)")
    parser.add_argument("--default-malloc", action="store_true",
                        help="keep glibc's default malloc settings (by default the run applies those a CPU Engine "
                             "sets, unicorn/engine/host_malloc.py, for every provider alike)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "vq_decode.jsonl"))
    args = parser.parse_args()
    providers = args.providers.split(",")
    assert set(providers) <= set(PROVIDERS), providers
    common = {"bench": "vq_decode", "device": device_name("cpu"), "versions": versions()}
    malloc = "glibc default"
    if not args.default_malloc:
        from unicorn.engine.host_malloc import keep_freed_host_memory

        malloc = "kept (as a CPU Engine)" if keep_freed_host_memory() else "default (settings not applied here)"
    print(f"malloc: {malloc}")

    for preset in args.presets.split(","):
        hf, ours = build_pair(preset)
        fns = decoders(hf, ours)
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            machine = measure_machine()
            for batch in (int(b) for b in args.batches.split(",")):
                ids = torch.randint(0, ours.quantize.embedding.num_embeddings, (batch, GRID * GRID),
                                    generator=torch.Generator().manual_seed(batch))
                with torch.inference_mode():
                    start = time.perf_counter()
                    flops = count_flops(lambda: ours.decode(ids[:1])) * batch
                    repeats = max(1, min(args.repeats, int(args.max_repeats_s / (batch * (time.perf_counter() - start)))))
                case_providers = [p for p in providers if batch > 1 or p not in PER_IMAGE_ONLY]
                times, outs = run_case(fns, case_providers, ids, repeats, args.warmup)
                ref = outs["transformers"] if "transformers" in outs else None
                config = {"preset": preset, "batch": batch, "threads": threads, "dtype": "float32",
                          "repeats": repeats, "warmup": args.warmup, "gflop": flops / 1e9,
                          "matmul_gflops": machine["gemm_gflops"], "load_avg_1m": round(os.getloadavg()[0], 2),
                          "malloc": malloc, "note": args.note}
                hf_s = statistics.median(times["transformers"]) if ref is not None else None
                rows = []
                print(f"{preset} batch {batch}, {threads} thread(s), {flops / 1e9:.1f} GFLOP, matmul "
                      f"{machine['gemm_gflops']:.0f} GFLOP/s, {repeats} rounds, load {config['load_avg_1m']}:")
                for name in case_providers:
                    median = statistics.median(times[name])
                    share = flops / median / 1e9 / machine["gemm_gflops"]
                    figures = error_figures(outs[name], ref) if ref is not None else {}
                    rows.append({**common, "config": {**config, **figures}, "provider": name,
                                 "metric": "decode_s", "value": median, "unit": "s",
                                 "p20": sorted(times[name])[len(times[name]) // 5],
                                 "p80": sorted(times[name])[(4 * len(times[name])) // 5],
                                 "matmul_share": share, "vs_transformers": hf_s / median if hf_s else None})
                    print(f"  {name:13s} {median:8.3f}s  {batch / median:6.2f} img/s  "
                          f"{hf_s / median if hf_s else float('nan'):5.2f}x transformers  {100 * share:4.0f}% of matmul"
                          + (f"  exact {figures['exact']}, max abs {figures['max_abs_err']:.1e}, "
                             f"uint8 differ {100 * figures['uint8_differ_share']:.3f}%" if figures else ""))
                write_rows(args.out, rows)
                if args.profile:
                    for name in case_providers:
                        print(f"--- {name}\n{profile_table(fns[name], ids)}")


if __name__ == "__main__":
    main()
