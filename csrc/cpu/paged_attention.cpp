// Paged decode attention on the CPU: one query per sequence attends to its context by walking the block
// table, so K/V are read once, in place (no gather copy, no padding mask). Per sequence: scores of every head
// into a small buffer, softmax, then the weighted V rows. Built at run time by unicorn/kernels/cpu_ops.py.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

// Calls visit(t, h, head) for every cached token t < len of one sequence and every query head h, where head points at
// h's KV head in t's slot. Blocks, then rows within a block, then KV heads and their query heads: no integer
// division per row or head (they cost as much as a row's dot products).
template <typename scalar_t, typename Visit>
static inline void walk_heads(const scalar_t* cache, const int64_t* table, int64_t len, int64_t block_size,
                              int64_t block_stride, int64_t num_kv_heads, int64_t group, int64_t head_dim,
                              Visit&& visit) {
  const int64_t token_stride = num_kv_heads * head_dim;
  for (int64_t t0 = 0; t0 < len; t0 += block_size) {
    const scalar_t* block = cache + table[t0 / block_size] * block_stride;
    const int64_t rows = std::min(block_size, len - t0);
    for (int64_t i = 0; i < rows; ++i) {
      const scalar_t* row = block + i * token_stride;
      for (int64_t kv = 0, h = 0; kv < num_kv_heads; ++kv)
        for (int64_t g = 0; g < group; ++g, ++h) visit(t0 + i, h, row + kv * head_dim);
    }
  }
}

template <typename scalar_t>
static void decode_kernel(const float* q, const scalar_t* k_cache, const scalar_t* v_cache,
                          const int64_t* block_tables, const int64_t* seq_lens, float* out,
                          int64_t num_seqs, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                          int64_t block_size, int64_t max_blocks, float scale) {
  const int64_t group = num_heads / num_kv_heads;
  const int64_t token_stride = num_kv_heads * head_dim;  // one slot holds every KV head, contiguously
  const int64_t block_stride = block_size * token_stride;
  // One sequence per work item, all heads together, so each cached token row is read once, in order.
  at::parallel_for(0, num_seqs, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    std::vector<float> acc(num_heads * head_dim);
    for (int64_t s = begin; s < end; ++s) {
      const int64_t len = seq_lens[s];
      const int64_t* table = block_tables + s * max_blocks;
      const float* qs = q + s * num_heads * head_dim;
      scores.assign(num_heads * len, 0.f);
      walk_heads(k_cache, table, len, block_size, block_stride, num_kv_heads, group, head_dim,
                 [&](int64_t t, int64_t h, const scalar_t* kp) {
                   const float* qh = qs + h * head_dim;
                   float dot = 0.f;
#pragma omp simd reduction(+ : dot)
                   for (int64_t d = 0; d < head_dim; ++d) dot += qh[d] * static_cast<float>(kp[d]);
                   scores[h * len + t] = dot * scale;
                 });
      for (int64_t h = 0; h < num_heads; ++h) {
        float* sh = scores.data() + h * len;
        float max_score = -std::numeric_limits<float>::infinity();
        for (int64_t t = 0; t < len; ++t) max_score = sh[t] > max_score ? sh[t] : max_score;
        float total = 0.f;
        for (int64_t t = 0; t < len; ++t) {
          sh[t] = std::exp(sh[t] - max_score);
          total += sh[t];
        }
        const float inv = 1.f / total;
        for (int64_t t = 0; t < len; ++t) sh[t] *= inv;
      }
      std::fill(acc.begin(), acc.end(), 0.f);
      walk_heads(v_cache, table, len, block_size, block_stride, num_kv_heads, group, head_dim,
                 [&](int64_t t, int64_t h, const scalar_t* vp) {
                   const float p = scores[h * len + t];
                   float* ah = acc.data() + h * head_dim;
#pragma omp simd
                   for (int64_t d = 0; d < head_dim; ++d) ah[d] += p * static_cast<float>(vp[d]);
                 });
      std::copy(acc.begin(), acc.end(), out + s * num_heads * head_dim);
    }
  });
}

// q: [B, Hq, D]; caches: [num_blocks, block_size, Hkv, D] (fp32, bf16, fp16, or fp8 e4m3 holding x / k_scale
// and x / v_scale); block_tables: [B, max_blocks] int64; seq_lens: [B] int64. Returns [B, Hq, D] in q's dtype
// (computed in fp32). An fp8 cache's scales fold into the softmax scale (K) and the output (V).
torch::Tensor paged_decode(torch::Tensor q, torch::Tensor k_cache, torch::Tensor v_cache,
                           torch::Tensor block_tables, torch::Tensor seq_lens, double scale, double k_scale = 1.0,
                           double v_scale = 1.0) {
  TORCH_CHECK(q.dim() == 3 && k_cache.dim() == 4 && v_cache.sizes() == k_cache.sizes(), "bad shapes");
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous(), "caches must be contiguous");
  auto qf = q.to(torch::kFloat).contiguous();
  auto tables = block_tables.to(torch::kLong).contiguous();
  auto lens = seq_lens.to(torch::kLong).contiguous();
  auto out = torch::empty_like(qf);
  const int64_t num_seqs = q.size(0), num_heads = q.size(1), head_dim = q.size(2);
  const int64_t block_size = k_cache.size(1), num_kv_heads = k_cache.size(2);
  TORCH_CHECK(k_cache.size(3) == head_dim && num_heads % num_kv_heads == 0, "head shapes do not match");
  if (k_cache.scalar_type() == at::kFloat8_e4m3fn) {
    TORCH_CHECK(v_cache.scalar_type() == at::kFloat8_e4m3fn, "K and V caches must share a dtype");
    decode_kernel<c10::Float8_e4m3fn>(qf.data_ptr<float>(), k_cache.data_ptr<c10::Float8_e4m3fn>(),
                                      v_cache.data_ptr<c10::Float8_e4m3fn>(), tables.data_ptr<int64_t>(),
                                      lens.data_ptr<int64_t>(), out.data_ptr<float>(), num_seqs, num_heads,
                                      num_kv_heads, head_dim, block_size, tables.size(1),
                                      static_cast<float>(scale * k_scale));
    if (v_scale != 1.0) out.mul_(v_scale);
    return out.to(q.scalar_type());
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, k_cache.scalar_type(), "paged_decode", [&] {
    decode_kernel<scalar_t>(qf.data_ptr<float>(), k_cache.data_ptr<scalar_t>(), v_cache.data_ptr<scalar_t>(),
                            tables.data_ptr<int64_t>(), lens.data_ptr<int64_t>(), out.data_ptr<float>(), num_seqs,
                            num_heads, num_kv_heads, head_dim, block_size, tables.size(1), static_cast<float>(scale));
  });
  return out.to(q.scalar_type());
}
