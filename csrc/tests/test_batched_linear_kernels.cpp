// Unit tests of the torch-free CPU core loops (csrc/cpu/batched_linear_kernels.h) against
// naive triple loops in double precision. No framework: returns non-zero on failure.
//
//   cmake -S . -B build/cmake && cmake --build build/cmake && ctest --test-dir build/cmake
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "batched_linear_kernels.h"

namespace lc = landscape::cpu;

namespace {

int failures = 0;

void expect(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "FAILED: %s\n", what);
    ++failures;
  }
}

template <typename T>
std::vector<T> random_vector(std::mt19937& rng, int64_t size) {
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<T> v(static_cast<size_t>(size));
  for (auto& e : v) e = static_cast<T>(normal(rng));
  return v;
}

template <typename T>
double max_abs_diff(const std::vector<T>& a, const std::vector<double>& b) {
  double worst = a.size() == b.size() ? 0.0 : INFINITY;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    worst = std::max(worst, std::abs(static_cast<double>(a[i]) - b[i]));
  }
  return worst;
}

// As torch.relu: NaN stays NaN.
double activate(double v, int64_t activation) {
  if (activation == lc::kRelu) return std::isnan(v) ? v : (v > 0 ? v : 0);
  if (activation == lc::kTanh) return std::tanh(v);
  return v;
}

// Naive weights of point k: W_k[m] = sum_j C[k, j] B[j, m].
template <typename T>
std::vector<double> naive_combine(const std::vector<T>& coeffs, const std::vector<T>& basis,
                                  int64_t K, int64_t J, int64_t M) {
  std::vector<double> out(static_cast<size_t>(K * M), 0.0);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t j = 0; j < J; ++j)
      for (int64_t m = 0; m < M; ++m) out[k * M + m] += double(coeffs[k * J + j]) * basis[j * M + m];
  return out;
}

template <typename T>
void test_combine_basis(std::mt19937& rng, double tol, const char* name) {
  const int64_t K = 5, J = 3, M = 37;
  auto coeffs = random_vector<T>(rng, K * J);
  auto basis = random_vector<T>(rng, J * M);
  std::vector<T> out(static_cast<size_t>(K * M), T(-1));
  lc::combine_basis<T>(coeffs.data(), J, basis.data(), M, out.data(), 0, 2);
  lc::combine_basis<T>(coeffs.data(), J, basis.data(), M, out.data(), 2, K);
  const double err = max_abs_diff(out, naive_combine(coeffs, basis, K, J, M));
  std::printf("combine_basis<%s>: max error %.3g\n", name, err);
  expect(err < tol, "combine_basis matches the naive combination");
}

// batched_linear with a shared input: out[k, n, o] = x[n] . W_k[o] + b_k[o], computed the
// kernel's way (projections on each basis, then combine_projections).
template <typename T>
void test_combine_projections(std::mt19937& rng, double tol, const char* name, bool with_bias) {
  const int64_t K = 4, J = 3, N = 7, in = 11, out_f = 13;
  auto x = random_vector<T>(rng, N * in);
  auto basis_w = random_vector<T>(rng, J * out_f * in);
  auto basis_b = random_vector<T>(rng, J * out_f);
  auto coeffs = random_vector<T>(rng, K * J);
  // proj[n, j, o] = x[n] . B[j, o]  (naive, as the caller's GEMM)
  std::vector<T> proj(static_cast<size_t>(N * J * out_f));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < J; ++j)
      for (int64_t o = 0; o < out_f; ++o) {
        double s = 0;
        for (int64_t i = 0; i < in; ++i) s += double(x[n * in + i]) * basis_w[(j * out_f + o) * in + i];
        proj[(n * J + j) * out_f + o] = static_cast<T>(s);
      }
  std::vector<T> bias(static_cast<size_t>(K * out_f));
  const auto bias_d = naive_combine(coeffs, basis_b, K, J, out_f);
  for (size_t i = 0; i < bias.size(); ++i) bias[i] = static_cast<T>(bias_d[i]);
  std::vector<T> out(static_cast<size_t>(K * N * out_f), T(-1));
  lc::combine_projections<T>(coeffs.data(), J, proj.data(), with_bias ? bias.data() : nullptr, N,
                             out_f, out.data(), 0, 5);
  lc::combine_projections<T>(coeffs.data(), J, proj.data(), with_bias ? bias.data() : nullptr, N,
                             out_f, out.data(), 5, K * N);
  // Naive triple loop with materialised W_k.
  const auto weights = naive_combine(coeffs, basis_w, K, J, out_f * in);
  std::vector<double> expected(static_cast<size_t>(K * N * out_f));
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t o = 0; o < out_f; ++o) {
        double s = with_bias ? bias_d[k * out_f + o] : 0.0;
        for (int64_t i = 0; i < in; ++i) s += double(x[n * in + i]) * weights[(k * out_f + o) * in + i];
        expected[(k * N + n) * out_f + o] = s;
      }
  const double err = max_abs_diff(out, expected);
  std::printf("combine_projections<%s>(bias=%d): max error %.3g\n", name, int(with_bias), err);
  expect(err < tol, "combine_projections matches the naive batched linear layer");
}

// Fused two-layer MLP over tiles, both code paths (AVX2 and portable), against a naive
// per-point network with materialised weights.
template <typename T>
void test_mlp2(std::mt19937& rng, double tol, const char* name, int64_t H, int64_t O, int64_t J,
               int64_t activation, bool with_bias, bool use_simd) {
  const int64_t K = 5, N = 11, in = 9;
  auto x = random_vector<T>(rng, N * in);
  auto w1b = random_vector<T>(rng, J * H * in);
  auto b1b = random_vector<T>(rng, J * H);
  auto w2b = random_vector<T>(rng, J * O * H);
  auto b2b = random_vector<T>(rng, J * O);
  auto coeffs = random_vector<T>(rng, K * J);

  const auto w1 = naive_combine(coeffs, w1b, K, J, H * in);
  const auto b1 = naive_combine(coeffs, b1b, K, J, H);
  const auto w2 = naive_combine(coeffs, w2b, K, J, O * H);
  const auto b2 = naive_combine(coeffs, b2b, K, J, O);
  std::vector<double> expected(static_cast<size_t>(K * N * O));
  std::vector<double> hidden_ref(static_cast<size_t>(H));
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t h = 0; h < H; ++h) {
        double s = with_bias ? b1[k * H + h] : 0.0;
        for (int64_t i = 0; i < in; ++i) s += double(x[n * in + i]) * w1[(k * H + h) * in + i];
        hidden_ref[h] = activate(s, activation);
      }
      for (int64_t o = 0; o < O; ++o) {
        double s = with_bias ? b2[k * O + o] : 0.0;
        for (int64_t h = 0; h < H; ++h) s += hidden_ref[h] * w2[(k * O + o) * H + h];
        expected[(k * N + n) * O + o] = s;
      }
    }

  // Inputs in the kernel's layout: z [N, J, H], per-point b1 [K, H], w2 [K, O, H], b2 [K, O].
  std::vector<T> z(static_cast<size_t>(N * J * H));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < J; ++j)
      for (int64_t h = 0; h < H; ++h) {
        double s = 0;
        for (int64_t i = 0; i < in; ++i) s += double(x[n * in + i]) * w1b[(j * H + h) * in + i];
        z[(n * J + j) * H + h] = static_cast<T>(s);
      }
  auto cast = [](const std::vector<double>& v) {
    std::vector<T> r(v.size());
    for (size_t i = 0; i < v.size(); ++i) r[i] = static_cast<T>(v[i]);
    return r;
  };
  const auto b1t = cast(b1), w2t = cast(w2), b2t = cast(b2);
  std::vector<T> out(static_cast<size_t>(K * N * O), T(-1));
  std::vector<T> hidden(static_cast<size_t>(lc::mlp2_hidden_scratch(H)));
  std::vector<T> acc(static_cast<size_t>(lc::mlp2_acc_scratch(O)));
  // Uneven tiles, including a tile shorter than the 4-row block of the AVX2 path.
  const int64_t bounds[] = {0, 6, 9, N};
  for (int t = 0; t < 3; ++t) {
    lc::mlp2_tile<T>(z.data() + bounds[t] * J * H, coeffs.data(), with_bias ? b1t.data() : nullptr,
                     w2t.data(), with_bias ? b2t.data() : nullptr, out.data(), hidden.data(), acc.data(), N, K,
                     J, H, O, activation, bounds[t], bounds[t + 1], use_simd);
  }
  const double err = max_abs_diff(out, expected);
  std::printf("mlp2_tile<%s>(H=%lld, O=%lld, J=%lld, act=%lld, bias=%d, simd=%d): max error %.3g\n",
              name, static_cast<long long>(H), static_cast<long long>(O),
              static_cast<long long>(J), static_cast<long long>(activation), int(with_bias),
              int(use_simd), err);
  expect(err < tol, "mlp2_tile matches the naive two-layer network");
}

// NaN in the hidden pre-activations stays NaN through every activation, on both code paths,
// as torch.relu and torch.tanh keep it: z holds NaN for a whole sample (a NaN input) and for
// single hidden units of other samples. The expected output is the naive network on z itself.
template <typename T>
void test_mlp2_nan(std::mt19937& rng, const char* name, int64_t H, int64_t J, int64_t activation,
                   bool use_simd) {
  const int64_t K = 3, N = 9, O = 4;
  auto z = random_vector<T>(rng, N * J * H);
  auto w2 = random_vector<T>(rng, K * O * H);
  auto coeffs = random_vector<T>(rng, K * J);
  const T nan = std::numeric_limits<T>::quiet_NaN();
  for (int64_t i = 0; i < J * H; ++i) z[2 * J * H + i] = nan;  // sample 2: a NaN input
  z[(5 * J + 0) * H + H - 1] = nan;  // sample 5: the last hidden unit (a vector tail)
  z[(6 * J + J - 1) * H + 0] = nan;  // sample 6: the first hidden unit (a full vector)
  std::vector<double> expected(static_cast<size_t>(K * N * O));
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t o = 0; o < O; ++o) {
        double s = 0;
        for (int64_t h = 0; h < H; ++h) {
          double pre = 0;
          for (int64_t j = 0; j < J; ++j) pre += double(coeffs[k * J + j]) * z[(n * J + j) * H + h];
          s += activate(pre, activation) * w2[(k * O + o) * H + h];
        }
        expected[(k * N + n) * O + o] = s;
      }
  std::vector<T> out(static_cast<size_t>(K * N * O), T(-1));
  std::vector<T> hidden(static_cast<size_t>(lc::mlp2_hidden_scratch(H)));
  std::vector<T> acc(static_cast<size_t>(lc::mlp2_acc_scratch(O)));
  lc::mlp2_tile<T>(z.data(), coeffs.data(), nullptr, w2.data(), nullptr, out.data(), hidden.data(),
                   acc.data(), N, K, J, H, O, activation, 0, N, use_simd);
  int64_t nan_mismatch = 0, expected_nan = 0;
  double worst = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    expected_nan += std::isnan(expected[i]);
    if (std::isnan(double(out[i])) != std::isnan(expected[i])) {
      ++nan_mismatch;
    } else if (!std::isnan(expected[i])) {
      worst = std::max(worst, std::abs(double(out[i]) - expected[i]));
    }
  }
  std::printf("mlp2_tile<%s> NaN (H=%lld, J=%lld, act=%lld, simd=%d): %lld of %lld NaN cells differ, max error %.3g\n",
              name, static_cast<long long>(H), static_cast<long long>(J),
              static_cast<long long>(activation), int(use_simd), static_cast<long long>(nan_mismatch),
              static_cast<long long>(expected_nan), worst);
  expect(expected_nan == 3 * K * O, "the NaN test plants NaN in three samples");
  expect(nan_mismatch == 0, "mlp2_tile keeps NaN where the naive network has it");
  expect(worst < (sizeof(T) == 4 ? 2e-3 : 1e-10), "mlp2_tile matches the naive network elsewhere");
}

void test_relu_keeps_nan_and_signed_zero() {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  expect(std::isnan(lc::apply_activation(nan, lc::kRelu)), "relu(NaN) is NaN");
  expect(std::isnan(lc::apply_activation(float(nan), lc::kRelu)), "relu(NaN) is NaN (float)");
  expect(std::isnan(lc::apply_activation(nan, lc::kTanh)), "tanh(NaN) is NaN");
  expect(std::signbit(lc::apply_activation(-0.0, lc::kRelu)), "relu(-0) is -0 as in torch.relu");
  expect(lc::apply_activation(-INFINITY, lc::kRelu) == 0.0, "relu(-inf) is 0");
  expect(lc::apply_activation(double(INFINITY), lc::kRelu) == INFINITY, "relu(inf) is inf");
}

}  // namespace

int main() {
  std::mt19937 rng(1234);
  std::printf("AVX2+FMA path available: %d\n", int(lc::cpu_has_avx2_fma()));
  test_combine_basis<double>(rng, 1e-12, "double");
  test_combine_basis<float>(rng, 1e-4, "float");
  for (bool bias : {true, false}) {
    test_combine_projections<double>(rng, 1e-11, "double", bias);
    test_combine_projections<float>(rng, 1e-3, "float", bias);
  }
  // H and O chosen to exercise full vectors, vector tails and every output block size.
  // H = 600 spans several hidden chunks (kMlpHiddenChunk = 256) with a ragged last one.
  const int64_t shapes[][3] = {{37, 10, 3}, {16, 3, 3}, {5, 1, 2}, {64, 17, 1}, {21, 7, 4},
                               {600, 10, 3}, {515, 4, 2}};
  for (const auto& s : shapes)
    for (int64_t activation : {0, 1, 2})
      for (bool bias : {true, false})
        for (bool simd : {true, false}) {
          test_mlp2<double>(rng, 1e-10, "double", s[0], s[1], s[2], activation, bias, simd);
          test_mlp2<float>(rng, 2e-3, "float", s[0], s[1], s[2], activation, bias, simd);
        }
  test_relu_keeps_nan_and_signed_zero();
  for (int64_t activation : {0, 1, 2})
    for (bool simd : {true, false})
      for (int64_t J : {3, 2}) {
        test_mlp2_nan<float>(rng, "float", 21, J, activation, simd);
        test_mlp2_nan<double>(rng, "double", 21, J, activation, simd);
      }
  if (failures != 0) {
    std::fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("all checks passed\n");
  return 0;
}
