"""Where an engine step's time goes, next to what this machine allows for each part.

``measure_machine`` times this machine's matmul GFLOP/s and memory read bandwidth (with the threads torch uses
now). ``StepProfile`` wraps, for one engine, the places the hot path passes through -- every ``F.linear`` and
packed oneDNN linear (GEMMs, with their FLOPs), ``paged_attention`` (with the KV bytes each call reads), the
runner's input preparation and sampling, the scheduler -- and keeps each region's *exclusive* wall time (a region's
time minus that of the regions inside it), so the parts add up to the steps' total. The limits: GEMM FLOPs / matmul
GFLOP/s or weight bytes / bandwidth per GEMM (the longer), KV bytes / bandwidth, logits bytes / bandwidth for
sampling; scheduling and input preparation have no floor of their own (ideally ~0).

The wrappers cost a few perf_counter calls per linear layer (well under 1 % of a CPU step); on CUDA every region
would need a sync, so the bench turns the profile off there unless asked.
"""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict

import torch
import torch.nn.functional as F

from device_stats import best_of


def measure_machine(dtype: torch.dtype = torch.float32, gemm_shapes: list[tuple[int, int, int]] = ()) -> dict:
    """Matmul GFLOP/s and memory read bandwidth of this machine with the threads torch uses now: the best of many
    short repeats (a 512^3 GEMM, the workload's own (M, K, N) GEMM shapes if given, a sum over a buffer larger than
    the caches), so that on a machine shared with other jobs some repeats run undisturbed. ``gemm_gflops`` is the
    best of the GEMM rates."""
    n = 512
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    square = 2 * n**3 / best_of(lambda: torch.mm(a, b), 50) / 1e9
    at_shapes = {}
    for m, k, out in gemm_shapes:
        x = torch.randn(m, k, dtype=dtype)
        w = torch.randn(out, k, dtype=dtype)
        at_shapes[f"{m}x{k}x{out}"] = 2 * m * k * out / best_of(lambda: F.linear(x, w), 30) / 1e9
    buf = torch.ones(32 << 20, dtype=torch.float32)  # 128 MiB, 4x the L3 here
    read_gbs = buf.numel() * 4 / best_of(lambda: buf.sum(), 20) / 1e9
    return {"threads": torch.get_num_threads(), "dtype": str(dtype).split(".")[-1],
            "gemm_gflops": max([square, *at_shapes.values()]), "gemm_gflops_512": square,
            "gemm_gflops_at_shapes": at_shapes, "read_gbs": read_gbs}


class StepProfile:
    """Exclusive wall time per region and the work counters (FLOPs, bytes) of one engine's steps."""

    def __init__(self) -> None:
        self.exclusive: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.gemm_flops = 0
        self.gemm_shapes: dict[tuple[int, int, int], int] = defaultdict(int)
        self.kv_bytes = 0
        self.logits_bytes = 0
        self._stack: list[list] = []  # [name, start, time of children]
        self._undo: list = []

    # ---- regions ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def region(self, name: str):
        frame = [name, time.perf_counter(), 0.0]
        self._stack.append(frame)
        try:
            yield
        finally:
            self._stack.pop()
            elapsed = time.perf_counter() - frame[1]
            self.exclusive[name] += elapsed - frame[2]
            self.calls[name] += 1
            if self._stack:
                self._stack[-1][2] += elapsed

    def _wrap(self, owner, attr: str, name: str, count=None) -> None:
        original = getattr(owner, attr)
        profile = self

        def wrapped(*args, **kwargs):
            if count is not None:
                count(*args, **kwargs)
            with profile.region(name):
                return original(*args, **kwargs)

        # Modules and classes get their attribute back; instances lose the shadowing one.
        restore = isinstance(owner, (type, type(F)))
        setattr(owner, attr, wrapped)
        self._undo.append((owner, attr, original if restore else None))

    # ---- counters ---------------------------------------------------------------------------------
    def _count_linear(self, x, weight, bias=None) -> None:
        m = x.numel() // x.shape[-1]
        out, k = weight.shape
        self.gemm_flops += 2 * m * k * out
        self.gemm_shapes[(m, k, out, weight.element_size())] += 1

    def gemm_limit_s(self, gflops: float, gbs: float) -> float:
        """Roofline of the GEMMs: per call the longer of its FLOPs at the matmul rate and its weight read at the
        read bandwidth (a decode step's few rows reuse each weight little, and the KV reads between the layers
        leave no weight in the caches)."""
        return sum(count * max(2 * m * k * out / (gflops * 1e9), k * out * size / (gbs * 1e9))
                   for (m, k, out, size), count in self.gemm_shapes.items())

    @property
    def weight_bytes(self) -> int:
        return sum(count * k * out * size for (m, k, out, size), count in self.gemm_shapes.items())

    def _count_attention(self, q, k, v, cache, meta, scale) -> None:
        row_bytes = 2 * cache.key.shape[2] * cache.key.shape[3] * cache.key.element_size()  # K and V of one token
        self.kv_bytes += sum(meta.seq_lens_cpu) * row_bytes

    def _count_sampling(self, sampler, cond, uncond, cfg_scale, batch) -> None:
        self.logits_bytes += cond.numel() * cond.element_size() * (1 if uncond is None else 2)

    # ---- wiring -----------------------------------------------------------------------------------
    def attach(self, engine) -> "StepProfile":
        """Wraps the hot path of ``engine`` (a Janus-style model: layers call ``paged_attention`` from
        unicorn.models.layers) until :meth:`detach`."""
        import unicorn.kernels.cpu_linear as cpu_linear
        import unicorn.models.layers as layers

        self._wrap(engine, "_advance", "scheduling")  # the step's remainder after the regions below
        self._wrap(engine.runner, "_embed", "input prep")
        self._wrap(engine.runner, "_metadata", "input prep")
        self._wrap(engine.runner, "_sample", "sampling")  # its GEMMs (the heads) count as GEMMs
        self._wrap(engine.runner.model, "forward", "elementwise")  # norms, rope, residuals, SwiGLU, embeddings
        self._wrap(type(engine.runner.sampler), "__call__", "sampling", self._count_sampling)
        self._wrap(layers, "paged_attention", "attention", self._count_attention)
        self._wrap(F, "linear", "GEMMs", self._count_linear)
        self._wrap(cpu_linear, "linear", "GEMMs", self._count_linear)  # packed: the same [out, in] shape
        return self

    def detach(self) -> None:
        while self._undo:
            owner, attr, original = self._undo.pop()
            if original is None:
                delattr(owner, attr)
            else:
                setattr(owner, attr, original)

    # ---- report -----------------------------------------------------------------------------------
    def table(self, machine: dict, total_s: float, decode_s: float | None, decode_flops: float | None,
              num_images: int) -> tuple[str, dict]:
        """A printable breakdown and its figures (seconds per image, limits, share of the limit)."""
        gflops, gbs = machine["gemm_gflops"], machine["read_gbs"]
        limits = {
            "GEMMs": self.gemm_limit_s(gflops, gbs),
            "attention": self.kv_bytes / (gbs * 1e9),
            "sampling": self.logits_bytes / (gbs * 1e9),
            "elementwise": None, "input prep": None, "scheduling": None,
        }
        parts = dict(self.exclusive)
        parts["scheduling"] = parts.get("scheduling", 0.0) + max(0.0, total_s - sum(parts.values()))
        lines = [f"per-step breakdown over {self.calls.get('scheduling', 0)} steps ({total_s:.1f}s, "
                 f"{machine['threads']} thread(s)); limits from {gflops:.0f} GFLOP/s matmul, {gbs:.1f} GB/s read:",
                 f"  {'part':<12} {'s':>7} {'share':>6} {'limit s':>8} {'of limit':>8}  work"]
        work = {"GEMMs": f"{self.gemm_flops / 1e9:.0f} GFLOP, {self.weight_bytes / 1e9:.0f} GB weights", "attention": f"{self.kv_bytes / 1e9:.1f} GB KV",
                "sampling": f"{self.logits_bytes / 1e9:.2f} GB logits"}
        for name in ("GEMMs", "attention", "sampling", "elementwise", "input prep", "scheduling"):
            spent, limit = parts.get(name, 0.0), limits[name]
            share = f"{100 * limit / spent:7.0f}%" if limit and spent else f"{'-':>8}"
            lines.append(f"  {name:<12} {spent:7.2f} {100 * spent / total_s:5.0f}% "
                         f"{(f'{limit:8.2f}' if limit is not None else f'{chr(45):>8}')} {share}  {work.get(name, '')}")
        token_limit = limits["GEMMs"] + limits["attention"]
        lines.append(f"  tokens limit (GEMM roofline + KV reads, no overlap): {token_limit:.1f}s = "
                     f"{num_images / token_limit:.2f} img/s; reached {100 * token_limit / total_s:.0f}%")
        figures = {"parts_s": parts, "limits_s": {k: v for k, v in limits.items() if v is not None},
                   "gemm_gflop": self.gemm_flops / 1e9, "kv_gb": self.kv_bytes / 1e9,
                   "token_limit_img_per_s": num_images / token_limit, "token_share_of_limit": token_limit / total_s}
        if decode_s is not None and decode_flops:
            decode_limit = decode_flops / (gflops * 1e9)
            lines.append(f"  VQ decode {decode_s:.1f}s, limit {decode_limit:.1f}s ({decode_flops / 1e9:.0f} GFLOP "
                         f"of convolutions and matmuls): {100 * decode_limit / decode_s:.0f}% of it")
            figures.update(decode_limit_s=decode_limit, decode_gflop=decode_flops / 1e9)
        return "\n".join(lines), figures


def count_flops(fn) -> float:
    """FLOPs of one call of ``fn`` (convolutions, matmuls) by torch's flop counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())
