// Counter-based Gumbel-max sampling (the RNG and arg-max half of unicorn/kernels/sampling.py) as plain CUDA.
// Compiles with `nvcc -c -arch=sm_90 sampling.cu`, no torch headers; the binding is in ops.cpp.
//
// u(seed, step, j) and the kernel's choice are bit-for-bit the scheme of unicorn.kernels.sampling:
//   k1 = mix(seed_lo ^ mix(seed_hi ^ 0x9E3779B9) ^ mix(step_lo ^ 0x85EBCA6B)), k2 = mix(k1 ^ 0xC2B2AE35),
//   h = mix(mix(k1 ^ j) ^ k2), u = ((h >> 9) + 0.5) / 2^23, with mix = lowbias32.
#include <cstdint>
#include <cuda_runtime.h>
#include <math_constants.h>

namespace {

__device__ __forceinline__ uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  x ^= x >> 16;
  return x;
}

__device__ __forceinline__ void row_keys(int64_t seed, int64_t step, uint32_t* k1, uint32_t* k2) {
  const uint64_t s = static_cast<uint64_t>(seed);
  const uint32_t lo = static_cast<uint32_t>(s), hi = static_cast<uint32_t>(s >> 32);
  *k1 = mix32(lo ^ mix32(hi ^ 0x9E3779B9u) ^ mix32(static_cast<uint32_t>(static_cast<uint64_t>(step)) ^ 0x85EBCA6Bu));
  *k2 = mix32(*k1 ^ 0xC2B2AE35u);
}

__device__ __forceinline__ float uniform(uint32_t k1, uint32_t k2, uint32_t j) {
  const uint32_t h = mix32(mix32(k1 ^ j) ^ k2);
  return (static_cast<float>(h >> 9) + 0.5f) * (1.0f / 8388608.0f);
}

__global__ void uniform_noise_kernel(const int64_t* __restrict__ seeds, const int64_t* __restrict__ steps,
                                     int64_t vocab, float* __restrict__ out) {
  const int64_t row = blockIdx.y;
  uint32_t k1, k2;
  row_keys(seeds[row], steps[row], &k1, &k2);
  for (int64_t j = blockIdx.x * blockDim.x + threadIdx.x; j < vocab; j += gridDim.x * blockDim.x)
    out[row * vocab + j] = uniform(k1, k2, static_cast<uint32_t>(j));
}

// One block per row: argmax_j (s_j + g_j) over s_j > -inf (greedy rows: argmax s_j), first index on ties.
template <int THREADS>
__global__ void gumbel_argmax_kernel(const float* __restrict__ scores, int64_t row_stride, int64_t vocab,
                                     const int64_t* __restrict__ seeds, const int64_t* __restrict__ steps,
                                     const float* __restrict__ temperature, int64_t* __restrict__ out) {
  const int64_t row = blockIdx.x;
  const bool greedy = temperature[row] <= 0.0f;
  uint32_t k1, k2;
  row_keys(seeds[row], steps[row], &k1, &k2);
  float best = -CUDART_INF_F;
  int64_t best_idx = vocab;  // larger than any index: loses every tie
  const float* s = scores + row * row_stride;
  for (int64_t j = threadIdx.x; j < vocab; j += THREADS) {
    float z = s[j];
    if (!greedy && z != -CUDART_INF_F) {
      // fp32 logs, correctly rounded via double: setup.py builds with --use_fast_math, which would turn logf
      // into the approximate __logf and break agreement with the torch reference.
      const float log_u = static_cast<float>(log(static_cast<double>(uniform(k1, k2, static_cast<uint32_t>(j)))));
      z += -static_cast<float>(log(static_cast<double>(-log_u)));
    }
    if (z > best) { best = z; best_idx = j; }  // j increases per thread: keeps the first on ties
  }
  __shared__ float s_val[THREADS];
  __shared__ int64_t s_idx[THREADS];
  s_val[threadIdx.x] = best;
  s_idx[threadIdx.x] = best_idx;
  __syncthreads();
  for (int stride = THREADS / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) {
      const float v = s_val[threadIdx.x + stride];
      const int64_t i = s_idx[threadIdx.x + stride];
      if (v > s_val[threadIdx.x] || (v == s_val[threadIdx.x] && i < s_idx[threadIdx.x])) {
        s_val[threadIdx.x] = v;
        s_idx[threadIdx.x] = i;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) out[row] = s_idx[0] == vocab ? 0 : s_idx[0];
}

}  // namespace

extern "C" {

// out: [batch, vocab] fp32 uniforms in (0, 1).
int unicorn_uniform_noise(const int64_t* seeds, const int64_t* steps, int64_t batch, int64_t vocab, float* out,
                          void* stream) {
  if (batch == 0 || vocab == 0) return 0;
  const unsigned blocks_x = static_cast<unsigned>((vocab + 255) / 256 < 64 ? (vocab + 255) / 256 : 64);
  uniform_noise_kernel<<<dim3(blocks_x, static_cast<unsigned>(batch)), 256, 0, static_cast<cudaStream_t>(stream)>>>(
      seeds, steps, vocab, out);
  return static_cast<int>(cudaGetLastError());
}

// scores: [batch, vocab] fp32, already temperature-scaled with filtered tokens at -inf; out: [batch] int64.
int unicorn_gumbel_argmax(const float* scores, int64_t row_stride, int64_t batch, int64_t vocab,
                          const int64_t* seeds, const int64_t* steps, const float* temperature, int64_t* out,
                          void* stream) {
  if (batch == 0) return 0;
  gumbel_argmax_kernel<512><<<static_cast<unsigned>(batch), 512, 0, static_cast<cudaStream_t>(stream)>>>(
      scores, row_stride, vocab, seeds, steps, temperature, out);
  return static_cast<int>(cudaGetLastError());
}

}  // extern "C"
