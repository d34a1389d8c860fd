// Torch binding of the plain-CUDA ops in csrc/*.cu (module unicorn._C, built by setup.py only with CUDA torch
// and nvcc). Only torch/extension.h is included: the caller passes the current CUDA stream as an integer
// (torch.cuda.current_stream().cuda_stream), so this file needs no CUDA headers.
#include <torch/extension.h>

#include <cstdint>

extern "C" {
int unicorn_store_kv(const void* key, const void* value, void* key_cache, void* value_cache, const int64_t* slots,
                     int64_t num_tokens, int64_t num_heads, int64_t head_dim, int64_t elem_bytes,
                     int64_t key_stride_t, int64_t key_stride_h, int64_t value_stride_t, int64_t value_stride_h,
                     void* stream);
int unicorn_store_kv_fp8(const void* key, const void* value, void* key_cache, void* value_cache,
                         const int64_t* slots, int64_t num_tokens, int64_t num_heads, int64_t head_dim, int dtype,
                         int64_t key_stride_t, int64_t key_stride_h, int64_t value_stride_t, int64_t value_stride_h,
                         float k_scale, float v_scale, void* stream);
int unicorn_uniform_noise(const int64_t* seeds, const int64_t* steps, int64_t batch, int64_t vocab, float* out,
                          void* stream);
int unicorn_gumbel_argmax(const float* scores, int64_t row_stride, int64_t batch, int64_t vocab,
                          const int64_t* seeds, const int64_t* steps, const float* temperature, int64_t* out,
                          void* stream);
}

namespace {

void* as_stream(int64_t stream) { return reinterpret_cast<void*>(static_cast<intptr_t>(stream)); }

void check_status(int status, const char* what) { TORCH_CHECK(status == 0, what, " failed: CUDA error ", status); }

void store_kv(const torch::Tensor& key, const torch::Tensor& value, torch::Tensor& key_cache,
              torch::Tensor& value_cache, const torch::Tensor& slot_mapping, double k_scale, double v_scale,
              int64_t stream) {
  TORCH_CHECK(key.is_cuda() && key.dim() == 3 && value.sizes() == key.sizes(), "key/value: [T, Hkv, D] on CUDA");
  TORCH_CHECK(key.stride(2) == 1 && value.stride(2) == 1, "key/value: head_dim must be contiguous");
  TORCH_CHECK(key_cache.is_contiguous() && value_cache.is_contiguous(), "caches must be contiguous");
  TORCH_CHECK(key_cache.size(2) == key.size(1) && key_cache.size(3) == key.size(2), "cache/key shape mismatch");
  TORCH_CHECK(slot_mapping.scalar_type() == torch::kInt64 && slot_mapping.is_contiguous(), "slots: int64");
  const auto t = key.size(0), h = key.size(1), d = key.size(2);
  if (key_cache.scalar_type() == at::ScalarType::Float8_e4m3fn) {
    int dtype = key.scalar_type() == torch::kFloat ? 0 : key.scalar_type() == torch::kHalf ? 1 : 2;
    TORCH_CHECK(dtype != 2 || key.scalar_type() == torch::kBFloat16, "fp8 store: fp32/fp16/bf16 inputs");
    check_status(unicorn_store_kv_fp8(key.data_ptr(), value.data_ptr(), key_cache.data_ptr(), value_cache.data_ptr(),
                                      slot_mapping.data_ptr<int64_t>(), t, h, d, dtype, key.stride(0),
                                      key.stride(1), value.stride(0), value.stride(1), static_cast<float>(k_scale),
                                      static_cast<float>(v_scale), as_stream(stream)),
                 "store_kv_fp8");
    return;
  }
  TORCH_CHECK(key_cache.scalar_type() == key.scalar_type(), "cache dtype must match key dtype (or be fp8)");
  const int64_t e = key.element_size();
  check_status(unicorn_store_kv(key.data_ptr(), value.data_ptr(), key_cache.data_ptr(), value_cache.data_ptr(),
                                slot_mapping.data_ptr<int64_t>(), t, h, d, e, key.stride(0) * e, key.stride(1) * e,
                                value.stride(0) * e, value.stride(1) * e, as_stream(stream)),
               "store_kv");
}

torch::Tensor uniform_noise(const torch::Tensor& seeds, const torch::Tensor& steps, int64_t vocab, int64_t stream) {
  TORCH_CHECK(seeds.is_cuda() && seeds.scalar_type() == torch::kInt64 && seeds.is_contiguous(), "seeds: int64");
  TORCH_CHECK(steps.scalar_type() == torch::kInt64 && steps.is_contiguous() && steps.numel() == seeds.numel());
  auto out = torch::empty({seeds.numel(), vocab}, seeds.options().dtype(torch::kFloat));
  check_status(unicorn_uniform_noise(seeds.data_ptr<int64_t>(), steps.data_ptr<int64_t>(), seeds.numel(), vocab,
                                     out.data_ptr<float>(), as_stream(stream)),
               "uniform_noise");
  return out;
}

torch::Tensor gumbel_argmax(const torch::Tensor& scores, const torch::Tensor& seeds, const torch::Tensor& steps,
                            const torch::Tensor& temperature, int64_t stream) {
  TORCH_CHECK(scores.is_cuda() && scores.dim() == 2 && scores.scalar_type() == torch::kFloat, "scores: [B, V] fp32");
  TORCH_CHECK(scores.stride(1) == 1, "scores: vocab must be contiguous");
  TORCH_CHECK(seeds.scalar_type() == torch::kInt64 && steps.scalar_type() == torch::kInt64, "seeds/steps: int64");
  TORCH_CHECK(temperature.scalar_type() == torch::kFloat && temperature.is_contiguous(), "temperature: fp32");
  auto out = torch::empty({scores.size(0)}, scores.options().dtype(torch::kInt64));
  check_status(unicorn_gumbel_argmax(scores.data_ptr<float>(), scores.stride(0), scores.size(0), scores.size(1),
                                     seeds.contiguous().data_ptr<int64_t>(), steps.contiguous().data_ptr<int64_t>(),
                                     temperature.data_ptr<float>(), out.data_ptr<int64_t>(), as_stream(stream)),
               "gumbel_argmax");
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("store_kv", &store_kv, "Paged K/V store (fp8 e4m3 with scales when the cache is fp8)");
  m.def("uniform_noise", &uniform_noise, "Counter-based uniforms u(seed, step, j): [B, V] fp32");
  m.def("gumbel_argmax", &gumbel_argmax, "argmax_j(scores + gumbel(u(seed, step, j))), greedy when T <= 0");
}
