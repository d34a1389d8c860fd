// Counter-based Gumbel-max sampling on the CPU in one pass per row (noise, Gumbel transform, arg-max), the same
// scheme as unicorn/kernels/sampling.py and csrc/sampling.cu:
//   k1 = mix(seed_lo ^ mix(seed_hi ^ 0x9E3779B9) ^ mix(step_lo ^ 0x85EBCA6B)), k2 = mix(k1 ^ 0xC2B2AE35),
//   h = mix(mix(k1 ^ j) ^ k2), u = ((h >> 9) + 0.5) / 2^23, with mix = lowbias32.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <limits>

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
