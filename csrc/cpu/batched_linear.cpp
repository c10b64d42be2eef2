// CPU kernels of landscape::batched_linear and landscape::fused_mlp2 (float32, float64).
//
// The GEMMs go through ATen (MKL / oneDNN); the loops ATen cannot fuse (combining the
// per-basis projections with the coefficients, the hidden layer of the fused MLP) are in
// batched_linear_kernels.h, which is torch-free so the C++ unit tests can call it.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>
#include <vector>

#include "../batched_linear.h"
#include "batched_linear_kernels.h"

namespace landscape {
namespace cpu {
namespace {

// Samples per tile of the fused MLP: the [tile, J, H] slice of the first-layer projections is
// reused by all K points, so it should stay in L2 (16 x 3 x 2000 floats = 384 KB).
constexpr int64_t kMlpTileBytes = 256 * 1024;
// Projections computed per first-layer GEMM call (a chunk of tiles).
constexpr int64_t kMlpChunkBytes = 16 * 1024 * 1024;

// [K, M] per-point combination of a [J, ...] basis, or an undefined tensor for None.
at::Tensor combine_optional(const at::Tensor& coeffs, const std::optional<at::Tensor>& basis) {
  if (!basis.has_value()) return at::Tensor();
  const int64_t J = basis->size(0);
  return at::mm(coeffs, basis->reshape({J, -1}));
}

// Whether every number of x is finite. With a shared input the kernels compute one product
// per basis tensor and combine them with the coefficients, sum_j C[k, j] (x . B_j), where a
// point's own weights give x . (sum_j C[k, j] B_j): for finite inputs the two differ by
// rounding, for an infinite input they can differ in kind (a zero coefficient times inf is
// NaN; +inf and -inf products of two bases add to NaN where the point's weight is one signed
// number, whose infinite product relu or tanh would turn into 0 or +-1). Inputs with NaN or
// inf therefore take the per-point path, which computes what plain PyTorch computes.
bool all_finite(const at::Tensor& x) { return at::isfinite(x).all().item<bool>(); }

at::Tensor activate(const at::Tensor& h, int64_t activation) {
  if (activation == kRelu) return at::relu(h);
  if (activation == kTanh) return at::tanh(h);
  return h;
}

// fused_mlp2 one point after another with each point's weights materialised (see all_finite).
void fused_mlp2_per_point(const at::Tensor& x, const at::Tensor& w1_basis,
                          const at::Tensor& b1, const at::Tensor& w2_basis, const at::Tensor& b2,
                          const at::Tensor& c, int64_t activation, at::Tensor& out) {
  const int64_t J = w1_basis.size(0);
  const int64_t H = w1_basis.size(1);
  const int64_t O = w2_basis.size(1);
  const at::Tensor w1_flat = w1_basis.reshape({J, -1});
  const at::Tensor w2_flat = w2_basis.reshape({J, -1});
  for (int64_t k = 0; k < c.size(0); ++k) {
    const at::Tensor ck = c.narrow(0, k, 1);
    const at::Tensor w1 = at::mm(ck, w1_flat).view({H, -1});
    const at::Tensor w2 = at::mm(ck, w2_flat).view({O, H});
    at::Tensor h = b1.defined() ? at::addmm(b1.narrow(0, k, 1), x, w1.t()) : at::mm(x, w1.t());
    h = activate(h, activation);
    at::Tensor dst = out.select(0, k);
    if (b2.defined()) {
      at::addmm_out(dst, b2.narrow(0, k, 1), h, w2.t());
    } else {
      at::mm_out(dst, h, w2.t());
    }
  }
}

}  // namespace

at::Tensor batched_linear_cpu(const at::Tensor& x, const at::Tensor& basis_weight,
                              const std::optional<at::Tensor>& basis_bias,
                              const at::Tensor& coeffs) {
  check_batched_linear_inputs(x, basis_weight, basis_bias, coeffs);
  TORCH_CHECK(x.device().is_cpu(), "x should be a CPU tensor for the CPU kernel, got ", x.device());
  const int64_t J = basis_weight.size(0);
  const int64_t out_features = basis_weight.size(1);
  const int64_t in_features = basis_weight.size(2);
  const int64_t K = coeffs.size(0);
  const int64_t N = x.size(-2);

  const at::Tensor c = coeffs.contiguous();
  const at::Tensor bias = combine_optional(c, basis_bias);  // [K, out] or undefined
  at::Tensor out = at::empty({K, N, out_features}, x.options());
  if (K == 0 || N == 0 || out_features == 0) return out;

  if (x.dim() == 2 && all_finite(x)) {
    // Shared input: J GEMMs (as one) instead of K, then combine with the coefficients.
    const at::Tensor proj =
        at::mm(x, basis_weight.reshape({J * out_features, in_features}).t()).contiguous();
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "batched_linear_cpu", [&] {
      const scalar_t* c_ptr = c.const_data_ptr<scalar_t>();
      const scalar_t* p_ptr = proj.const_data_ptr<scalar_t>();
      const scalar_t* b_ptr = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
      scalar_t* o_ptr = out.mutable_data_ptr<scalar_t>();
      const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, out_features * J));
      at::parallel_for(0, K * N, grain, [&](int64_t begin, int64_t end) {
        combine_projections<scalar_t>(c_ptr, J, p_ptr, b_ptr, N, out_features, o_ptr, begin,
                                      end);
      });
    });
    return out;
  }

  // Per-point input (or a shared one with non-finite numbers): synthesise W_k for a group of
  // points in a scratch buffer (never all K at once beyond a fixed budget), then one GEMM per
  // point into its slice of out.
  const at::Tensor basis = basis_weight.reshape({J, out_features * in_features}).contiguous();
  const int64_t per_point = out_features * in_features;
  const int64_t group = std::max<int64_t>(
      1, std::min<int64_t>(K, (int64_t(8) << 20) / std::max<int64_t>(1, per_point * x.element_size())));
  at::Tensor scratch = at::empty({group, out_features, in_features}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "batched_linear_cpu", [&] {
    const scalar_t* c_ptr = c.const_data_ptr<scalar_t>();
    const scalar_t* basis_ptr = basis.const_data_ptr<scalar_t>();
    for (int64_t k0 = 0; k0 < K; k0 += group) {
      const int64_t k1 = std::min(K, k0 + group);
      scalar_t* w_ptr = scratch.mutable_data_ptr<scalar_t>();
      // Offset the coefficient pointer so scratch row (k - k0) receives point k.
      at::parallel_for(0, k1 - k0, 1, [&](int64_t begin, int64_t end) {
        combine_basis<scalar_t>(c_ptr + k0 * J, J, basis_ptr, per_point, w_ptr, begin, end);
      });
      for (int64_t k = k0; k < k1; ++k) {
        at::Tensor dst = out.select(0, k);
        const at::Tensor w = scratch.select(0, k - k0);
        const at::Tensor xk = x.dim() == 3 ? x.select(0, k) : x;
        if (bias.defined()) {
          at::addmm_out(dst, bias.select(0, k).unsqueeze(0), xk, w.t());
        } else {
          at::mm_out(dst, xk, w.t());
        }
      }
    }
  });
  return out;
}

at::Tensor fused_mlp2_cpu(const at::Tensor& x, const at::Tensor& w1_basis,
                          const std::optional<at::Tensor>& b1_basis, const at::Tensor& w2_basis,
                          const std::optional<at::Tensor>& b2_basis, const at::Tensor& coeffs,
                          int64_t activation) {
  check_fused_mlp2_inputs(x, w1_basis, b1_basis, w2_basis, b2_basis, coeffs, activation);
  TORCH_CHECK(x.device().is_cpu(), "x should be a CPU tensor for the CPU kernel, got ", x.device());
  const int64_t J = w1_basis.size(0);
  const int64_t H = w1_basis.size(1);
  const int64_t in_features = w1_basis.size(2);
  const int64_t O = w2_basis.size(1);
  const int64_t K = coeffs.size(0);
  const int64_t N = x.size(0);

  at::Tensor out = at::empty({K, N, O}, x.options());
  if (K == 0 || N == 0 || O == 0) return out;
  if (H == 0) {
    // Empty hidden layer: only the second-layer bias remains.
    if (b2_basis.has_value()) {
      out.copy_(at::mm(coeffs, *b2_basis).unsqueeze(1).expand({K, N, O}));
    } else {
      out.zero_();
    }
    return out;
  }

  const at::Tensor c = coeffs.contiguous();
  const at::Tensor b1 = combine_optional(c, b1_basis);  // [K, H]
  const at::Tensor b2 = combine_optional(c, b2_basis);  // [K, O]
  if (!all_finite(x)) {
    fused_mlp2_per_point(x, w1_basis, b1, w2_basis, b2, c, activation, out);
    return out;
  }
  // [B1_0; ...; B1_{J-1}]^T as one [in, J * H] operand: each tile's first layer against all J
  // bases is a single GEMM, z_tile [tile, J * H] = x_tile @ B1_all^T.
  const at::Tensor w1_all_t = w1_basis.reshape({J * H, in_features}).t();
  const at::Tensor w2_flat = w2_basis.reshape({J, O * H}).contiguous();
  at::Tensor w2 = at::empty({K, O, H}, x.options());    // W2_k for all points: small (O ~ 10)

  // The z tile is reused by all K points, so it should stay in L2.
  const int64_t tile = std::max<int64_t>(
      kMlpHiddenRows,
      std::min<int64_t>(64, kMlpTileBytes / std::max<int64_t>(1, J * H * x.element_size())) /
          kMlpHiddenRows * kMlpHiddenRows);
  const int64_t num_tiles = (N + tile - 1) / tile;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fused_mlp2_cpu", [&] {
    const scalar_t* c_ptr = c.const_data_ptr<scalar_t>();
    scalar_t* w2_ptr = w2.mutable_data_ptr<scalar_t>();
    const scalar_t* w2_basis_ptr = w2_flat.const_data_ptr<scalar_t>();
    at::parallel_for(0, K, 1, [&](int64_t begin, int64_t end) {
      combine_basis<scalar_t>(c_ptr, J, w2_basis_ptr, O * H, w2_ptr, begin, end);
    });
    const scalar_t* b1_ptr = b1.defined() ? b1.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* b2_ptr = b2.defined() ? b2.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* o_ptr = out.mutable_data_ptr<scalar_t>();
    // The first-layer GEMM runs outside the parallel region (MKL inside an OpenMP region
    // oversubscribes the cores). Few, large chunks keep the number of thread synchronisations
    // small (each costs a scheduler time slice on a busy machine) while bounding the memory of
    // the projections; each tile of a chunk is then reused from L2 by all K points.
    const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
    const int64_t chunk_tiles = std::max<int64_t>(
        threads, kMlpChunkBytes / std::max<int64_t>(1, tile * J * H * x.element_size()));
    const int64_t chunk_rows = chunk_tiles * tile;
    at::Tensor z_chunk = at::empty({std::min(N, chunk_rows), J * H}, x.options());
    for (int64_t first_tile = 0; first_tile < num_tiles; first_tile += chunk_tiles) {
      const int64_t chunk_begin = first_tile * tile;
      const int64_t chunk_end = std::min(N, chunk_begin + chunk_rows);
      at::Tensor z_rows = z_chunk.narrow(0, 0, chunk_end - chunk_begin);
      at::mm_out(z_rows, x.narrow(0, chunk_begin, chunk_end - chunk_begin), w1_all_t);
      const scalar_t* z_ptr = z_rows.const_data_ptr<scalar_t>();
      const int64_t last_tile = std::min(num_tiles, first_tile + chunk_tiles);
      // Tiles are handed out dynamically (an atomic counter) rather than split statically, so
      // a thread slowed down by another process does not hold the others up.
      std::atomic<int64_t> next_tile{first_tile};
      at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
        std::vector<scalar_t> hidden(static_cast<size_t>(mlp2_hidden_scratch(H)));
        std::vector<scalar_t> acc(static_cast<size_t>(mlp2_acc_scratch(O)));
        for (int64_t t = next_tile++; t < last_tile; t = next_tile++) {
          const int64_t n_begin = t * tile;
          const int64_t n_end = std::min(N, n_begin + tile);
          mlp2_tile<scalar_t>(z_ptr + (n_begin - chunk_begin) * J * H, c_ptr, b1_ptr, w2_ptr,
                              b2_ptr, o_ptr, hidden.data(), acc.data(), N, K, J, H, O, activation, n_begin, n_end);
        }
      });
    }
  });
  return out;
}

}  // namespace cpu
}  // namespace landscape

TORCH_LIBRARY_IMPL(landscape, CPU, m) {
  m.impl("batched_linear", &landscape::cpu::batched_linear_cpu);
  m.impl("fused_mlp2", &landscape::cpu::fused_mlp2_cpu);
}
