// Unit tests of the torch-free Lanczos step loops (csrc/cpu/lanczos_step_kernels.h) against a
// naive double-precision implementation of the reference (lanczos_step_reference in
// landscape/ops/lanczos_step.py). No framework: returns non-zero on failure.
//
//   cmake -S . -B build/cmake && cmake --build build/cmake && ctest --test-dir build/cmake
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "lanczos_step_kernels.h"

namespace lz = landscape::cpu::lanczos;

namespace {

int failures = 0;

void expect(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "FAILED: %s\n", what);
    ++failures;
  }
}

// The serial stand-in for at::parallel_for: every task, in uneven pieces (so a task range
// that does not start at 0 is exercised).
struct SerialFor {
  template <typename Fn>
  void operator()(int64_t begin, int64_t end, const Fn& fn) const {
    int64_t b = begin;
    for (int64_t piece = 1; b < end; ++piece) {
      const int64_t e = std::min(end, b + piece);
      fn(b, e);
      b = e;
    }
  }
};

struct Case {
  int64_t m, S, n, j;
  bool full;
  int64_t parts;
};

// Bases with orthonormal rows q_0..q_j (modified Gram-Schmidt in double of random vectors),
// stored in a wider buffer [m, S + 1, n + pad] so rows and slots have non-trivial strides;
// later slots hold garbage that must not be read.
struct Inputs {
  std::vector<double> Q;  // [m, S + 1, ld] as double, the test oracle's copy
  std::vector<double> w;  // [m, ld]
  std::vector<double> beta_prev;
  int64_t ld;
};

Inputs make_inputs(std::mt19937& rng, const Case& c, int64_t pad, bool zero_last_row) {
  std::normal_distribution<double> normal(0.0, 1.0);
  Inputs in;
  in.ld = c.n + pad;
  const int64_t slots = c.S + 1;
  in.Q.assign(static_cast<size_t>(c.m * slots * in.ld), 1e30);  // garbage outside the basis
  in.w.assign(static_cast<size_t>(c.m * in.ld), 1e30);
  in.beta_prev.resize(static_cast<size_t>(c.m));
  for (int64_t i = 0; i < c.m; ++i) {
    for (int64_t k = 0; k <= c.j; ++k) {
      double* q = in.Q.data() + (i * slots + k) * in.ld;
      for (int64_t e = 0; e < c.n; ++e) q[e] = normal(rng);
      for (int pass = 0; pass < 2; ++pass) {
        for (int64_t p = 0; p < k; ++p) {
          const double* qp = in.Q.data() + (i * slots + p) * in.ld;
          double d = 0;
          for (int64_t e = 0; e < c.n; ++e) d += qp[e] * q[e];
          for (int64_t e = 0; e < c.n; ++e) q[e] -= d * qp[e];
        }
      }
      double norm = 0;
      for (int64_t e = 0; e < c.n; ++e) norm += q[e] * q[e];
      norm = std::sqrt(norm);
      for (int64_t e = 0; e < c.n; ++e) q[e] /= norm;
    }
    double* w = in.w.data() + i * in.ld;
    for (int64_t e = 0; e < c.n; ++e) w[e] = 3.0 * normal(rng);
    in.beta_prev[i] = std::abs(normal(rng)) + 0.5;
  }
  if (zero_last_row && c.m > 0) {
    // w = 0 on the last row: r = 0 exactly, beta = 0, q_next = 0 (no division by zero).
    for (int64_t e = 0; e < c.n; ++e) in.w[(c.m - 1) * in.ld + e] = 0.0;
    in.beta_prev[c.m - 1] = 0.0;
  }
  return in;
}

struct Result {
  std::vector<double> alpha, beta, q_next;
};

// The reference in double: alpha, recurrence, CGS twice (full), norm, scaling.
Result naive_step(const Inputs& in, const Case& c) {
  const int64_t slots = c.S + 1;
  Result out;
  out.alpha.resize(c.m);
  out.beta.resize(c.m);
  out.q_next.assign(static_cast<size_t>(c.m * c.n), 0.0);
  for (int64_t i = 0; i < c.m; ++i) {
    auto q = [&](int64_t k) { return in.Q.data() + (i * slots + k) * in.ld; };
    const double* w = in.w.data() + i * in.ld;
    double alpha = 0;
    for (int64_t e = 0; e < c.n; ++e) alpha += q(c.j)[e] * w[e];
    std::vector<double> r(w, w + c.n);
    for (int64_t e = 0; e < c.n; ++e) r[e] -= alpha * q(c.j)[e];
    if (c.j > 0)
      for (int64_t e = 0; e < c.n; ++e) r[e] -= in.beta_prev[i] * q(c.j - 1)[e];
    if (c.full) {
      for (int pass = 0; pass < 2; ++pass) {
        std::vector<double> coef(static_cast<size_t>(c.j + 1), 0.0);
        for (int64_t k = 0; k <= c.j; ++k)
          for (int64_t e = 0; e < c.n; ++e) coef[k] += q(k)[e] * r[e];
        for (int64_t k = 0; k <= c.j; ++k)
          for (int64_t e = 0; e < c.n; ++e) r[e] -= coef[k] * q(k)[e];
      }
    }
    double norm = 0;
    for (double v : r) norm += v * v;
    norm = std::sqrt(norm);
    out.alpha[i] = alpha;
    out.beta[i] = norm;
    for (int64_t e = 0; e < c.n; ++e) out.q_next[i * c.n + e] = norm > 0 ? r[e] / norm : r[e];
  }
  return out;
}

template <typename T>
void test_step(std::mt19937& rng, const Case& c, bool use_simd, bool zero_last_row, double tol,
               const char* name) {
  const int64_t pad = 3;
  const Inputs in = make_inputs(rng, c, pad, zero_last_row);
  std::vector<T> Q(in.Q.size()), w(in.w.size()), bp(in.beta_prev.size());
  std::transform(in.Q.begin(), in.Q.end(), Q.begin(), [](double v) { return static_cast<T>(v); });
  std::transform(in.w.begin(), in.w.end(), w.begin(), [](double v) { return static_cast<T>(v); });
  std::transform(in.beta_prev.begin(), in.beta_prev.end(), bp.begin(),
                 [](double v) { return static_cast<T>(v); });
  // The oracle sees the inputs rounded to T.
  Inputs rounded = in;
  for (size_t i = 0; i < Q.size(); ++i) rounded.Q[i] = Q[i];
  for (size_t i = 0; i < w.size(); ++i) rounded.w[i] = w[i];
  for (size_t i = 0; i < bp.size(); ++i) rounded.beta_prev[i] = bp[i];
  const Result expected = naive_step(rounded, c);

  std::vector<T> alpha(c.m, T(-7)), beta(c.m, T(-7)), q_next(static_cast<size_t>(c.m * c.n), T(-7));
  lz::LanczosStepProblem<T> p;
  p.Q = Q.data();
  p.q_row_stride = (c.S + 1) * in.ld;
  p.q_vec_stride = in.ld;
  p.w = w.data();
  p.w_row_stride = in.ld;
  p.beta_prev = bp.data();
  p.beta_stride = 1;
  p.alpha = alpha.data();
  p.beta = beta.data();
  p.q_next = q_next.data();
  p.m = c.m;
  p.n = c.n;
  p.j = c.j;
  p.full = c.full;
  lz::lanczos_step<T>(p, c.parts, SerialFor{}, use_simd);

  // Errors relative to the scale of each quantity (|w| ~ 3 sqrt(n), |q_next| = 1).
  double w_scale = 0;
  for (int64_t i = 0; i < c.m; ++i)
    for (int64_t e = 0; e < c.n; ++e) w_scale = std::max(w_scale, std::abs(rounded.w[i * in.ld + e]));
  w_scale = std::max(1.0, w_scale * std::sqrt(static_cast<double>(c.n)));
  double err_alpha = 0, err_beta = 0, err_q = 0, ortho = 0;
  for (int64_t i = 0; i < c.m; ++i) {
    err_alpha = std::max(err_alpha, std::abs(alpha[i] - expected.alpha[i]) / w_scale);
    err_beta = std::max(err_beta, std::abs(beta[i] - expected.beta[i]) / w_scale);
    for (int64_t e = 0; e < c.n; ++e)
      err_q = std::max(err_q, std::abs(q_next[i * c.n + e] - expected.q_next[i * c.n + e]));
    if (c.full && expected.beta[i] > 0) {  // q_next is orthogonal to the basis
      for (int64_t k = 0; k <= c.j; ++k) {
        double d = 0;
        for (int64_t e = 0; e < c.n; ++e)
          d += static_cast<double>(q_next[i * c.n + e]) * rounded.Q[(i * (c.S + 1) + k) * in.ld + e];
        ortho = std::max(ortho, std::abs(d));
      }
    }
  }
  bool zero_ok = true;
  if (zero_last_row && c.m > 0) {
    const int64_t i = c.m - 1;
    zero_ok = beta[i] == T(0) && alpha[i] == T(0);
    for (int64_t e = 0; e < c.n; ++e) zero_ok = zero_ok && q_next[i * c.n + e] == T(0);
  }
  std::printf(
      "lanczos_step<%s>(m=%lld S=%lld n=%lld j=%lld full=%d parts=%lld simd=%d zero=%d): "
      "alpha %.2g beta %.2g q_next %.2g orthogonality %.2g\n",
      name, static_cast<long long>(c.m), static_cast<long long>(c.S), static_cast<long long>(c.n),
      static_cast<long long>(c.j), int(c.full), static_cast<long long>(c.parts), int(use_simd),
      int(zero_last_row), err_alpha, err_beta, err_q, ortho);
  // n >> j here, so r keeps most of w (beta / |w| ~ 1) and q_next = r / beta is as accurate
  // as r: every quantity within a few units of roundoff of the double oracle.
  expect(err_alpha < tol, "alpha matches the naive step");
  expect(err_beta < tol, "beta matches the naive step");
  expect(err_q < tol, "q_next matches the naive step");
  expect(ortho < tol, "q_next is orthogonal to the basis");
  expect(zero_ok, "a zero residual gives beta = 0 and q_next = 0");
}

void test_helpers() {
  expect(lz::block_elements(41, 4) == 512, "block of 512 floats for 41 basis vectors");
  expect(lz::block_elements(1000, 8) % lz::kMinBlock == 0 && lz::block_elements(1000, 8) >= lz::kMinBlock,
         "blocks are whole multiples of kMinBlock");
  expect(lz::lanczos_parts(49, 270000, 2) == 1, "enough rows: one part per row");
  expect(lz::lanczos_parts(1, 270000, 2) == 2, "one row, two threads: two parts");
  expect(lz::lanczos_parts(1, 1000, 8) == 1, "short rows are not split");
  // Parts cover [0, n) without gaps, on 64-element boundaries.
  for (int64_t n : {0, 1, 63, 64, 1000, 100003}) {
    for (int64_t parts : {1, 2, 3, 7}) {
      int64_t expected_begin = 0;
      bool ok = true;
      for (int64_t q = 0; q < parts; ++q) {
        int64_t b, e;
        lz::part_range(n, parts, q, &b, &e);
        ok = ok && b == expected_begin && e >= b && (q == parts - 1 || e % 64 == 0);
        expected_begin = e;
      }
      expect(ok && expected_begin == n, "part_range tiles [0, n)");
    }
  }
  // for_each_block: blocks tile the range, ahead only towards a full next block.
  int64_t covered = 0;
  bool ahead_ok = true;
  lz::for_each_block(5, 5 + 1000, 256, [&](int64_t b, int64_t len, int64_t ahead) {
    ahead_ok = ahead_ok && b == 5 + covered && (ahead == 0 || b + ahead + 256 <= 1005);
    covered += len;
  });
  expect(covered == 1000 && ahead_ok, "for_each_block tiles the range");
}

}  // namespace

int main() {
  std::mt19937 rng(2024);
  std::printf("AVX2+FMA path available: %d\n", int(landscape::cpu::cpu_has_avx2_fma()));
  test_helpers();
  // n not a multiple of any vector or block width; j = 0, j = S - 1, and a basis large enough
  // (S = 90) that the block shrinks below 512 elements for double.
  const Case cases[] = {
      {3, 5, 37, 0, true, 1},     {3, 5, 37, 4, true, 1},     {2, 6, 1000, 3, true, 1},
      {2, 6, 1000, 3, false, 1},  {1, 12, 5003, 11, true, 3}, {1, 12, 5003, 7, false, 4},
      {4, 9, 2049, 8, true, 2},   {2, 90, 1300, 89, true, 1}, {2, 90, 1300, 89, true, 5},
      {1, 3, 1, 0, true, 1},      {2, 4, 0, 1, true, 2},      {0, 3, 10, 1, true, 1},
      {5, 41, 777, 40, true, 1},  {5, 41, 777, 10, false, 1},
  };
  for (const Case& c : cases) {
    for (bool simd : {true, false}) {
      for (bool zero : {false, true}) {
        // ~5 eps of each type (observed: 3e-16 for double, 5e-8 for float).
        test_step<double>(rng, c, simd, zero, 1e-15, "double");
        test_step<float>(rng, c, simd, zero, 3e-7, "float");
      }
    }
  }
  if (failures != 0) {
    std::fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("all checks passed\n");
  return 0;
}
