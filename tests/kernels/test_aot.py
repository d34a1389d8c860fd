"""Ahead-of-time compiles every Triton kernel for sm_90 (no GPU needed): catches lowering errors in CI."""
import os

import pytest

triton = pytest.importorskip("triton")
if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    pytest.skip("kernels are interpreter functions under TRITON_INTERPRET", allow_module_level=True)

import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from unicorn.kernels import paged_attention, rmsnorm, rope, sampling, store_kv, swiglu  # noqa: E402

os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
TARGET = GPUTarget("cuda", 90, 32)
BF, F32, I64, I32 = "*bf16", "*fp32", "*i64", "i32"


def _attn_common(cache):
    return dict(key_cache_ptr=cache, value_cache_ptr=cache, block_tables_ptr="*i32", seq_lens_ptr="*i32",
                sm_scale="fp32", k_scale="fp32", v_scale="fp32")


KERNELS = {
    "store_kv": (store_kv._store_kv_kernel,
                 dict(key_ptr=BF, value_ptr=BF, key_cache_ptr=BF, value_cache_ptr=BF, slot_ptr=I64,
                      key_stride_t=I32, key_stride_h=I32, value_stride_t=I32, value_stride_h=I32,
                      k_scale="fp32", v_scale="fp32"),
                 dict(NUM_HEADS=32, HEAD_DIM=128, BLOCK_H=32, BLOCK_D=128, QUANTIZE=False)),
    "store_kv_fp8": (store_kv._store_kv_kernel,
                     dict(key_ptr=BF, value_ptr=BF, key_cache_ptr="*fp8e4nv", value_cache_ptr="*fp8e4nv",
                          slot_ptr=I64, key_stride_t=I32, key_stride_h=I32, value_stride_t=I32,
                          value_stride_h=I32, k_scale="fp32", v_scale="fp32"),
                     dict(NUM_HEADS=4, HEAD_DIM=128, BLOCK_H=4, BLOCK_D=128, QUANTIZE=True)),
    "rms_norm": (rmsnorm._rms_norm_kernel,
                 dict(x_ptr=BF, residual_ptr=BF, weight_ptr=BF, out_ptr=BF, residual_out_ptr=BF,
                      x_stride=I32, residual_stride=I32, out_stride=I32, residual_out_stride=I32,
                      N=I32, eps="fp32"),
                 dict(HAS_RESIDUAL=True, BLOCK_N=4096)),
    "rope": (rope._rope_kernel,
             dict(q_ptr=BF, k_ptr=BF, pos_ptr=I64, inv_freq_ptr=F32, q_stride_t=I32, q_stride_h=I32,
                  k_stride_t=I32, k_stride_h=I32, num_q_heads=I32, num_k_heads=I32),
             dict(HALF=64, BLOCK_H=32, BLOCK_HALF=64)),
    "swiglu": (swiglu._swiglu_kernel,
               dict(gate_ptr=BF, up_ptr=BF, out_ptr=BF, gate_stride=I32, up_stride=I32, out_stride=I32, N=I32),
               dict(BLOCK_N=2048)),
    "sample": (sampling._sample_kernel,
               dict(cond_ptr=BF, uncond_ptr=BF, cfg_ptr=F32, temp_ptr=F32, top_k_ptr=I64, top_p_ptr=F32,
                    seed_ptr=I64, step_ptr=I64, scratch_ptr=F32, out_ptr=I64, vocab=I32, cond_stride=I32,
                    uncond_stride=I32),
               dict(HAS_UNCOND=True, BLOCK_V=4096)),
    "paged_decode_split_fp8": (paged_attention._paged_decode_kernel,
                               dict(q_ptr=BF, **_attn_common("*fp8e4nv"), out_ptr=BF, part_max_ptr=F32,
                                    part_sum_ptr=F32, part_acc_ptr=F32, q_stride_t=I32, q_stride_h=I32,
                                    out_stride_t=I32, out_stride_h=I32, table_stride=I32, num_parts=I32),
                               dict(GROUP=1, BLOCK_G=16, NUM_KV_HEADS=32, HEAD_DIM=128, BLOCK_D=128,
                                    BLOCK_SIZE=16, BLOCK_N=64, PART_SIZE=512, SPLIT=True, FP8=True,
                                    DOT_DTYPE=tl.bfloat16, PRECISION="tf32")),
    "paged_decode_gqa": (paged_attention._paged_decode_kernel,
                         dict(q_ptr=BF, **_attn_common(BF), out_ptr=BF, part_max_ptr=F32, part_sum_ptr=F32,
                              part_acc_ptr=F32, q_stride_t=I32, q_stride_h=I32, out_stride_t=I32,
                              out_stride_h=I32, table_stride=I32, num_parts=I32),
                         dict(GROUP=7, BLOCK_G=16, NUM_KV_HEADS=4, HEAD_DIM=128, BLOCK_D=128, BLOCK_SIZE=16,
                              BLOCK_N=64, PART_SIZE=512, SPLIT=False, FP8=False, DOT_DTYPE=tl.bfloat16,
                              PRECISION="tf32")),
    "paged_decode_reduce": (paged_attention._paged_decode_reduce_kernel,
                            dict(part_max_ptr=F32, part_sum_ptr=F32, part_acc_ptr=F32, out_ptr=BF,
                                 seq_lens_ptr="*i32", out_stride_t=I32, out_stride_h=I32, num_parts=I32),
                            dict(NUM_HEADS=32, HEAD_DIM=128, BLOCK_D=128, BLOCK_P=16, PART_SIZE=512)),
    "paged_varlen": (paged_attention._paged_varlen_kernel,
                     dict(q_ptr=BF, key_cache_ptr=BF, value_cache_ptr=BF, block_tables_ptr="*i32",
                          query_start_ptr="*i32", seq_lens_ptr="*i32", out_ptr=BF, sm_scale="fp32",
                          k_scale="fp32", v_scale="fp32", q_stride_t=I32, q_stride_h=I32, out_stride_t=I32,
                          out_stride_h=I32, table_stride=I32),
                     dict(GROUP=7, NUM_KV_HEADS=4, HEAD_DIM=128, BLOCK_D=128, BLOCK_SIZE=16, BLOCK_M=64,
                          BLOCK_N=64, CAUSAL=True, FP8=False, DOT_DTYPE=tl.bfloat16, PRECISION="tf32")),
}


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_compiles_for_sm90(name):
    fn, signature, constexprs = KERNELS[name]
    signature = {**signature, **{k: "constexpr" for k in constexprs}}
    compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs), target=TARGET)
    assert compiled.asm["cubin"] and ".target sm_90" in compiled.asm["ptx"]
    assert compiled.metadata.shared <= 227 * 1024  # fits an H100 SM's shared memory
    if name.startswith("paged_varlen"):
        assert "mma" in compiled.asm["ptx"]  # the dots reach the tensor cores
