// Torch-facing CUDA launchers of landscape::batched_linear and landscape::fused_mlp2.
//
// Compiled only in the CUDAExtension build (torch with CUDA + nvcc). Checks the inputs, makes
// them contiguous, and calls the raw-pointer launchers of batched_linear.cu on the current
// stream. float32 and float64.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>
#include <torch/library.h>

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

#define LANDSCAPE_CHECK_CUDA_TENSOR(t, name, ref)                                              \
  TORCH_CHECK((t).is_cuda(), name " should be a CUDA tensor, got ", (t).device());             \
  TORCH_CHECK((t).device() == (ref).device(), name " should be on ", (ref).device(),          \
              " like x, got ", (t).device());                                                 \
  TORCH_CHECK((t).scalar_type() == (ref).scalar_type(), name " should have dtype ",            \
              (ref).scalar_type(), " like x, got ", (t).scalar_type())

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
  TORCH_CHECK(x.is_cuda(), "x should be a CUDA tensor, got ", x.device());
  TORCH_CHECK(x.dim() == 2 || x.dim() == 3,
              "x should be a 2d tensor [N, in] or a 3d tensor [K, N, in], got ", x.dim(), "D");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "x should be float32 or float64 on CUDA, got ", x.scalar_type());
  TORCH_CHECK(basis_weight.dim() == 3, "basis_weight should be a 3d tensor [J, out, in], got ",
              basis_weight.dim(), "D");
  LANDSCAPE_CHECK_CUDA_TENSOR(basis_weight, "basis_weight", x);
  LANDSCAPE_CHECK_CUDA_TENSOR(coeffs, "coeffs", x);
  const int64_t J = basis_weight.size(0);
  const int64_t out_features = basis_weight.size(1);
  const int64_t in_features = basis_weight.size(2);
  TORCH_CHECK(J >= 1 && J <= 64, "basis_weight should hold 1 to 64 basis tensors on CUDA, got J=",
              J);
  TORCH_CHECK(x.size(-1) == in_features, "x should have in=", in_features,
              " features (the last dim of basis_weight), got shape ", x.sizes());
  TORCH_CHECK(coeffs.dim() == 2 && coeffs.size(1) == J, "coeffs should have shape [K, ", J,
              "], got ", coeffs.sizes());
  const int64_t K = coeffs.size(0);
  if (basis_bias.has_value()) {
    LANDSCAPE_CHECK_CUDA_TENSOR(*basis_bias, "basis_bias", x);
    TORCH_CHECK(basis_bias->dim() == 2 && basis_bias->size(0) == J &&
                    basis_bias->size(1) == out_features,
                "basis_bias should have shape [", J, ", ", out_features, "], got ",
                basis_bias->sizes());
  }
  if (x.dim() == 3) {
    TORCH_CHECK(x.size(0) == K, "x of shape [K, N, in] should have K=", K,
                " points (the rows of coeffs), got shape ", x.sizes());
  }
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
  TORCH_CHECK(x.is_cuda(), "x should be a CUDA tensor, got ", x.device());
  TORCH_CHECK(x.dim() == 2, "x should be a 2d tensor [N, in] (shared by all points), got ",
              x.dim(), "D");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "x should be float32 or float64 on CUDA, got ", x.scalar_type());
  TORCH_CHECK(w1_basis.dim() == 3, "w1_basis should be a 3d tensor [J, H, in], got ",
              w1_basis.dim(), "D");
  TORCH_CHECK(w2_basis.dim() == 3, "w2_basis should be a 3d tensor [J, O, H], got ",
              w2_basis.dim(), "D");
  LANDSCAPE_CHECK_CUDA_TENSOR(w1_basis, "w1_basis", x);
  LANDSCAPE_CHECK_CUDA_TENSOR(w2_basis, "w2_basis", x);
  LANDSCAPE_CHECK_CUDA_TENSOR(coeffs, "coeffs", x);
  const int64_t J = w1_basis.size(0);
  const int64_t H = w1_basis.size(1);
  const int64_t in_features = w1_basis.size(2);
  const int64_t O = w2_basis.size(1);
  TORCH_CHECK(x.size(1) == in_features, "x should have in=", in_features,
              " features (the last dim of w1_basis), got shape ", x.sizes());
  TORCH_CHECK(w2_basis.size(0) == J && w2_basis.size(2) == H, "w2_basis should have shape [",
              J, ", O, ", H, "] to match w1_basis [J, H, in], got ", w2_basis.sizes());
  TORCH_CHECK(coeffs.dim() == 2 && coeffs.size(1) == J, "coeffs should have shape [K, ", J,
              "], got ", coeffs.sizes());
  if (b1_basis.has_value()) {
    LANDSCAPE_CHECK_CUDA_TENSOR(*b1_basis, "b1_basis", x);
    TORCH_CHECK(b1_basis->dim() == 2 && b1_basis->size(0) == J && b1_basis->size(1) == H,
                "b1_basis should have shape [", J, ", ", H, "], got ", b1_basis->sizes());
  }
  if (b2_basis.has_value()) {
    LANDSCAPE_CHECK_CUDA_TENSOR(*b2_basis, "b2_basis", x);
    TORCH_CHECK(b2_basis->dim() == 2 && b2_basis->size(0) == J && b2_basis->size(1) == O,
                "b2_basis should have shape [", J, ", ", O, "], got ", b2_basis->sizes());
  }
  TORCH_CHECK(activation >= 0 && activation <= 2,
              "activation should be 0 (identity), 1 (relu) or 2 (tanh), got ", activation);
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
