"""Training throughput: tokens/s single-process vs 2-process FSDP2 on CPU (tiny / janus-mid presets), and on GPU
tokens/s + MFU at Janus-Pro-1B/7B shapes (random weights). Rows go to bench/results/training.jsonl.

    python bench/training/throughput.py --preset tiny --steps 20          # CPU: single vs fsdp2 x2
    python bench/training/throughput.py --preset janus-pro-1b --gpu       # GPU: single, bf16
    python bench/training/throughput.py --family bagel --preset cpu-small # BAGEL (CE + flow MSE), CPU
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from common import device_name, versions, write_rows  # noqa: E402


def run(backend: str, nproc: int, model: str, data: str, out: str, args) -> list[dict]:
    cmd = ["-m", "unicorn.training.cli", "--model", model, "--data", data, "--out", out, "--backend", backend,
           "--steps", str(args.steps), "--seq-len", str(args.seq_len), "--micro-batch", str(args.micro_batch // nproc),
           "--lr", "1e-4", "--save-every", str(10**9), "--log-every", str(10**9)]
    if args.gpu:
        cmd += ["--activation-checkpointing"] if args.ac else []
    launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run",
                                                   f"--nproc_per_node={nproc}", "--master_port=29533"]
    subprocess.run(launcher + cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--family", default="janus", choices=["janus", "bagel"])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--micro-batch", type=int, default=4, help="global rows per step")
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--ac", action="store_true", help="activation checkpointing (GPU)")
    args = p.parse_args()
    from unicorn.training.synthetic import write_synthetic_cpr

    tmp = tempfile.mkdtemp(prefix="unicorn-bench-train-")
    if args.family == "bagel":
        from unicorn.models.bagel_tiny import arch_for_preset, write_random_bagel_checkpoint

        model = write_random_bagel_checkpoint(os.path.join(tmp, "model"), preset=args.preset, seed=0)
        image_size = arch_for_preset(args.preset).vae_min_image_size * 2  # 2x2 latent tokens at least
    else:
        from unicorn.models.janus_tiny import write_random_janus_checkpoint

        model = write_random_janus_checkpoint(os.path.join(tmp, "model"), preset=args.preset, seed=0)
        with open(os.path.join(model, "config.json")) as f:
            image_size = json.load(f)["vision_config"]["image_size"]
    data = os.path.join(tmp, "data")
    write_synthetic_cpr(data, image_size=image_size, per_kind=32)
    runs = [("single", 1)] if args.gpu else [("single", 1), ("fsdp2", 2)]
    rows = []
    for backend, nproc in runs:
        metrics = run(backend, nproc, model, data, os.path.join(tmp, f"run-{backend}"), args)[3:]  # skip warm-up
        tps = sorted(m["tokens_per_s"] for m in metrics)
        q = statistics.quantiles(tps, n=5)
        config = {"family": args.family, "preset": args.preset, "image_size": image_size, "seq_len": args.seq_len, "global_rows": args.micro_batch, "nproc": nproc,
                  "steps": args.steps, "p20": q[0], "p80": q[3], "padding": statistics.mean(m["padding"] for m in metrics)}
        rows.append({"bench": "training", "provider": f"{backend}x{nproc}", "metric": "tokens_per_s",
                     "value": statistics.median(tps), "unit": "tok/s", "config": config,
                     "device": device_name("cuda" if args.gpu else "cpu"), "versions": versions()})
        if args.gpu:
            rows.append({**rows[-1], "metric": "mfu", "value": statistics.median(m["mfu"] for m in metrics), "unit": "fraction"})
        print(f"{backend} x{nproc}: {statistics.median(tps):.0f} tok/s (p20 {q[0]:.0f}, p80 {q[3]:.0f}), "
              f"padding {config['padding']:.1%}" + (f", mfu {rows[-1]['value']:.1%}" if args.gpu else ""))
    write_rows(os.path.join(ROOT, "bench", "results", "training.jsonl"), rows)


if __name__ == "__main__":
    main()
