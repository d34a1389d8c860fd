"""Kernel benchmarks on a GPU: each kernel vs its torch reference (and SDPA / the CUDA op where there is one).

    python bench/kernels/run.py --out bench/results/

Writes rows of one schema (kernel, provider, metric, x, p20, p50, p80, unit, device, versions) to
``<out>/kernels-<device>-<time>.jsonl`` and a CSV beside it. Decode attention rows also report achieved
bandwidth (GB/s and % of the card's HBM peak); sampling rows report the speedup over the torch reference.
Shapes: Janus-Pro-7B (MHA 32 x 128, image vocab 16384) and BAGEL-7B (GQA 28/4 x 128, hidden 3584).
"""
from __future__ import annotations

import argparse
import csv
import json
import pathlib
import platform
import sys
import time

import torch

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

HBM_PEAK_GBPS = {"H100": 3350.0, "H200": 4800.0, "A100": 2039.0}
QUANTILES = [0.2, 0.5, 0.8]


def _peak(device_name: str) -> float | None:
    for key, peak in HBM_PEAK_GBPS.items():
        if key in device_name:
            return peak
    return None


def _time(fn, reps: int = 50):
    import triton.testing

    return triton.testing.do_bench(fn, warmup=10, rep=reps, quantiles=QUANTILES)  # ms


class Writer:
    def __init__(self, out_dir: pathlib.Path):
        import triton

        self.device = torch.cuda.get_device_name()
        self.versions = {"torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
                         "python": platform.python_version()}
        stamp = time.strftime("%Y%m%d-%H%M%S")
        tag = self.device.replace(" ", "_")
        out_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = out_dir / f"kernels-{tag}-{stamp}.jsonl"
        self.csv = out_dir / f"kernels-{tag}-{stamp}.csv"
        self.rows: list[dict] = []

    def add(self, kernel, provider, metric, x, values, unit):
        row = dict(kernel=kernel, provider=provider, metric=metric, x=x, p20=values[0], p50=values[1],
                   p80=values[2], unit=unit, device=self.device, versions=json.dumps(self.versions))
        self.rows.append(row)
        print(f"{kernel:18s} {provider:10s} {metric:10s} x={x:<22} p50={values[1]:10.4f} {unit}")

    def close(self):
        with open(self.jsonl, "w") as f:
            for row in self.rows:
                f.write(json.dumps(row) + "\n")
        with open(self.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(self.rows[0]))
            w.writeheader()
            w.writerows(self.rows)
        print(f"wrote {len(self.rows)} rows to {self.jsonl} and {self.csv}")


def bench_decode(w: Writer):
    from unicorn.kernels.paged_attention import paged_attention_kernel_ref, paged_decode

    peak = _peak(w.device)
    for model, hq, hkv in (("janus7b", 32, 32), ("bagel7b", 28, 4)):
        for batch, ctx in ((2, 617), (64, 617), (256, 617), (16, 4096), (2, 32768)):
            bs, d = 16, 128
            blocks = -(-ctx // bs)
            kc = torch.randn(batch * blocks, bs, hkv, d, device="cuda", dtype=torch.bfloat16)
            vc = torch.randn_like(kc)
            bt = torch.arange(batch * blocks, device="cuda", dtype=torch.int32).view(batch, blocks)
            sl = torch.full((batch,), ctx, device="cuda", dtype=torch.int32)
            q = torch.randn(batch, hq, d, device="cuda", dtype=torch.bfloat16)
            x = f"{model}:B{batch}:ctx{ctx}"
            kv_bytes = 2 * batch * ctx * hkv * d * 2
            ms = _time(lambda: paged_decode(q, kc, vc, bt, sl, d**-0.5, ctx))
            w.add("paged_decode", "triton", "latency", x, ms, "ms")
            gbps = [kv_bytes / (t * 1e-3) / 1e9 for t in reversed(ms)]
            w.add("paged_decode", "triton", "bandwidth", x, gbps, "GB/s")
            if peak:
                w.add("paged_decode", "triton", "hbm_pct", x, [100 * g / peak for g in gbps], "%")
            # SDPA over K/V already gathered contiguous (a lower bound for any torch path).
            kd = kc.view(batch, blocks * bs, hkv, d)[:, :ctx].transpose(1, 2)
            vd = vc.view(batch, blocks * bs, hkv, d)[:, :ctx].transpose(1, 2)
            ms = _time(lambda: torch.nn.functional.scaled_dot_product_attention(
                q[:, :, None], kd, vd, scale=d**-0.5, enable_gqa=hq != hkv))
            w.add("paged_decode", "sdpa_dense", "latency", x, ms, "ms")
            if batch * ctx <= 64 * 617:
                lens = [1] * batch
                ms = _time(lambda: paged_attention_kernel_ref(q, kc, vc, bt, sl, lens, d**-0.5), reps=20)
                w.add("paged_decode", "torch_ref", "latency", x, ms, "ms")


def bench_varlen(w: Writer):
    from unicorn.kernels.paged_attention import paged_varlen

    for model, hq, hkv in (("janus7b", 32, 32), ("bagel7b", 28, 4)):
        for seqs, qlen in ((2, 617), (2, 4096)):
            bs, d = 16, 128
            blocks = -(-qlen // bs)
            kc = torch.randn(seqs * blocks, bs, hkv, d, device="cuda", dtype=torch.bfloat16)
            vc = torch.randn_like(kc)
            bt = torch.arange(seqs * blocks, device="cuda", dtype=torch.int32).view(seqs, blocks)
            sl = torch.full((seqs,), qlen, device="cuda", dtype=torch.int32)
            qsl = torch.arange(seqs + 1, device="cuda", dtype=torch.int32) * qlen
            q = torch.randn(seqs * qlen, hq, d, device="cuda", dtype=torch.bfloat16)
            flops = 4 * seqs * qlen * qlen * hq * d / 2
            for causal in (True, False):
                x = f"{model}:S{seqs}:L{qlen}:{'causal' if causal else 'full'}"
                ms = _time(lambda: paged_varlen(q, kc, vc, bt, qsl, sl, d**-0.5, qlen, causal))
                w.add("paged_varlen", "triton", "latency", x, ms, "ms")
                w.add("paged_varlen", "triton", "tflops", x,
                      [flops * (1 if causal else 2) / (t * 1e-3) / 1e12 for t in reversed(ms)], "TFLOP/s")
                qd = q.view(seqs, qlen, hq, d).transpose(1, 2)
                kd = kc.view(seqs, blocks * bs, hkv, d)[:, :qlen].transpose(1, 2)
                vd = vc.view(seqs, blocks * bs, hkv, d)[:, :qlen].transpose(1, 2)
                ms = _time(lambda: torch.nn.functional.scaled_dot_product_attention(
                    qd, kd, vd, is_causal=causal, enable_gqa=hq != hkv))
                w.add("paged_varlen", "sdpa_dense", "latency", x, ms, "ms")


def bench_elementwise(w: Writer):
    from unicorn.kernels import rmsnorm, rope, store_kv, swiglu

    for tokens in (64, 4098):
        x = torch.randn(tokens, 4096, device="cuda", dtype=torch.bfloat16)
        r, wt = torch.randn_like(x), torch.rand(4096, device="cuda", dtype=torch.bfloat16)
        for prov, fn in (("triton", rmsnorm.rms_norm), ("torch_ref", rmsnorm.rms_norm_ref)):
            w.add("rms_norm", prov, "latency", f"T{tokens}:H4096", _time(lambda: fn(x, wt, 1e-6, r)), "ms")
        q = torch.randn(tokens, 32, 128, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(tokens, 32, 128, device="cuda", dtype=torch.bfloat16)
        pos = torch.arange(tokens, device="cuda")
        for prov, fn in (("triton", rope.apply_rope), ("torch_ref", rope.apply_rope_ref)):
            w.add("rope", prov, "latency", f"T{tokens}:32x128", _time(lambda: fn(q, k, pos)), "ms")
        gu = torch.randn(tokens, 2 * 11008, device="cuda", dtype=torch.bfloat16)
        for prov, fn in (("triton", swiglu.silu_and_mul), ("torch_ref", swiglu.silu_and_mul_ref)):
            w.add("silu_and_mul", prov, "latency", f"T{tokens}:I11008", _time(lambda: fn(gu)), "ms")
        kc = torch.zeros(tokens // 16 + 8, 16, 32, 128, device="cuda", dtype=torch.bfloat16)
        vc = torch.zeros_like(kc)
        slots = torch.randperm(kc.shape[0] * 16, device="cuda")[:tokens]
        providers = [("triton", store_kv.store_kv), ("torch_ref", store_kv.store_kv_ref)]
        from unicorn.kernels import cuda_ops

        if cuda_ops.available():
            providers.append(("cuda", cuda_ops.store_kv))
        for prov, fn in providers:
            w.add("store_kv", prov, "latency", f"T{tokens}:32x128", _time(lambda: fn(q, k, kc, vc, slots)), "ms")


def bench_sampling(w: Writer):
    from unicorn.kernels.sampling import sample, sample_full_ref

    vocab = 16384
    for batch in (2, 32, 256):
        cond = torch.randn(batch, vocab, device="cuda", dtype=torch.bfloat16)
        uncond = torch.randn_like(cond)
        f = dict(device="cuda")
        args = (cond, uncond, torch.full((batch,), 5.0, **f), torch.ones(batch, **f),
                torch.full((batch,), 4096, **f, dtype=torch.long), torch.full((batch,), 0.95, **f),
                torch.arange(batch, **f), torch.zeros(batch, **f, dtype=torch.long))
        x = f"B{batch}:V{vocab}:topk4096:topp0.95"
        tri = _time(lambda: sample(*args))
        ref = _time(lambda: sample_full_ref(*args), reps=20)
        w.add("sample", "triton", "latency", x, tri, "ms")
        w.add("sample", "torch_ref", "latency", x, ref, "ms")
        w.add("sample", "triton", "speedup", x, [r / t for r, t in zip(ref, tri)], "x")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument("--only", nargs="*", default=["decode", "varlen", "elementwise", "sampling"])
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench/kernels/run.py needs a CUDA GPU (torch.cuda.is_available() is False); nothing to run.")
        return 2
    try:
        import triton  # noqa: F401
    except ImportError:
        print("bench/kernels/run.py needs Triton: pip install 'triton>=3.6'")
        return 2
    w = Writer(pathlib.Path(args.out))
    for name in args.only:
        {"decode": bench_decode, "varlen": bench_varlen, "elementwise": bench_elementwise,
         "sampling": bench_sampling}[name](w)
    w.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
