// Schemas of the batched linear-layer ops (namespace `landscape`) and their input checks.
//
// K weight points whose layer weights are linear combinations of J basis tensors:
//   W_k = sum_j coeffs[k, j] basis_weight[j],  b_k = sum_j coeffs[k, j] basis_bias[j].
// Kernels: csrc/cpu/batched_linear.cpp (CPU), csrc/cuda/batched_linear_cuda.cpp (CUDA).
// Python face, fake (meta) functions, autograd and the pure-PyTorch reference:
// landscape/ops/batched_linear.py.
#include <Python.h>
#include <torch/library.h>

#include "batched_linear.h"
#include "input_checks.h"

// Importing landscape._C (an otherwise empty Python module) loads this shared library and
// runs the static registrations below.
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",  // name
      "Compiled kernels of landscape; importing registers torch.ops.landscape.*",
      -1,       // size
      nullptr,  // methods
  };
  return PyModule_Create(&module_def);
}
}

namespace landscape {
namespace {

// coeffs [K, J], of x's dtype and device.
void check_coeffs(const at::Tensor& coeffs, int64_t J, const at::Tensor& x) {
  TORCH_CHECK_VALUE(coeffs.dim() == 2, "coeffs should be a 2d tensor [K, J], got ", coeffs.dim(),
                    "D");
  TORCH_CHECK_VALUE(coeffs.size(1) == J, "coeffs should have J=", J,
                    " columns (one per basis tensor), got shape ", coeffs.sizes());
  check_like(coeffs, "coeffs", x, "x");
}

// bias [J, M] or None, of x's dtype and device.
void check_bias(const std::optional<at::Tensor>& bias, const char* name, int64_t J, int64_t M,
                const at::Tensor& x) {
  if (!bias.has_value()) return;
  const at::Tensor& b = *bias;
  TORCH_CHECK_VALUE(b.dim() == 2, name, " should be a 2d tensor [J, ", M, "], got ", b.dim(),
                    "D");
  TORCH_CHECK_VALUE(b.size(0) == J && b.size(1) == M, name, " should have shape [", J, ", ", M,
                    "], got ", b.sizes());
  check_like(b, name, x, "x");
}

}  // namespace

void check_batched_linear_inputs(const at::Tensor& x, const at::Tensor& basis_weight,
                                 const std::optional<at::Tensor>& basis_bias,
                                 const at::Tensor& coeffs) {
  TORCH_CHECK_VALUE(x.dim() == 2 || x.dim() == 3,
                    "x should be a 2d tensor [N, in] or a 3d tensor [K, N, in], got ", x.dim(),
                    "D");
  check_floating(x, "x");
  TORCH_CHECK_VALUE(basis_weight.dim() == 3,
                    "basis_weight should be a 3d tensor [J, out, in], got ", basis_weight.dim(),
                    "D");
  check_like(basis_weight, "basis_weight", x, "x");
  const int64_t J = basis_weight.size(0);
  const int64_t out_features = basis_weight.size(1);
  const int64_t in_features = basis_weight.size(2);
  TORCH_CHECK_VALUE(J >= 1, "basis_weight should hold at least one basis tensor, got J=0");
  TORCH_CHECK_VALUE(x.size(-1) == in_features, "x should have in=", in_features,
                    " features (the last dim of basis_weight), got shape ", x.sizes());
  check_bias(basis_bias, "basis_bias", J, out_features, x);
  check_coeffs(coeffs, J, x);
  if (x.dim() == 3) {
    TORCH_CHECK_VALUE(x.size(0) == coeffs.size(0), "x of shape [K, N, in] should have K=",
                      coeffs.size(0), " points (the rows of coeffs), got shape ", x.sizes());
  }
}

void check_fused_mlp2_inputs(const at::Tensor& x, const at::Tensor& w1_basis,
                             const std::optional<at::Tensor>& b1_basis,
                             const at::Tensor& w2_basis,
                             const std::optional<at::Tensor>& b2_basis, const at::Tensor& coeffs,
                             int64_t activation) {
  TORCH_CHECK_VALUE(x.dim() == 2, "x should be a 2d tensor [N, in] (shared by all points), got ",
                    x.dim(), "D");
  check_floating(x, "x");
  TORCH_CHECK_VALUE(w1_basis.dim() == 3, "w1_basis should be a 3d tensor [J, H, in], got ",
                    w1_basis.dim(), "D");
  TORCH_CHECK_VALUE(w2_basis.dim() == 3, "w2_basis should be a 3d tensor [J, O, H], got ",
                    w2_basis.dim(), "D");
  check_like(w1_basis, "w1_basis", x, "x");
  check_like(w2_basis, "w2_basis", x, "x");
  const int64_t J = w1_basis.size(0);
  const int64_t H = w1_basis.size(1);
  const int64_t in_features = w1_basis.size(2);
  const int64_t O = w2_basis.size(1);
  TORCH_CHECK_VALUE(J >= 1, "w1_basis should hold at least one basis tensor, got J=0");
  TORCH_CHECK_VALUE(x.size(1) == in_features, "x should have in=", in_features,
                    " features (the last dim of w1_basis), got shape ", x.sizes());
  TORCH_CHECK_VALUE(w2_basis.size(0) == J && w2_basis.size(2) == H,
                    "w2_basis should have shape [", J, ", O, ", H,
                    "] to match w1_basis [J, H, in], got ", w2_basis.sizes());
  check_bias(b1_basis, "b1_basis", J, H, x);
  check_bias(b2_basis, "b2_basis", J, O, x);
  check_coeffs(coeffs, J, x);
  TORCH_CHECK_VALUE(activation >= 0 && activation <= 2,
                    "activation should be 0 (identity), 1 (relu) or 2 (tanh), got ", activation);
}

}  // namespace landscape

TORCH_LIBRARY_FRAGMENT(landscape, m) {
  // x: [N, in] (shared by all points) or [K, N, in]; basis_weight: [J, out, in];
  // basis_bias: [J, out] or None; coeffs: [K, J]. Returns [K, N, out].
  m.def("batched_linear(Tensor x, Tensor basis_weight, Tensor? basis_bias, Tensor coeffs) -> Tensor");
  // Two-layer MLP at K points, shared input x: [N, in]; w1_basis: [J, H, in];
  // b1_basis: [J, H] or None; w2_basis: [J, O, H]; b2_basis: [J, O] or None;
  // coeffs: [K, J]; activation: 0 identity, 1 relu, 2 tanh. Returns [K, N, O].
  m.def(
      "fused_mlp2(Tensor x, Tensor w1_basis, Tensor? b1_basis, Tensor w2_basis, "
      "Tensor? b2_basis, Tensor coeffs, int activation) -> Tensor");
}
