// Torch-facing CUDA launchers of landscape::batched_linear and landscape::fused_mlp2.
//
// Compiled only in the CUDAExtension build (torch with CUDA + nvcc). Checks the inputs (the
// checks shared with the CPU kernels, csrc/batched_linear.h, then the CUDA limits), makes
// them contiguous, and calls the raw-pointer launchers of batched_linear.cu on the current
// stream. float32 and float64.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include "../batched_linear.h"

namespace landscape {
namespace cuda {

// Defined in batched_linear.cu.
int64_t fused_mlp2_workspace_elements(int64_t K, int64_t in_features, int64_t H, int64_t O);
cudaError_t launch_batched_linear_f32(const float* x, bool per_point_input,
                                      const float* basis_weight, const float* basis_bias,
                                      const float* coeffs, float* out, int64_t K, int64_t N,
                                      int64_t in_features, int64_t out_features, int64_t J,
                                      cudaStream_t stream);
cudaError_t launch_batched_linear_f64(const double* x, bool per_point_input,
                                      const double* basis_weight, const double* basis_bias,
                                      const double* coeffs, double* out, int64_t K, int64_t N,
                                      int64_t in_features, int64_t out_features, int64_t J,
                                      cudaStream_t stream);
cudaError_t launch_fused_mlp2_f32(const float* x, const float* w1_basis, const float* b1_basis,
                                  const float* w2_basis, const float* b2_basis,
                                  const float* coeffs, float* out, float* workspace, int64_t K,
                                  int64_t N, int64_t in_features, int64_t H, int64_t O,
                                  int64_t J, int activation, cudaStream_t stream);
cudaError_t launch_fused_mlp2_f64(const double* x, const double* w1_basis,
                                  const double* b1_basis, const double* w2_basis,
                                  const double* b2_basis, const double* coeffs, double* out,
                                  double* workspace, int64_t K, int64_t N, int64_t in_features,
                                  int64_t H, int64_t O, int64_t J, int activation,
                                  cudaStream_t stream);

namespace {

void check_cuda(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, what, " failed: ", cudaGetErrorString(err));
}

template <typename T>
const T* optional_ptr(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

at::Tensor contiguous_or_undefined(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->contiguous() : at::Tensor();
}

}  // namespace

at::Tensor batched_linear_cuda(const at::Tensor& x, const at::Tensor& basis_weight,
                               const std::optional<at::Tensor>& basis_bias,
                               const at::Tensor& coeffs) {
  check_batched_linear_inputs(x, basis_weight, basis_bias, coeffs);
  TORCH_CHECK(x.is_cuda(), "x should be a CUDA tensor for the CUDA kernel, got ", x.device());
  const int64_t J = basis_weight.size(0);
  const int64_t out_features = basis_weight.size(1);
  const int64_t in_features = basis_weight.size(2);
  TORCH_CHECK(J <= 64, "basis_weight should hold at most 64 basis tensors on CUDA, got J=", J);
  const int64_t K = coeffs.size(0);
  const int64_t N = x.size(-2);

  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor xc = x.contiguous();
  const at::Tensor bw = basis_weight.contiguous();
  const at::Tensor bb = contiguous_or_undefined(basis_bias);
  const at::Tensor c = coeffs.contiguous();
  at::Tensor out = at::empty({K, N, out_features}, x.options());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const bool per_point = x.dim() == 3;
  cudaError_t err;
  if (x.scalar_type() == at::kFloat) {
    err = launch_batched_linear_f32(xc.const_data_ptr<float>(), per_point,
                                    bw.const_data_ptr<float>(), optional_ptr<float>(bb),
                                    c.const_data_ptr<float>(), out.mutable_data_ptr<float>(), K,
                                    N, in_features, out_features, J, stream);
  } else {
    err = launch_batched_linear_f64(xc.const_data_ptr<double>(), per_point,
                                    bw.const_data_ptr<double>(), optional_ptr<double>(bb),
                                    c.const_data_ptr<double>(), out.mutable_data_ptr<double>(),
                                    K, N, in_features, out_features, J, stream);
  }
  check_cuda(err, "landscape::batched_linear CUDA kernel launch");
  return out;
}

at::Tensor fused_mlp2_cuda(const at::Tensor& x, const at::Tensor& w1_basis,
                           const std::optional<at::Tensor>& b1_basis, const at::Tensor& w2_basis,
                           const std::optional<at::Tensor>& b2_basis, const at::Tensor& coeffs,
                           int64_t activation) {
  check_fused_mlp2_inputs(x, w1_basis, b1_basis, w2_basis, b2_basis, coeffs, activation);
  TORCH_CHECK(x.is_cuda(), "x should be a CUDA tensor for the CUDA kernel, got ", x.device());
  const int64_t J = w1_basis.size(0);
  const int64_t H = w1_basis.size(1);
  const int64_t in_features = w1_basis.size(2);
  const int64_t O = w2_basis.size(1);
  const int64_t K = coeffs.size(0);
  const int64_t N = x.size(0);

  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor xc = x.contiguous();
  const at::Tensor w1 = w1_basis.contiguous();
  const at::Tensor w2 = w2_basis.contiguous();
  const at::Tensor b1 = contiguous_or_undefined(b1_basis);
  const at::Tensor b2 = contiguous_or_undefined(b2_basis);
  const at::Tensor c = coeffs.contiguous();
  at::Tensor out = at::empty({K, N, O}, x.options());
  at::Tensor workspace =
      at::empty({fused_mlp2_workspace_elements(K, in_features, H, O)}, x.options());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  cudaError_t err;
  if (x.scalar_type() == at::kFloat) {
    err = launch_fused_mlp2_f32(xc.const_data_ptr<float>(), w1.const_data_ptr<float>(),
                                optional_ptr<float>(b1), w2.const_data_ptr<float>(),
                                optional_ptr<float>(b2), c.const_data_ptr<float>(),
                                out.mutable_data_ptr<float>(), workspace.mutable_data_ptr<float>(),
                                K, N, in_features, H, O, J, static_cast<int>(activation), stream);
  } else {
    err = launch_fused_mlp2_f64(xc.const_data_ptr<double>(), w1.const_data_ptr<double>(),
                                optional_ptr<double>(b1), w2.const_data_ptr<double>(),
                                optional_ptr<double>(b2), c.const_data_ptr<double>(),
                                out.mutable_data_ptr<double>(),
                                workspace.mutable_data_ptr<double>(), K, N, in_features, H, O, J,
                                static_cast<int>(activation), stream);
  }
  check_cuda(err, "landscape::fused_mlp2 CUDA kernel launch");
  return out;
}

}  // namespace cuda
}  // namespace landscape

TORCH_LIBRARY_IMPL(landscape, CUDA, m) {
  m.impl("batched_linear", &landscape::cuda::batched_linear_cuda);
  m.impl("fused_mlp2", &landscape::cuda::fused_mlp2_cuda);
}
