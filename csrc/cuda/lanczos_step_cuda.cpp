// Torch-facing CUDA launcher of landscape::lanczos_step.
//
// Compiled only in the CUDAExtension build (torch with CUDA + nvcc). Checks the inputs,
// allocates the outputs and a double workspace (partial sums), and calls the raw-pointer
// launchers of lanczos_step.cu on the current stream. float32 and float64.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <tuple>

#include "../lanczos_step.h"

namespace landscape {
namespace cuda {

// Defined in lanczos_step.cu.
int64_t lanczos_step_workspace_elements(int64_t m, int64_t n, int64_t j, bool full);
cudaError_t launch_lanczos_step_f32(const float* Q, int64_t q_row_stride, int64_t q_vec_stride,
                                    const float* w, int64_t w_row_stride,
                                    const float* beta_prev, int64_t beta_stride, float* alpha,
                                    float* beta, float* q_next, double* workspace, int64_t m,
                                    int64_t n, int64_t j, bool full, cudaStream_t stream);
cudaError_t launch_lanczos_step_f64(const double* Q, int64_t q_row_stride,
                                    int64_t q_vec_stride, const double* w, int64_t w_row_stride,
                                    const double* beta_prev, int64_t beta_stride,
                                    double* alpha, double* beta, double* q_next,
                                    double* workspace, int64_t m, int64_t n, int64_t j,
                                    bool full, cudaStream_t stream);

std::tuple<at::Tensor, at::Tensor, at::Tensor> lanczos_step_cuda(const at::Tensor& Q,
                                                                 const at::Tensor& w, int64_t j,
                                                                 const at::Tensor& beta_prev,
                                                                 bool full_reorth) {
  check_lanczos_step_inputs(Q, w, j, beta_prev);
  TORCH_CHECK(Q.is_cuda(), "Q should be a CUDA tensor for the CUDA kernel, got ", Q.device());
  const int64_t m = Q.size(0), n = Q.size(2);
  const c10::cuda::CUDAGuard guard(Q.device());
  // Elements contiguous within each vector; rows and slots may be strided (read in place).
  const at::Tensor basis = (Q.stride(2) == 1 || n <= 1) ? Q : Q.narrow(1, 0, j + 1).contiguous();
  const at::Tensor wv = (w.stride(1) == 1 || n <= 1) ? w : w.contiguous();
  at::Tensor alpha = at::empty({m}, Q.options());
  at::Tensor beta = at::empty({m}, Q.options());
  at::Tensor q_next = at::empty({m, n}, Q.options());
  if (m == 0) return {alpha, beta, q_next};
  at::Tensor workspace = at::empty({lanczos_step_workspace_elements(m, n, j, full_reorth)},
                                   Q.options().dtype(at::kDouble));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  cudaError_t err;
  if (Q.scalar_type() == at::kFloat) {
    err = launch_lanczos_step_f32(
        basis.const_data_ptr<float>(), basis.stride(0), basis.stride(1), wv.const_data_ptr<float>(),
        wv.stride(0), beta_prev.const_data_ptr<float>(), beta_prev.stride(0),
        alpha.mutable_data_ptr<float>(), beta.mutable_data_ptr<float>(),
        q_next.mutable_data_ptr<float>(), workspace.mutable_data_ptr<double>(), m, n, j,
        full_reorth, stream);
  } else {
    err = launch_lanczos_step_f64(
        basis.const_data_ptr<double>(), basis.stride(0), basis.stride(1),
        wv.const_data_ptr<double>(), wv.stride(0), beta_prev.const_data_ptr<double>(),
        beta_prev.stride(0), alpha.mutable_data_ptr<double>(), beta.mutable_data_ptr<double>(),
        q_next.mutable_data_ptr<double>(), workspace.mutable_data_ptr<double>(), m, n, j,
        full_reorth, stream);
  }
  TORCH_CHECK(err == cudaSuccess, "landscape::lanczos_step CUDA kernel launch failed: ",
              cudaGetErrorString(err));
  return {alpha, beta, q_next};
}

}  // namespace cuda
}  // namespace landscape

TORCH_LIBRARY_IMPL(landscape, CUDA, m) {
  m.impl("lanczos_step", &landscape::cuda::lanczos_step_cuda);
}
