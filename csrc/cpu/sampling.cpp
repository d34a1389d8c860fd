// Counter-based Gumbel-max sampling on the CPU in one pass per row (noise, Gumbel transform, arg-max), the same
// scheme as unicorn/kernels/sampling.py and csrc/sampling.cu:
//   k1 = mix(seed_lo ^ mix(seed_hi ^ 0x9E3779B9) ^ mix(step_lo ^ 0x85EBCA6B)), k2 = mix(k1 ^ 0xC2B2AE35),
//   h = mix(mix(k1 ^ j) ^ k2), u = ((h >> 9) + 0.5) / 2^23, with mix = lowbias32.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <cstring>
#include <vector>
#include <algorithm>

namespace {
inline uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  x ^= x >> 16;
  return x;
}
}  // namespace

// scores: [B, V] fp32 (temperature-scaled, -inf where filtered out); seeds, steps: [B] int64; temperature: [B].
// Returns ids [B]: argmax_j (scores_j + gumbel_j), or argmax_j scores_j for greedy rows; first index on ties.
torch::Tensor gumbel_argmax(torch::Tensor scores, torch::Tensor seeds, torch::Tensor steps, torch::Tensor temperature) {
  TORCH_CHECK(scores.dim() == 2 && scores.scalar_type() == torch::kFloat, "scores must be [B, V] float32");
  auto s = scores.contiguous();
  auto seed = seeds.to(torch::kLong).contiguous();
  auto step = steps.to(torch::kLong).contiguous();
  auto temp = temperature.to(torch::kFloat).contiguous();
  const int64_t batch = s.size(0), vocab = s.size(1);
  auto out = torch::empty({batch}, torch::kLong);
  const float* sp = s.data_ptr<float>();
  const int64_t* seedp = seed.data_ptr<int64_t>();
  const int64_t* stepp = step.data_ptr<int64_t>();
  const float* tp = temp.data_ptr<float>();
  int64_t* op = out.data_ptr<int64_t>();
  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const uint64_t sd = static_cast<uint64_t>(seedp[r]);
      const uint32_t k1 = mix32(static_cast<uint32_t>(sd) ^ mix32(static_cast<uint32_t>(sd >> 32) ^ 0x9E3779B9u) ^
                                mix32(static_cast<uint32_t>(static_cast<uint64_t>(stepp[r])) ^ 0x85EBCA6Bu));
      const uint32_t k2 = mix32(k1 ^ 0xC2B2AE35u);
      const bool greedy = tp[r] <= 0.f;
      const float* row = sp + r * vocab;
      float best = -std::numeric_limits<float>::infinity();
      int64_t best_idx = 0;
      bool found = false;
      for (int64_t j = 0; j < vocab; ++j) {
        float z = row[j];
        if (!greedy && z != -std::numeric_limits<float>::infinity()) {
          const uint32_t h = mix32(mix32(k1 ^ static_cast<uint32_t>(j)) ^ k2);
          const float u = (static_cast<float>(h >> 9) + 0.5f) * (1.0f / 8388608.0f);
          z += -std::log(-std::log(u));
        }
        if (!found || z > best) {
          best = z;
          best_idx = j;
          found = true;
        }
      }
      op[r] = best_idx;
    }
  });
  return out;
}

// ---- fused CFG + temperature + Gumbel-max, vectorised ----------------------------------------------------------
// The same ids as the torch path (cfg_logits_ref, then s = x / T + 0, then gumbel_argmax) for rows without
// top-k / top-p: per row, pass 1 computes s exactly (the same fp32 operations in the same order; the build turns
// FMA contraction off) and z~ = s + g~ with a polynomial log that the compiler vectorises, keeping max z~; pass 2
// recomputes the exact z = s + (-log(-log u)) with std::log only where z~ is within kGumbelTol of that max. The
// fast noise's largest error over all 2^23 values u can take is gumbel_fast_max_error() (a test pins it far
// below the tolerance), so the exact arg-max is always among the rechecked entries; usually one is.
namespace {
constexpr float kGumbelTolAbs = 1e-4f;   // >= 2 * (noise error + rounding of s + g) for |z| below ~100
constexpr float kGumbelTolRel = 1e-6f;   // the rounding of s + g grows with |z|

inline float fast_log(float x) {  // x > 0 normal; Cephes logf, branch-free so loops over it vectorise
  int32_t bits;
  std::memcpy(&bits, &x, 4);
  int32_t e = ((bits >> 23) & 0xff) - 126;
  bits = (bits & 0x007fffff) | 0x3f000000;  // mantissa in [0.5, 1)
  float m;
  std::memcpy(&m, &bits, 4);
  // m < sqrt(1/2): e - 1 and 2m - 1, else m - 1. Chosen with a bit mask: GCC 12 keeps a conditional as a branch,
  // which left the noise loop scalar (43 ns per entry instead of 5).
  const int32_t small = -static_cast<int32_t>(m < 0.707106781186547524f);  // all ones where true
  e += small;
  const float twice = m + m - 1.0f, once = m - 1.0f;
  int32_t twice_bits, once_bits;
  std::memcpy(&twice_bits, &twice, 4);
  std::memcpy(&once_bits, &once, 4);
  const int32_t picked = (twice_bits & small) | (once_bits & ~small);
  std::memcpy(&m, &picked, 4);
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  const float fe = static_cast<float>(e);
  y += -2.12194440e-4f * fe;
  y += -0.5f * z;
  return (m + y) + 0.693359375f * fe;
}

inline float uniform_of(uint32_t k1, uint32_t k2, uint32_t j) {
  const uint32_t h = mix32(mix32(k1 ^ j) ^ k2);
  return (static_cast<float>(h >> 9) + 0.5f) * (1.0f / 8388608.0f);
}
}  // namespace

double gumbel_fast_max_error() {
  double worst = 0.0;
  for (uint32_t bits = 0; bits < (1u << 23); ++bits) {
    const float u = (static_cast<float>(bits) + 0.5f) * (1.0f / 8388608.0f);
    const float exact = -std::log(-std::log(u));
    const float fast = -fast_log(-fast_log(u));
    worst = std::max(worst, static_cast<double>(std::fabs(exact - fast)));
  }
  return worst;
}

// cond, uncond: [B, V] fp32 (uncond may be undefined: no CFG); scale, temperature: [B] fp32; seeds, steps: [B]
// int64. Returns ids [B] int64.
torch::Tensor cfg_gumbel_argmax(torch::Tensor cond, c10::optional<torch::Tensor> uncond_opt, torch::Tensor scale,
                                torch::Tensor temperature, torch::Tensor seeds, torch::Tensor steps) {
  TORCH_CHECK(cond.dim() == 2 && cond.scalar_type() == torch::kFloat, "cond logits must be [B, V] float32");
  auto c = cond.contiguous();
  const bool has_uncond = uncond_opt.has_value() && uncond_opt->defined();
  torch::Tensor u;
  if (has_uncond) {
    u = uncond_opt->contiguous();
    TORCH_CHECK(u.sizes() == c.sizes() && u.scalar_type() == torch::kFloat, "uncond must match cond");
  }
  auto sc = scale.to(torch::kFloat).contiguous();
  auto temp = temperature.to(torch::kFloat).contiguous();
  auto seed = seeds.to(torch::kLong).contiguous();
  auto step = steps.to(torch::kLong).contiguous();
  const int64_t batch = c.size(0), vocab = c.size(1);
  auto out = torch::empty({batch}, torch::kLong);
  const float* cp = c.data_ptr<float>();
  const float* up = has_uncond ? u.data_ptr<float>() : nullptr;
  const float* scp = sc.data_ptr<float>();
  const float* tp = temp.data_ptr<float>();
  const int64_t* seedp = seed.data_ptr<int64_t>();
  const int64_t* stepp = step.data_ptr<int64_t>();
  int64_t* op = out.data_ptr<int64_t>();
  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> z_buf(vocab);
    float* zf = z_buf.data();
    for (int64_t r = begin; r < end; ++r) {
      const float* cr = cp + r * vocab;
      const float* ur = has_uncond ? up + r * vocab : cr;
      const float scale_r = has_uncond ? scp[r] : 1.0f;
      const bool greedy = tp[r] <= 0.f;
      const float t = greedy ? 1.0f : tp[r];
      // s_j as torch computes it: uncond + scale * (cond - uncond), then / T + 0 (without uncond: cond / T + 0,
      // and cond + 1 * (cond - cond) is cond exactly)
      auto score = [&](int64_t j) { return (ur[j] + scale_r * (cr[j] - ur[j])) / t + 0.0f; };
      if (greedy) {  // the arg-max of x (= s at T = 1), first index on ties
        float best = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : best)
        for (int64_t j = 0; j < vocab; ++j) {
          const float x = score(j);
          best = x > best ? x : best;
        }
        int64_t best_idx = 0;
        while (best_idx < vocab - 1 && !(score(best_idx) == best)) ++best_idx;
        op[r] = best_idx;
        continue;
      }
      const uint64_t sd = static_cast<uint64_t>(seedp[r]);
      const uint32_t k1 = mix32(static_cast<uint32_t>(sd) ^ mix32(static_cast<uint32_t>(sd >> 32) ^ 0x9E3779B9u) ^
                                mix32(static_cast<uint32_t>(static_cast<uint64_t>(stepp[r])) ^ 0x85EBCA6Bu));
      const uint32_t k2 = mix32(k1 ^ 0xC2B2AE35u);
      float best_fast = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : best_fast)
      for (int64_t j = 0; j < vocab; ++j) {
        const float z = score(j) - fast_log(-fast_log(uniform_of(k1, k2, static_cast<uint32_t>(j))));
        zf[j] = z;
        best_fast = z > best_fast ? z : best_fast;
      }
      const float cutoff = best_fast - (kGumbelTolAbs + kGumbelTolRel * std::fabs(best_fast));
      // The exact z of the candidates (every entry when no z~ compares: NaN or +inf), as gumbel_argmax.
      const bool all = !(cutoff == cutoff);
      float best = -std::numeric_limits<float>::infinity();
      int64_t best_idx = -1;
      for (int64_t j = 0; j < vocab; ++j) {
        if (!all && !(zf[j] >= cutoff)) continue;
        float z = score(j);
        if (z != -std::numeric_limits<float>::infinity())
          z += -std::log(-std::log(uniform_of(k1, k2, static_cast<uint32_t>(j))));
        if (best_idx < 0 || z > best) {
          best = z;
          best_idx = j;
        }
      }
      op[r] = best_idx < 0 ? 0 : best_idx;
    }
  });
  return out;
}
