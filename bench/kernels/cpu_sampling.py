"""The CPU image sampler (CFG + temperature + Gumbel-max over the image vocabulary) in its three ways, same run,
same warm-up, same ids checked: the fused C++ pass (the engine's path), the one-pass C++ arg-max after torch's CFG
(the path before issue 14), and plain torch (noise, logs and arg-max as tensor ops: the fastest way without the
compiled op). Rows into bench/results/kernels_cpu.jsonl.

    python bench/kernels/cpu_sampling.py                       # 64 images x 16384 codes, torch's threads
    python bench/kernels/cpu_sampling.py --rows 128 --threads 1
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from common import device_name, versions, write_rows  # noqa: E402
from device_stats import best_of  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=64, help="images sampled per call (one CFG row pair each)")
    parser.add_argument("--vocab", type=int, default=16384)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "kernels_cpu.jsonl"))
    args = parser.parse_args()
    for name in ("rows", "vocab", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.threads:
        torch.set_num_threads(args.threads)

    from unicorn.kernels import cpu_ops
    from unicorn.kernels.sampling import sample_fast

    ops = cpu_ops.load()
    if ops is None:
        sys.exit("cpu_sampling: the C++ CPU ops did not build here (unicorn/kernels/cpu_ops.py)")
    gen = torch.Generator().manual_seed(0)
    cond = torch.randn(args.rows, args.vocab, generator=gen) * 3
    uncond = torch.randn(args.rows, args.vocab, generator=gen) * 3
    scale = torch.linspace(3.0, 8.0, args.rows)
    temperature = torch.ones(args.rows)
    no_filter = torch.zeros(args.rows, dtype=torch.int64), torch.ones(args.rows)
    seeds = torch.arange(args.rows, dtype=torch.int64) * 7919
    steps = torch.full((args.rows,), 5, dtype=torch.int64)
    call = (cond, uncond, scale, temperature, *no_filter, seeds, steps)
    ways = {
        "fused-cpp": lambda: sample_fast(*call, cpu_ops=ops, fused=True),
        "torch-cfg+one-pass-cpp": lambda: sample_fast(*call, cpu_ops=ops, fused=False),
        "torch": lambda: sample_fast(*call),
    }
    ids = {name: fn() for name, fn in ways.items()}
    same = all(torch.equal(ids["torch"], other) for other in ids.values())
    times = {name: best_of(fn, args.repeats) * 1e3 for name, fn in ways.items()}
    elements = args.rows * args.vocab
    config = {"rows": args.rows, "vocab": args.vocab, "threads": torch.get_num_threads(), "repeats": args.repeats,
              "timing": "best of repeats after one warm-up call", "ids_equal": same}
    common = {"bench": "cpu_sampling", "device": device_name("cpu"), "versions": versions(), "config": config}
    rows = []
    for name, ms in times.items():
        print(f"{name:<24} {ms:8.2f} ms  {ms * 1e6 / elements:6.2f} ns per entry  "
              f"{times['torch'] / ms:5.1f}x plain torch")
        rows += [{**common, "provider": name, "metric": "latency", "value": ms, "unit": "ms"},
                 {**common, "provider": name, "metric": "speedup_vs_torch", "value": times["torch"] / ms, "unit": "x"}]
    print(f"ids equal across the three: {same}")
    if not same:
        sys.exit("cpu_sampling: the three ways drew different ids")
    write_rows(args.out, rows)
    print(f"rows appended to {args.out}")


if __name__ == "__main__":
    main()
