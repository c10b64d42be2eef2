// Schemas of the batched linear-layer ops (namespace `landscape`).
//
// K weight points whose layer weights are linear combinations of J basis tensors:
//   W_k = sum_j coeffs[k, j] basis_weight[j],  b_k = sum_j coeffs[k, j] basis_bias[j].
// Kernels: csrc/cpu/batched_linear.cpp (CPU), csrc/cuda/batched_linear_cuda.cpp (CUDA).
// Python face, fake (meta) functions, autograd and the pure-PyTorch reference:
// landscape/ops/batched_linear.py.
#include <Python.h>
#include <torch/library.h>

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
