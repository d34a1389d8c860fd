// Elementwise chains of a decoder layer in one pass each, for fp32 CPU inference (torch runs them as 4 to 6
// separate ops, each a full read and write of the activation): RMSNorm, rotary embedding, SiLU-and-multiply.
// The references are unicorn.kernels.rmsnorm.rms_norm_ref, unicorn.models.layers.apply_rope and
// unicorn.kernels.swiglu.swiglu_ref; results agree to float rounding (sums in another order), not bit for bit.
// Built at run time by unicorn/kernels/cpu_ops.py for torch's CPU capability (ATen's Vectorized<float>).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <cmath>

namespace {
using Vec = at::vec::Vectorized<float>;

void check_rows(const torch::Tensor& x, const char* name) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat && x.dim() == 2 && x.stride(1) == 1,
              name, " must be float32 [N, n] with contiguous rows");
}
}  // namespace

// x: [N, n] (rows contiguous, any row stride); weight: [n]. Returns weight * x / sqrt(mean(x^2) + eps), [N, n].
torch::Tensor rms_norm(torch::Tensor x, torch::Tensor weight, double eps) {
  check_rows(x, "x");
  const int64_t rows = x.size(0), n = x.size(1);
  TORCH_CHECK(weight.scalar_type() == torch::kFloat && weight.is_contiguous() && weight.numel() == n, "weight: [n] fp32");
  auto y = torch::empty({rows, n}, x.options());
  const float* X = x.data_ptr<float>();
  const float* W = weight.data_ptr<float>();
  float* Y = y.data_ptr<float>();
  const int64_t stride = x.stride(0);
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* xp = X + r * stride;
      float* yp = Y + r * n;
      Vec acc(0.f);
      int64_t k = 0;
      for (; k + Vec::size() <= n; k += Vec::size()) {
        Vec v = Vec::loadu(xp + k);
        acc = at::vec::fmadd(v, v, acc);
      }
      float sum = at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return a + b; }, acc);
      for (; k < n; ++k) sum += xp[k] * xp[k];
      const float inv = 1.f / std::sqrt(sum / static_cast<float>(n) + static_cast<float>(eps));
      k = 0;
      for (; k + Vec::size() <= n; k += Vec::size()) {
        (Vec::loadu(xp + k) * Vec(inv) * Vec::loadu(W + k)).store(yp + k);
      }
      for (; k < n; ++k) yp[k] = xp[k] * inv * W[k];
    }
  });
  return y;
}

// x: [T, H, D] (D contiguous, any token and head strides); cos, sin: [T, D] contiguous. Returns the rotate-half
// rotation x * cos + rotate_half(x) * sin as a new contiguous [T, H, D].
torch::Tensor rope(torch::Tensor x, torch::Tensor cos, torch::Tensor sin) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat && x.dim() == 3 && x.stride(2) == 1, "x: float32 [T, H, D]");
  const int64_t T = x.size(0), H = x.size(1), D = x.size(2), half = D / 2;
  TORCH_CHECK(D % 2 == 0 && cos.sizes() == torch::IntArrayRef({T, D}) && sin.sizes() == cos.sizes() &&
              cos.is_contiguous() && sin.is_contiguous() && cos.scalar_type() == torch::kFloat &&
              sin.scalar_type() == torch::kFloat, "cos, sin: contiguous float32 [T, D]");
  auto y = torch::empty({T, H, D}, x.options());
  const float* X = x.data_ptr<float>();
  const float* C = cos.data_ptr<float>();
  const float* S = sin.data_ptr<float>();
  float* Y = y.data_ptr<float>();
  const int64_t st = x.stride(0), sh = x.stride(1);
  at::parallel_for(0, T, 16, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const float* c = C + t * D;
      const float* s = S + t * D;
      for (int64_t h = 0; h < H; ++h) {
        const float* xp = X + t * st + h * sh;
        float* yp = Y + (t * H + h) * D;
        int64_t k = 0;
        for (; k + Vec::size() <= half; k += Vec::size()) {
          Vec lo = Vec::loadu(xp + k), hi = Vec::loadu(xp + half + k);
          (lo * Vec::loadu(c + k) - hi * Vec::loadu(s + k)).store(yp + k);
          (hi * Vec::loadu(c + half + k) + lo * Vec::loadu(s + half + k)).store(yp + half + k);
        }
        for (; k < half; ++k) {
          const float lo = xp[k], hi = xp[half + k];
          yp[k] = lo * c[k] - hi * s[k];
          yp[half + k] = hi * c[half + k] + lo * s[half + k];
        }
      }
    }
  });
  return y;
}

// gate, up: [N, I] (rows contiguous, any row strides). Writes silu(gate) * up into gate and returns it.
torch::Tensor silu_mul_(torch::Tensor gate, torch::Tensor up) {
  check_rows(gate, "gate");
  check_rows(up, "up");
  TORCH_CHECK(gate.sizes() == up.sizes(), "gate and up must have one shape");
  const int64_t rows = gate.size(0), n = gate.size(1);
  float* G = gate.data_ptr<float>();
  const float* U = up.data_ptr<float>();
  const int64_t sg = gate.stride(0), su = up.stride(0);
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      float* gp = G + r * sg;
      const float* up_ = U + r * su;
      int64_t k = 0;
      for (; k + Vec::size() <= n; k += Vec::size()) {
        Vec g = Vec::loadu(gp + k);
        (g / (Vec(1.f) + g.neg().exp()) * Vec::loadu(up_ + k)).store(gp + k);
      }
      for (; k < n; ++k) gp[k] = gp[k] / (1.f + std::exp(-gp[k])) * up_[k];
    }
  });
  return gate;
}
