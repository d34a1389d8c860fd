// Paged KV store (vLLM's reshape_and_cache) as plain CUDA: compiles with `nvcc -c -arch=sm_90 store_kv.cu`,
// no torch headers. The torch binding is in ops.cpp and calls the extern "C" launchers below.
//
// Cache layout per layer: [num_blocks, block_size, num_kv_heads, head_dim], contiguous, so slot s is the flat
// row s of [num_blocks * block_size, num_kv_heads * head_dim]. Negative slots are padding and are skipped.
#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

namespace {

// Same-dtype store: a byte copy, one thread block per token, in 16/8/4/2-byte words when aligned.
template <typename Word>
__global__ void store_kv_copy_kernel(const char* __restrict__ key, const char* __restrict__ value,
                                     char* __restrict__ key_cache, char* __restrict__ value_cache,
                                     const int64_t* __restrict__ slots, int64_t num_heads, int64_t row_bytes,
                                     int64_t key_stride_t, int64_t key_stride_h, int64_t value_stride_t,
                                     int64_t value_stride_h) {
  const int64_t token = blockIdx.x;
  const int64_t slot = slots[token];
  if (slot < 0) return;
  const int64_t words_per_head = row_bytes / sizeof(Word);
  for (int64_t i = threadIdx.x; i < num_heads * words_per_head; i += blockDim.x) {
    const int64_t head = i / words_per_head, w = i % words_per_head;
    const int64_t dst = (slot * num_heads + head) * words_per_head + w;
    reinterpret_cast<Word*>(key_cache)[dst] =
        reinterpret_cast<const Word*>(key + token * key_stride_t + head * key_stride_h)[w];
    reinterpret_cast<Word*>(value_cache)[dst] =
        reinterpret_cast<const Word*>(value + token * value_stride_t + head * value_stride_h)[w];
  }
}

template <typename T>
__device__ __forceinline__ float to_float(T x) { return static_cast<float>(x); }
template <>
__device__ __forceinline__ float to_float<__half>(__half x) { return __half2float(x); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }

// fp8 (e4m3, saturating round-to-nearest-even) store of x / scale; strides in elements.
template <typename T>
__global__ void store_kv_fp8_kernel(const T* __restrict__ key, const T* __restrict__ value,
                                    __nv_fp8_e4m3* __restrict__ key_cache, __nv_fp8_e4m3* __restrict__ value_cache,
                                    const int64_t* __restrict__ slots, int64_t num_heads, int64_t head_dim,
                                    int64_t key_stride_t, int64_t key_stride_h, int64_t value_stride_t,
                                    int64_t value_stride_h, float inv_k_scale, float inv_v_scale) {
  const int64_t token = blockIdx.x;
  const int64_t slot = slots[token];
  if (slot < 0) return;
  for (int64_t i = threadIdx.x; i < num_heads * head_dim; i += blockDim.x) {
    const int64_t head = i / head_dim, d = i % head_dim;
    const int64_t dst = (slot * num_heads + head) * head_dim + d;
    key_cache[dst] = __nv_fp8_e4m3(to_float(key[token * key_stride_t + head * key_stride_h + d]) * inv_k_scale);
    value_cache[dst] =
        __nv_fp8_e4m3(to_float(value[token * value_stride_t + head * value_stride_h + d]) * inv_v_scale);
  }
}

template <typename Word>
void launch_copy(const void* key, const void* value, void* key_cache, void* value_cache, const int64_t* slots,
                 int64_t num_tokens, int64_t num_heads, int64_t row_bytes, int64_t kst, int64_t ksh, int64_t vst,
                 int64_t vsh, cudaStream_t stream) {
  const int64_t words = num_heads * row_bytes / sizeof(Word);
  const int threads = static_cast<int>(words < 256 ? ((words + 31) / 32) * 32 : 256);
  store_kv_copy_kernel<Word><<<static_cast<unsigned>(num_tokens), threads, 0, stream>>>(
      static_cast<const char*>(key), static_cast<const char*>(value), static_cast<char*>(key_cache),
      static_cast<char*>(value_cache), slots, num_heads, row_bytes, kst, ksh, vst, vsh);
}

bool aligned(const void* p, int64_t n) { return reinterpret_cast<uintptr_t>(p) % n == 0; }

}  // namespace

extern "C" {

// Same-dtype store. Strides are in bytes; each head's head_dim elements must be contiguous. Returns a
// cudaError_t (0 on success).
int unicorn_store_kv(const void* key, const void* value, void* key_cache, void* value_cache, const int64_t* slots,
                     int64_t num_tokens, int64_t num_heads, int64_t head_dim, int64_t elem_bytes,
                     int64_t key_stride_t, int64_t key_stride_h, int64_t value_stride_t, int64_t value_stride_h,
                     void* stream) {
  if (num_tokens == 0) return 0;
  const int64_t row = head_dim * elem_bytes;
  const int64_t strides_or = row | key_stride_t | key_stride_h | value_stride_t | value_stride_h;
  auto fits = [&](int64_t n) {
    return strides_or % n == 0 && aligned(key, n) && aligned(value, n) && aligned(key_cache, n) &&
           aligned(value_cache, n);
  };
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (fits(16)) launch_copy<int4>(key, value, key_cache, value_cache, slots, num_tokens, num_heads, row,
                                  key_stride_t, key_stride_h, value_stride_t, value_stride_h, s);
  else if (fits(8)) launch_copy<int2>(key, value, key_cache, value_cache, slots, num_tokens, num_heads, row,
                                      key_stride_t, key_stride_h, value_stride_t, value_stride_h, s);
  else if (fits(4)) launch_copy<int>(key, value, key_cache, value_cache, slots, num_tokens, num_heads, row,
                                     key_stride_t, key_stride_h, value_stride_t, value_stride_h, s);
  else launch_copy<char>(key, value, key_cache, value_cache, slots, num_tokens, num_heads, row, key_stride_t,
                         key_stride_h, value_stride_t, value_stride_h, s);
  return static_cast<int>(cudaGetLastError());
}

// fp8 e4m3 store of x / scale. dtype: 0 = fp32, 1 = fp16, 2 = bf16. Strides in elements.
int unicorn_store_kv_fp8(const void* key, const void* value, void* key_cache, void* value_cache,
                         const int64_t* slots, int64_t num_tokens, int64_t num_heads, int64_t head_dim, int dtype,
                         int64_t key_stride_t, int64_t key_stride_h, int64_t value_stride_t, int64_t value_stride_h,
                         float k_scale, float v_scale, void* stream) {
  if (num_tokens == 0) return 0;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const unsigned grid = static_cast<unsigned>(num_tokens);
  auto* kc = static_cast<__nv_fp8_e4m3*>(key_cache);
  auto* vc = static_cast<__nv_fp8_e4m3*>(value_cache);
  const float ik = 1.0f / k_scale, iv = 1.0f / v_scale;
#define UNICORN_LAUNCH_FP8(T)                                                                                  \
  store_kv_fp8_kernel<T><<<grid, 128, 0, s>>>(static_cast<const T*>(key), static_cast<const T*>(value), kc, vc, \
                                              slots, num_heads, head_dim, key_stride_t, key_stride_h,          \
                                              value_stride_t, value_stride_h, ik, iv)
  switch (dtype) {
    case 0: UNICORN_LAUNCH_FP8(float); break;
    case 1: UNICORN_LAUNCH_FP8(__half); break;
    case 2: UNICORN_LAUNCH_FP8(__nv_bfloat16); break;
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
#undef UNICORN_LAUNCH_FP8
  return static_cast<int>(cudaGetLastError());
}

}  // extern "C"
