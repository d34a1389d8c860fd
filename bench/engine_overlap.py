"""Images/s with VQ decoding overlapped with token generation vs decoded inside the step loop, same run.

Toy model (the embedded default): R requests in flight (n=1 each, CFG 5), for each R in --sizes, overlap on and
off after the same warm-up. janus-mid (random weights, bench/janus_images.py's preset): P prompts x N images end
to end (tokens + decode), overlap on and off.

    python bench/engine_overlap.py                                   # toy 64..512 and janus-mid 8 x 8, CPU
    python bench/engine_overlap.py --sizes 64 128 --skip-janus --decode-threads 1
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


def images_per_s(engine, prompts, params) -> tuple[float, int]:
    start = time.perf_counter()
    for p in prompts:
        engine.submit_image(p, params)
    outputs = engine.run()
    elapsed = time.perf_counter() - start
    count = sum(o.pixel_values.shape[0] for o in outputs.values())
    return count / elapsed, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--skip-janus", action="store_true")
    parser.add_argument("--janus-prompts", type=int, default=8)
    parser.add_argument("--janus-rollouts", type=int, default=8)
    parser.add_argument("--decode-threads", type=int, default=None, help="torch threads of the decode worker")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "engine_overlap.jsonl"))
    args = parser.parse_args()

    from unicorn import Engine, ImageGenParams
    from unicorn.toyworld.model import default_model_path

    common = {"bench": "engine_overlap", "device": device_name(args.device), "versions": versions()}
    rows = []
    engines = {flag: Engine(str(default_model_path()), device=args.device, max_num_seqs=2 * max(args.sizes),
                            overlap_decode=flag, decode_threads=args.decode_threads) for flag in (True, False)}
    params = ImageGenParams(n=1, cfg_scale=5.0, seed=0)
    for engine in engines.values():  # the same warm-up for both
        images_per_s(engine, ["warm-up"] * 8, params)
    for size in args.sizes:
        prompts = [f"a shape number {k}" for k in range(size)]
        for flag, engine in engines.items():
            rate, count = images_per_s(engine, prompts, params)
            print(f"toy, {size} in flight, overlap {'on ' if flag else 'off'}: {rate:.2f} img/s ({count} images)")
            rows.append({**common, "provider": f"unicorn-overlap-{'on' if flag else 'off'}", "metric": "img_per_s",
                         "value": rate, "unit": "img/s", "config": {"model": "toy", "in_flight": size,
                         "decode_threads": args.decode_threads, "threads": torch.get_num_threads()}})
    for engine in engines.values():
        engine.close()

    if not args.skip_janus:
        from unicorn.models.janus_tiny import write_random_janus_checkpoint

        path = Path(tempfile.mkdtemp(prefix="unicorn-bench-")) / "janus-mid"
        write_random_janus_checkpoint(path, preset="janus-mid", seed=0)
        prompts = [f"prompt {k} of the bench" for k in range(args.janus_prompts)]
        jparams = ImageGenParams(n=args.janus_rollouts, cfg_scale=5.0, seed=0)
        for flag in (True, False):
            with Engine(str(path), device=args.device, overlap_decode=flag, decode_threads=args.decode_threads,
                        max_num_seqs=max(256, 2 * args.janus_prompts * args.janus_rollouts)) as engine:
                images_per_s(engine, ["warm-up"], ImageGenParams(n=1, seed=1))
                rate, count = images_per_s(engine, prompts, jparams)
            print(f"janus-mid {args.janus_prompts} x {args.janus_rollouts}, overlap {'on ' if flag else 'off'}: "
                  f"{rate:.3f} img/s end to end ({count} images)")
            rows.append({**common, "provider": f"unicorn-overlap-{'on' if flag else 'off'}", "metric": "img_per_s",
                         "value": rate, "unit": "img/s", "config": {"model": "janus-mid",
                         "prompts": args.janus_prompts, "rollouts": args.janus_rollouts,
                         "decode_threads": args.decode_threads, "threads": torch.get_num_threads()}})
    write_rows(args.out, rows)
    print(f"rows appended to {args.out}")


if __name__ == "__main__":
    main()
