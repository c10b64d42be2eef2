// Torch-free core loops of the batched_linear and fused_mlp2 CPU kernels.
//
// Everything here works on raw, contiguous, row-major pointers so that the C++ unit tests
// (csrc/tests/test_batched_linear_kernels.cpp) can call these loops without libtorch. The
// torch-facing kernels in csrc/cpu/batched_linear.cpp do the GEMMs with ATen and call these
// loops for the parts that ATen cannot fuse.
//
// Notation: K weight points, J basis vectors, coefficient matrix C [K, J].
//   W_k = sum_j C[k, j] B[j]           (any basis tensor, flattened to M numbers)
//
// The inner loops of the fused two-layer MLP have an AVX2+FMA version (compiled with a
// function-level target attribute, selected at run time; see vec_common.h) and a
// portable fallback, so the library never needs -march=native.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "vec_common.h"

namespace landscape {
namespace cpu {

// The AVX2 path handles kMlpHiddenRows samples at a time, in hidden chunks of
// kMlpHiddenChunk units. Scratch the callers provide to mlp2_tile (per thread):
//   hidden  : mlp2_hidden_scratch(H) numbers,   acc : mlp2_acc_scratch(O) numbers.
constexpr int64_t kMlpHiddenRows = 4;
constexpr int64_t kMlpHiddenChunk = 256;
constexpr int64_t kMlpMaxVectorWidth = 8;  // numbers per AVX2 register (float)

inline int64_t mlp2_hidden_scratch(int64_t H) {
  return std::max(H, kMlpHiddenRows * kMlpHiddenChunk);
}
inline int64_t mlp2_acc_scratch(int64_t O) { return kMlpHiddenRows * O * kMlpMaxVectorWidth; }

enum Activation : int64_t { kIdentity = 0, kRelu = 1, kTanh = 2 };

inline bool valid_activation(int64_t activation) {
  return activation == kIdentity || activation == kRelu || activation == kTanh;
}

// out[k, m] = sum_j coeffs[k, j] * basis[j, m] for k in [k_begin, k_end).
// basis is [J, M] contiguous, out is [K, M] contiguous.
template <typename T>
void combine_basis(const T* coeffs, int64_t J, const T* basis, int64_t M, T* out,
                   int64_t k_begin, int64_t k_end) {
  for (int64_t k = k_begin; k < k_end; ++k) {
    T* dst = out + k * M;
    const T* c = coeffs + k * J;
    const T c0 = c[0];
    for (int64_t m = 0; m < M; ++m) dst[m] = c0 * basis[m];
    for (int64_t j = 1; j < J; ++j) {
      const T cj = c[j];
      const T* src = basis + j * M;
      for (int64_t m = 0; m < M; ++m) dst[m] += cj * src[m];
    }
  }
}

// Combination of per-basis projections for the shared-input batched linear layer.
//   proj : [N, J, M]  (proj[n, j, :] = x[n] @ B_W[j]^T, i.e. one GEMM against all J bases)
//   bias : [K, M] or nullptr (already combined per point)
//   out  : [K, N, M]
// out[k, n, :] = sum_j coeffs[k, j] proj[n, j, :] + bias[k, :]
// for the flat (k, n) rows in [row_begin, row_end), row = k * N + n.
template <typename T>
void combine_projections(const T* coeffs, int64_t J, const T* proj, const T* bias, int64_t N,
                         int64_t M, T* out, int64_t row_begin, int64_t row_end) {
  for (int64_t row = row_begin; row < row_end; ++row) {
    const int64_t k = row / N;
    const int64_t n = row % N;
    const T* c = coeffs + k * J;
    const T* p = proj + n * J * M;
    T* dst = out + row * M;
    if (bias != nullptr) {
      const T* b = bias + k * M;
      for (int64_t m = 0; m < M; ++m) dst[m] = b[m];
    } else {
      for (int64_t m = 0; m < M; ++m) dst[m] = T(0);
    }
    for (int64_t j = 0; j < J; ++j) {
      const T cj = c[j];
      const T* pj = p + j * M;
      for (int64_t m = 0; m < M; ++m) dst[m] += cj * pj[m];
    }
  }
}

// ---------------------------------------------------------------------------------------
// Fused two-layer MLP over one tile of samples.
//
// Inputs, all contiguous:
//   z      : [n_end - n_begin, J, H]  first-layer projections of the tile's samples on every
//            basis, z[n - n_begin, j, :] = x[n] @ B1[j]^T (one GEMM, done by the caller)
//   coeffs : [K, J]
//   b1     : [K, H] or nullptr, per-point first-layer bias (combined by the caller)
//   w2     : [K, O, H]      per-point second-layer weights (combined by the caller)
//   b2     : [K, O] or nullptr
//   out    : [K, N, O]
//   hidden : scratch of mlp2_hidden_scratch(H) numbers (a few hidden rows or row chunks; L1)
//   acc    : scratch of mlp2_acc_scratch(O) numbers (vector accumulators of the AVX2 path)
// For samples n in [n_begin, n_end) and all points k:
//   h = act(sum_j C[k, j] z[n, j, :] + b1[k]);   out[k, n, o] = h . w2[k, o, :] + b2[k, o]
// The points loop is outside the samples loop so the z tile stays in cache for all K points;
// the hidden activations are never written out beyond a few rows.
// ---------------------------------------------------------------------------------------

// ReLU as torch.relu computes it: NaN stays NaN (a comparison with NaN is false, so the
// test is written to fall through to v), -0 stays -0.
template <typename T>
inline T relu(T v) {
  return v < T(0) ? T(0) : v;
}

template <typename T>
inline T apply_activation(T v, int64_t activation) {
  if (activation == kRelu) return relu(v);
  if (activation == kTanh) return std::tanh(v);
  return v;
}

template <typename T>
void mlp2_tile_generic(const T* z, const T* coeffs, const T* b1, const T* w2, const T* b2,
                       T* out, T* hidden, int64_t N, int64_t K, int64_t J, int64_t H, int64_t O,
                       int64_t activation, int64_t n_begin, int64_t n_end) {
  for (int64_t k = 0; k < K; ++k) {
    const T* c = coeffs + k * J;
    const T* w2k = w2 + k * O * H;
    for (int64_t n = n_begin; n < n_end; ++n) {
      const T* zn = z + (n - n_begin) * J * H;
      if (b1 != nullptr) {
        const T* b1k = b1 + k * H;
        for (int64_t h = 0; h < H; ++h) hidden[h] = b1k[h];
      } else {
        for (int64_t h = 0; h < H; ++h) hidden[h] = T(0);
      }
      for (int64_t j = 0; j < J; ++j) {
        const T cj = c[j];
        const T* zj = zn + j * H;
        for (int64_t h = 0; h < H; ++h) hidden[h] += cj * zj[h];
      }
      if (activation != kIdentity) {
        for (int64_t h = 0; h < H; ++h) hidden[h] = apply_activation(hidden[h], activation);
      }
      T* dst = out + (k * N + n) * O;
      for (int64_t o = 0; o < O; ++o) {
        const T* w = w2k + o * H;
        // Four partial sums: the same association order as the vector path is not required,
        // but breaking the dependency chain makes the scalar fallback ~3x faster.
        T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        int64_t h = 0;
        for (; h + 4 <= H; h += 4) {
          s0 += hidden[h] * w[h];
          s1 += hidden[h + 1] * w[h + 1];
          s2 += hidden[h + 2] * w[h + 2];
          s3 += hidden[h + 3] * w[h + 3];
        }
        for (; h < H; ++h) s0 += hidden[h] * w[h];
        dst[o] = (s0 + s1) + (s2 + s3) + (b2 != nullptr ? b2[k * O + o] : T(0));
      }
    }
  }
}

#if LANDSCAPE_HAVE_AVX2

// hidden[0:len] = act(sum_j c[j] zn[j * stride + (0:len)] + b1k[0:len])   (b1k may be null)
template <typename T>
LANDSCAPE_AVX2 void mlp2_hidden_row_avx2(const T* zn, int64_t stride, const T* c, const T* b1k,
                                         T* hidden, int64_t J, int64_t len, int64_t activation) {
  using Vec = Avx2Vec<T>;
  constexpr int W = Vec::kWidth;
  const bool use_relu = activation == kRelu;
  int64_t h = 0;
  if (J == 3) {  // planes (w, d1, d2): the common case, unrolled over j
    const auto c0 = Vec::set1(c[0]), c1 = Vec::set1(c[1]), c2 = Vec::set1(c[2]);
    const T* z0 = zn;
    const T* z1 = zn + stride;
    const T* z2 = zn + 2 * stride;
    for (; h + W <= len; h += W) {
      auto acc = b1k != nullptr ? Vec::load(b1k + h) : Vec::zero();
      acc = Vec::fmadd(c0, Vec::load(z0 + h), acc);
      acc = Vec::fmadd(c1, Vec::load(z1 + h), acc);
      acc = Vec::fmadd(c2, Vec::load(z2 + h), acc);
      if (use_relu) acc = Vec::relu(acc);
      Vec::store(hidden + h, acc);
    }
  } else {
    for (; h + W <= len; h += W) {
      auto acc = b1k != nullptr ? Vec::load(b1k + h) : Vec::zero();
      for (int64_t j = 0; j < J; ++j) {
        acc = Vec::fmadd(Vec::set1(c[j]), Vec::load(zn + j * stride + h), acc);
      }
      if (use_relu) acc = Vec::relu(acc);
      Vec::store(hidden + h, acc);
    }
  }
  for (; h < len; ++h) {
    T acc = b1k != nullptr ? b1k[h] : T(0);
    for (int64_t j = 0; j < J; ++j) acc += c[j] * zn[j * stride + h];
    if (use_relu) acc = relu(acc);
    hidden[h] = acc;
  }
  if (activation == kTanh) {
    for (int64_t i = 0; i < len; ++i) hidden[i] = std::tanh(hidden[i]);
  }
}

// Partial products of one hidden chunk with OB consecutive output rows of W2_k, for R rows:
//   acc[r, o] += hidden[r, 0:len] . w[o * H + (0:len)]
// The R * OB vector accumulators live in registers during the chunk and in acc_mem
// ([R][OB][W] numbers, L1) between chunks; the scalar tail of a chunk goes into lane 0.
template <typename T, int R, int OB>
LANDSCAPE_AVX2 inline void mlp2_output_chunk_avx2(const T* hidden, int64_t hidden_stride,
                                                  const T* w, int64_t H, int64_t len,
                                                  T* acc_mem) {
  using Vec = Avx2Vec<T>;
  constexpr int W = Vec::kWidth;
  typename Vec::V acc[R][OB];
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < OB; ++o) acc[r][o] = Vec::load(acc_mem + (r * OB + o) * W);
  int64_t h = 0;
  for (; h + W <= len; h += W) {
    typename Vec::V hv[R];
    for (int r = 0; r < R; ++r) hv[r] = Vec::load(hidden + r * hidden_stride + h);
    for (int o = 0; o < OB; ++o) {
      const auto wv = Vec::load(w + o * H + h);
      for (int r = 0; r < R; ++r) acc[r][o] = Vec::fmadd(hv[r], wv, acc[r][o]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < OB; ++o) Vec::store(acc_mem + (r * OB + o) * W, acc[r][o]);
  if (h < len) {
    for (int r = 0; r < R; ++r)
      for (int o = 0; o < OB; ++o) {
        T s = T(0);
        for (int64_t i = h; i < len; ++i) s += hidden[r * hidden_stride + i] * w[o * H + i];
        acc_mem[(r * OB + o) * W] += s;
      }
  }
}

// All O outputs of R rows for one hidden chunk: blocks of OB outputs (R=4, OB=3 -> 12
// accumulators + 4 hidden vectors + 1 weight vector = 17 <= 16 + one reload), then the rest.
// acc_mem holds the accumulators of every block: [O][R][W] numbers, block by block.
template <typename T, int R>
LANDSCAPE_AVX2 inline void mlp2_outputs_chunk_avx2(const T* hidden, int64_t hidden_stride,
                                                   const T* w2k_chunk, int64_t H, int64_t O,
                                                   int64_t len, T* acc_mem) {
  constexpr int W = Avx2Vec<T>::kWidth;
  constexpr int OB = R >= 4 ? 3 : (R == 2 ? 5 : 8);
  int64_t o = 0;
  for (; o + OB <= O; o += OB) {
    mlp2_output_chunk_avx2<T, R, OB>(hidden, hidden_stride, w2k_chunk + o * H, H, len,
                                     acc_mem + o * R * W);
  }
  for (; o + 2 <= O; o += 2) {
    mlp2_output_chunk_avx2<T, R, 2>(hidden, hidden_stride, w2k_chunk + o * H, H, len,
                                    acc_mem + o * R * W);
  }
  if (o < O) {
    mlp2_output_chunk_avx2<T, R, 1>(hidden, hidden_stride, w2k_chunk + o * H, H, len,
                                    acc_mem + o * R * W);
  }
}

// Reduces the accumulators of one block ([R][ob][W] numbers) into dst[r * O + i].
template <typename T, int R>
LANDSCAPE_AVX2 inline void mlp2_finish_block_avx2(const T* block, int64_t ob, int64_t O,
                                                  T* dst) {
  using Vec = Avx2Vec<T>;
  constexpr int W = Vec::kWidth;
  for (int r = 0; r < R; ++r)
    for (int64_t i = 0; i < ob; ++i) dst[r * O + i] = Vec::hsum(Vec::load(block + (r * ob + i) * W));
}

// Reduces the accumulators of mlp2_outputs_chunk_avx2 into dst[r * O + o].
template <typename T, int R>
LANDSCAPE_AVX2 inline void mlp2_outputs_finish_avx2(const T* acc_mem, int64_t O, T* dst) {
  constexpr int W = Avx2Vec<T>::kWidth;
  constexpr int OB = R >= 4 ? 3 : (R == 2 ? 5 : 8);
  int64_t o = 0;
  for (; o + OB <= O; o += OB) mlp2_finish_block_avx2<T, R>(acc_mem + o * R * W, OB, O, dst + o);
  for (; o + 2 <= O; o += 2) mlp2_finish_block_avx2<T, R>(acc_mem + o * R * W, 2, O, dst + o);
  if (o < O) mlp2_finish_block_avx2<T, R>(acc_mem + o * R * W, 1, O, dst + o);
}

template <typename T>
LANDSCAPE_AVX2 void mlp2_tile_avx2(const T* z, const T* coeffs, const T* b1, const T* w2,
                                   const T* b2, T* out, T* hidden, T* acc_mem, int64_t N,
                                   int64_t K, int64_t J, int64_t H, int64_t O,
                                   int64_t activation, int64_t n_begin, int64_t n_end) {
  constexpr int R = static_cast<int>(kMlpHiddenRows);
  constexpr int W = Avx2Vec<T>::kWidth;
  // Hidden chunks of kMlpHiddenChunk units: the R hidden rows of a chunk stay in L1 while they
  // meet every output row of W2_k (the full rows, R x H, would not fit).
  const int64_t chunk = kMlpHiddenChunk;
  for (int64_t k = 0; k < K; ++k) {
    const T* c = coeffs + k * J;
    const T* b1k = b1 != nullptr ? b1 + k * H : nullptr;
    const T* w2k = w2 + k * O * H;
    for (int64_t n = n_begin; n < n_end; n += R) {
      const int64_t rows = std::min<int64_t>(R, n_end - n);
      const T* zr = z + (n - n_begin) * J * H;
      for (int64_t i = 0; i < R * O * W; ++i) acc_mem[i] = T(0);
      for (int64_t h0 = 0; h0 < H; h0 += chunk) {
        const int64_t len = std::min(chunk, H - h0);
        for (int64_t r = 0; r < rows; ++r) {
          mlp2_hidden_row_avx2<T>(zr + r * J * H + h0, H, c,
                                  b1k != nullptr ? b1k + h0 : nullptr, hidden + r * chunk, J,
                                  len, activation);
        }
        if (rows == R) {
          mlp2_outputs_chunk_avx2<T, R>(hidden, chunk, w2k + h0, H, O, len, acc_mem);
        } else {
          for (int64_t r = 0; r < rows; ++r) {
            mlp2_outputs_chunk_avx2<T, 1>(hidden + r * chunk, chunk, w2k + h0, H, O, len,
                                          acc_mem + r * O * W);
          }
        }
      }
      T* dst = out + (k * N + n) * O;
      if (rows == R) {
        mlp2_outputs_finish_avx2<T, R>(acc_mem, O, dst);
      } else {
        for (int64_t r = 0; r < rows; ++r) {
          mlp2_outputs_finish_avx2<T, 1>(acc_mem + r * O * W, O, dst + r * O);
        }
      }
      if (b2 != nullptr) {
        const T* b2k = b2 + k * O;
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t i = 0; i < O; ++i) dst[r * O + i] += b2k[i];
      }
    }
  }
}

#endif  // LANDSCAPE_HAVE_AVX2

// Runtime dispatch: the AVX2+FMA micro-kernels where the CPU has them, the portable loops
// otherwise (or when use_simd is false, which the unit tests use to check both paths).
template <typename T>
void mlp2_tile(const T* z, const T* coeffs, const T* b1, const T* w2, const T* b2, T* out,
               T* hidden, T* acc, int64_t N, int64_t K, int64_t J, int64_t H, int64_t O,
               int64_t activation, int64_t n_begin, int64_t n_end, bool use_simd = true) {
#if LANDSCAPE_HAVE_AVX2
  if (use_simd && cpu_has_avx2_fma()) {
    mlp2_tile_avx2<T>(z, coeffs, b1, w2, b2, out, hidden, acc, N, K, J, H, O, activation,
                      n_begin, n_end);
    return;
  }
#endif
  (void)use_simd;
  (void)acc;
  mlp2_tile_generic<T>(z, coeffs, b1, w2, b2, out, hidden, N, K, J, H, O, activation, n_begin,
                       n_end);
}

}  // namespace cpu
}  // namespace landscape
