// GroupNorm followed by SiLU (y = z * sigmoid(z), z = group_norm(x)) in one pass over each group, bit-identical
// to torch's CPU ops run one after the other (F.group_norm, then z * torch.sigmoid(z)): the same moments (ATen's
// RowwiseMoments header, built for torch's CPU capability and with FP contraction as torch's own build, see
// unicorn/kernels/cpu_ops.py), the same per-channel scale and shift, the same vectorised sigmoid (0 - z, Sleef
// exp u10, + 1, 1 / .). Groups must hold a multiple of 32 elements: then neither the moments nor torch's
// elementwise loop take a scalar tail (whose rounding depends on how each compiler contracts it). It saves a
// write and a read of the activation per normalisation, the sigmoid's temporary, and at several threads one
// parallel region per norm. unicorn/kernels/cpu_ops.py checks the equality once per process before use.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/native/cpu/moments_utils.h>

#include <algorithm>
#include <cmath>

namespace {
using Vec = at::vec::Vectorized<float>;

inline Vec silu_vec(Vec z) {
  Vec a = Vec(0.0f) - z;
  a = a.exp();
  a = a + Vec(1.0f);
  return z * a.reciprocal();
}
}  // namespace

// x: [N, C, *] contiguous float32; weight, bias: [C] float32. Returns silu(group_norm(x)) as a new tensor.
torch::Tensor group_norm_silu(torch::Tensor x, torch::Tensor weight, torch::Tensor bias, int64_t groups, double eps) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat && x.is_contiguous() && x.dim() >= 2,
              "x must be contiguous float32 [N, C, *]");
  const int64_t N = x.size(0), C = x.size(1);
  TORCH_CHECK(C % groups == 0 && weight.numel() == C && bias.numel() == C, "C must divide into groups; [C] affine");
  const int64_t HxW = N * C ? x.numel() / (N * C) : 0;
  auto w = weight.contiguous().to(torch::kFloat), b = bias.contiguous().to(torch::kFloat);
  auto y = torch::empty_like(x);
  const int64_t D = C / groups, group_size = D * HxW;
  TORCH_CHECK(group_size % 32 == 0, "each group must hold a multiple of 32 elements");
  const float* X = x.data_ptr<float>();
  const float* W = w.data_ptr<float>();
  const float* B = b.data_ptr<float>();
  float* Y = y.data_ptr<float>();
  at::parallel_for(0, N * groups, 1, [&](int64_t start, int64_t end) {
    for (int64_t i = start; i < end; ++i) {
      auto [mean, var] = at::native::RowwiseMoments(X + i * group_size, group_size);
      const float rstd = 1.0f / std::sqrt(std::max(var, 0.0f) + eps);  // in double, as torch's (eps is a double)
      for (int64_t j = 0; j < D; ++j) {
        const int64_t c = (i % groups) * D + j;
        const float scale = rstd * W[c];
        const float shift = std::fma(-scale, mean, B[c]);
        const int64_t offset = (i * D + j) * HxW;
        const float* xp = X + offset;
        float* yp = Y + offset;
        int64_t k = 0;
        for (; k + Vec::size() <= HxW; k += Vec::size()) {
          silu_vec(at::vec::fmadd(Vec::loadu(xp + k), Vec(scale), Vec(shift))).store(yp + k);
        }
        for (; k < HxW; ++k) {  // a channel's last elements: torch's vector sigmoid, lane-wise
          float lanes[Vec::size()];
          silu_vec(Vec(std::fma(scale, xp[k], shift))).store(lanes);
          yp[k] = lanes[0];
        }
      }
    }
  });
  return y;
}
