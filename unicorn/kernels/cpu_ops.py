"""C++ CPU ops (csrc/cpu/), built at first use with torch's JIT extension loader and cached on disk.

If no compiler is available the build fails once, quietly, and callers keep the torch reference.
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

_SOURCES = [Path(__file__).resolve().parents[2] / "csrc" / "cpu" / name for name in ("paged_attention.cpp", "sampling.cpp")]


@functools.lru_cache(maxsize=1)
def load():
    """The compiled module (``paged_decode``, ``gumbel_argmax``, ``cfg_gumbel_argmax``), or None when it cannot be built here."""
    if os.environ.get("UNICORN_NO_CPU_OPS") or not all(source.exists() for source in _SOURCES):
        return None
    try:
        from torch.utils.cpp_extension import load_inline

        sources = [source.read_text() for source in _SOURCES]
        # The sources' hash in the name: checkouts with other versions of csrc/cpu (worktrees, branches) keep
        # separate builds instead of rebuilding over each other in torch's shared extensions directory.
        digest = hashlib.sha256("\0".join(sources).encode()).hexdigest()[:10]
        return load_inline(
            name=f"unicorn_cpu_ops_{digest}",
            cpp_sources=sources,
            functions=["paged_decode", "gumbel_argmax", "cfg_gumbel_argmax", "gumbel_fast_max_error"],
            # No FMA contraction: cfg_gumbel_argmax must round each CFG step as torch's separate ops do.
            extra_cflags=["-O3", "-march=native", "-fopenmp", "-ffp-contract=off"],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception:  # noqa: BLE001 - any build failure means "use the torch path"
        return None


def available() -> bool:
    return load() is not None


_CSRC = Path(__file__).resolve().parents[2] / "csrc" / "cpu"
# ATen's vector headers built for the capability torch dispatches to here, so that Vectorized<float> (and its Sleef
# exp) is the one torch's own kernels use.
_CAPABILITY_FLAGS = {
    "AVX2": ["-mavx2", "-mfma", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"],
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-DCPU_CAPABILITY=AVX512",
               "-DCPU_CAPABILITY_AVX512"],
}


def _build_for_capability(file_name: str, functions: list[str], fp_contract: str, agrees):
    """Builds csrc/cpu/``file_name`` for torch's CPU capability with ``-ffp-contract=fp_contract``; the module, or
    None when it cannot be built here or ``agrees(module)`` (its probe against the torch reference) is false."""
    import torch

    source_path = _CSRC / file_name
    capability = torch.backends.cpu.get_cpu_capability()
    if os.environ.get("UNICORN_NO_CPU_OPS") or capability not in _CAPABILITY_FLAGS or not source_path.exists():
        return None
    try:
        from torch.utils.cpp_extension import load_inline

        source = source_path.read_text()
        digest = hashlib.sha256((source + capability).encode()).hexdigest()[:10]
        module = load_inline(
            name=f"unicorn_{source_path.stem}_{digest}",
            cpp_sources=[source],
            functions=functions,
            extra_cflags=["-O3", "-fopenmp", f"-ffp-contract={fp_contract}", *_CAPABILITY_FLAGS[capability]],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception:  # noqa: BLE001 - any build failure means "use the torch path"
        return None
    return module if agrees(module) else None


@functools.lru_cache(maxsize=1)
def load_group_norm_silu():
    """The compiled ``group_norm_silu`` (csrc/cpu/group_norm_silu.cpp), or None when it cannot be built here or
    its output is not bit-identical to torch's group_norm + x * sigmoid(x) on a probe (then callers keep torch)."""

    def agrees(module) -> bool:
        import torch

        from unicorn.kernels.group_norm_silu import group_norm_silu_ref

        gen = torch.Generator().manual_seed(0)
        x = torch.randn(2, 64, 16, 13, generator=gen) * 3 + 0.5
        weight, bias = 1 + torch.randn(64, generator=gen) * 0.1, torch.randn(64, generator=gen) * 0.1
        return torch.equal(module.group_norm_silu(x, weight, bias, 32, 1e-6),
                           group_norm_silu_ref(x, weight, bias, 32, 1e-6))

    # FP contraction as in torch's own build (GCC's default): RowwiseMoments' scalar steps must round as torch's
    # compiled copy of the same header does.
    return _build_for_capability("group_norm_silu.cpp", ["group_norm_silu"], "fast", agrees)


@functools.lru_cache(maxsize=1)
def load_fused_elementwise():
    """The compiled ``rms_norm``, ``rope`` and ``silu_mul_`` (csrc/cpu/fused_elementwise.cpp), or None when they
    cannot be built here or disagree with the torch references on a probe (then callers keep torch)."""
    from unicorn.kernels.cpu_fused import fused_elementwise_agree

    # No FMA contraction: rope and silu_mul_ round each product as torch's separate ops do (same bits).
    return _build_for_capability("fused_elementwise.cpp", ["rms_norm", "rope", "silu_mul_"], "off",
                                 fused_elementwise_agree)
