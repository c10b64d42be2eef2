// Torch-free core loops of the landscape::lanczos_step CPU kernel.
//
// One Lanczos step's bookkeeping for m independent Krylov bases (the definition is
// lanczos_step_reference in landscape/ops/lanczos_step.py). For row i, with the basis
// B = [q_0; ...; q_j] (nb = j + 1 vectors of length n) and w = A_i q_j:
//
//   alpha = q_j . w
//   r     = w - alpha q_j - beta_prev q_{j-1}                (the q_{j-1} term only for j > 0)
//   full reorthogonalisation (classical Gram-Schmidt, twice):
//           c1 = B r;  r -= B^T c1;  c2 = B r;  r -= B^T c2
//   beta  = ||r||,  q_next = r / beta  (r itself where beta == 0)
//
// Pass structure. The reference reads the basis B four times (two gemv pairs) and makes a
// temporary per operation. Here every sweep over n is cut into blocks of a few hundred
// elements (block_elements) and all the work on a block is done while it is in cache:
//   pass 1  alpha = q_j . w                                         (reads q_j, w)
//   pass 2  r = w - alpha q_j - beta_prev q_{j-1};  c1 += B r       (one read of B)
//   pass 3  r -= B^T c1;  c2 += B r                                  (one read of B: the
//           block of B that the update streamed in is still in L2 for the dots)
//   pass 4  r -= B^T c2;  ||r||^2                                    (one read of B)
//   pass 5  r *= 1 / beta
// so B comes from memory three times instead of four, r stays in L1 within a block, and no
// temporaries are allocated. Without reorthogonalisation: passes 1, 2 (with ||r||^2), 5.
// The dot products of a block are computed four basis vectors at a time (r is loaded once
// for four vectors); the update accumulates sum_k c_k B_k over the block in an L1 buffer
// four basis vectors at a time (each row of B is read in contiguous runs) and then
// subtracts it, like the reference's gemv-then-subtract. When the basis does not fit in
// the cache (prefetch_basis), the sweeps that read it from memory prefetch the next block of
// every basis vector into L2 while they work on the current one: the j + 1 rows are that
// many concurrent streams read in short runs, which the hardware prefetchers follow poorly.
//
// Parallelism (lanczos_parts): with m >= threads each row is one task that runs all passes
// (its basis stays in the core's caches between passes when it fits). With fewer rows than
// threads (m = 1: one Lanczos run), n is also split into parts; each pass is then a
// parallel loop over (row, part), and the per-part dot products are reduced in a fixed order
// between passes (deterministic for a given number of parts).
//
// Precision. Dot products and norms accumulate in double across blocks. Within a block of
// at most kAccBlock = 512 elements, float32 inputs accumulate in float32 SIMD lanes (16
// partial sums, 32 products each) before the block's sum is added to the double total: the
// rounding error bound is about 36 eps_f sum |b_i r_i|, independent of n (a float32 dot in
// 16 lanes has about n / 16 eps_f: 17000 eps_f for n = 2.7e5). Accumulating every product
// in double (two conversions and two FMAs per 8 floats instead of one FMA) was measured ~10%
// slower per step with the basis in cache (m = 1, n = 1e4, j = 40) and no faster when it
// streams from memory, so it is not done. float64 inputs accumulate in double throughout. alpha and the coefficients c are rounded to the input
// type before they multiply vectors, as in the reference; q_next = r * (1 / beta) uses the
// reciprocal of the double norm (within an ulp of the reference's division).
//
// The vector loops have an AVX2+FMA version (function-level target attribute, selected at
// run time; the vector traits are in vec_common.h) and a portable fallback; the library
// never needs -march=native.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "vec_common.h"

namespace landscape {
namespace cpu {
namespace lanczos {

// Elements whose float32 partial sums are added to the double accumulator at once; also the
// largest block of a sweep.
constexpr int64_t kAccBlock = 512;
// A block of the basis (nb rows x block elements) should stay in L2 between the update and
// the dot products of pass 3.
constexpr int64_t kBasisBlockBytes = 256 * 1024;
// Blocks are a multiple of a cache line of doubles (64 B), at least kMinBlock elements.
constexpr int64_t kMinBlock = 64;
// A part of a row (when rows are split over threads) has at least this many elements.
constexpr int64_t kMinPartElements = 16384;

// Elements per block for nb basis vectors of elem_size bytes.
inline int64_t block_elements(int64_t nb, int64_t elem_size) {
  const int64_t fit = kBasisBlockBytes / (std::max<int64_t>(nb, 1) * elem_size);
  return std::max(kMinBlock, std::min(kAccBlock, fit / kMinBlock * kMinBlock));
}

// Software prefetching of the basis pays when a sweep reads the basis from memory, and costs
// ~20% when it is in the last-level cache (one sweep of float32 dot products on a 32 MB L3:
// 30% faster for a 23 MB basis, 20% slower for 12 MB), so it is used beyond 16 MB.
constexpr int64_t kPrefetchBasisBytes = 16 << 20;
inline bool prefetch_basis(int64_t basis_bytes) { return basis_bytes > kPrefetchBasisBytes; }

// Parts per row: 1 when the rows alone keep `threads` threads busy, else enough parts to
// give every thread work, none shorter than kMinPartElements.
inline int64_t lanczos_parts(int64_t m, int64_t n, int64_t threads) {
  if (m <= 0 || threads <= 1 || m >= threads) return 1;
  const int64_t wanted = (threads + m - 1) / m;
  const int64_t most = std::max<int64_t>(1, n / kMinPartElements);
  return std::max<int64_t>(1, std::min(wanted, most));
}

// [begin, end) of part p of `parts` over n elements; boundaries on multiples of 64 elements.
inline void part_range(int64_t n, int64_t parts, int64_t p, int64_t* begin, int64_t* end) {
  auto bound = [&](int64_t q) { return q >= parts ? n : std::min(n, (n * q / parts) / 64 * 64); };
  *begin = bound(p);
  *end = bound(p + 1);
}

// ---------------------------------------------------------------------------------------
// Portable loops. len <= kAccBlock for the dot products (one block).
// ---------------------------------------------------------------------------------------

// c[k] += B_k[0:len] . r[0:len] for k < KB; B_k = B + k * ldb.
template <typename T>
void dots_generic(const T* B, int64_t ldb, int64_t nb, const T* r, int64_t len, double* c) {
  for (int64_t k = 0; k < nb; ++k) {
    const T* b = B + k * ldb;
    T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t i = 0;
    for (; i + 4 <= len; i += 4) {
      s0 += b[i] * r[i];
      s1 += b[i + 1] * r[i + 1];
      s2 += b[i + 2] * r[i + 2];
      s3 += b[i + 3] * r[i + 3];
    }
    for (; i < len; ++i) s0 += b[i] * r[i];
    c[k] += static_cast<double>((s0 + s1) + (s2 + s3));
  }
}

// r[0:len] -= sum_k c[k] B_k[0:len]  (the sum in t, then subtracted).
template <typename T>
void update_generic(const T* B, int64_t ldb, int64_t nb, const double* c, T* r, int64_t len,
                    T* t) {
  for (int64_t i = 0; i < len; ++i) t[i] = T(0);
  for (int64_t k = 0; k < nb; ++k) {
    const T ck = static_cast<T>(c[k]);
    const T* b = B + k * ldb;
    for (int64_t i = 0; i < len; ++i) t[i] += ck * b[i];
  }
  for (int64_t i = 0; i < len; ++i) r[i] -= t[i];
}

// ---------------------------------------------------------------------------------------
// AVX2 + FMA loops.
// ---------------------------------------------------------------------------------------
#if LANDSCAPE_HAVE_AVX2

// c[kk] += B_kk[0:len] . r[0:len] for KB basis vectors at once (r loaded once for all).
// With ahead != 0, also prefetches B_kk[ahead + i] (the next block of the sweep).
template <typename T, int KB>
LANDSCAPE_AVX2 inline void dots_rows_avx2(const T* B, int64_t ldb, const T* r,
                                          int64_t len, double* c, int64_t ahead) {
  using VT = Avx2Vec<T>;
  constexpr int W = VT::kWidth;
  static_assert(2 * W * sizeof(T) == 64, "one cache line per row per iteration");
  typename VT::V acc0[KB], acc1[KB];
  for (int kk = 0; kk < KB; ++kk) acc0[kk] = acc1[kk] = VT::zero();
  int64_t i = 0;
  for (; i + 2 * W <= len; i += 2 * W) {
    const auto r0 = VT::load(r + i);
    const auto r1 = VT::load(r + i + W);
    if (ahead != 0) {
      for (int kk = 0; kk < KB; ++kk) prefetch_line(B + kk * ldb + ahead + i);
    }
    for (int kk = 0; kk < KB; ++kk) {
      acc0[kk] = VT::fmadd(VT::load(B + kk * ldb + i), r0, acc0[kk]);
      acc1[kk] = VT::fmadd(VT::load(B + kk * ldb + i + W), r1, acc1[kk]);
    }
  }
  if (i + W <= len) {
    const auto r0 = VT::load(r + i);
    for (int kk = 0; kk < KB; ++kk) acc0[kk] = VT::fmadd(VT::load(B + kk * ldb + i), r0, acc0[kk]);
    i += W;
  }
  for (int kk = 0; kk < KB; ++kk) {
    T tail = T(0);
    for (int64_t e = i; e < len; ++e) tail += B[kk * ldb + e] * r[e];
    c[kk] += static_cast<double>(VT::hsum(VT::add(acc0[kk], acc1[kk])) + tail);
  }
}

template <typename T>
LANDSCAPE_AVX2 void dots_avx2(const T* B, int64_t ldb, int64_t nb, const T* r,
                              int64_t len, double* c, int64_t ahead) {
  int64_t k = 0;
  for (; k + 4 <= nb; k += 4) dots_rows_avx2<T, 4>(B + k * ldb, ldb, r, len, c + k, ahead);
  switch (nb - k) {
    case 3:
      dots_rows_avx2<T, 3>(B + k * ldb, ldb, r, len, c + k, ahead);
      break;
    case 2:
      dots_rows_avx2<T, 2>(B + k * ldb, ldb, r, len, c + k, ahead);
      break;
    case 1:
      dots_rows_avx2<T, 1>(B + k * ldb, ldb, r, len, c + k, ahead);
      break;
    default:
      break;
  }
}

// t[0:len] += sum_kk c[kk] B_kk[0:len] for KB basis vectors at once; with ahead != 0, also
// prefetches B_kk[ahead + i].
template <typename T, int KB>
LANDSCAPE_AVX2 inline void accumulate_rows_avx2(const T* B, int64_t ldb, const T* c,
                                                T* t, int64_t len, int64_t ahead) {
  using VT = Avx2Vec<T>;
  constexpr int W = VT::kWidth;
  typename VT::V cv[KB];
  for (int kk = 0; kk < KB; ++kk) cv[kk] = VT::set1(c[kk]);
  int64_t i = 0;
  for (; i + 2 * W <= len; i += 2 * W) {
    if (ahead != 0) {
      for (int kk = 0; kk < KB; ++kk) prefetch_line(B + kk * ldb + ahead + i);
    }
    auto acc0 = VT::load(t + i);
    auto acc1 = VT::load(t + i + W);
    for (int kk = 0; kk < KB; ++kk) {
      acc0 = VT::fmadd(cv[kk], VT::load(B + kk * ldb + i), acc0);
      acc1 = VT::fmadd(cv[kk], VT::load(B + kk * ldb + i + W), acc1);
    }
    VT::store(t + i, acc0);
    VT::store(t + i + W, acc1);
  }
  for (; i + W <= len; i += W) {
    auto acc = VT::load(t + i);
    for (int kk = 0; kk < KB; ++kk) acc = VT::fmadd(cv[kk], VT::load(B + kk * ldb + i), acc);
    VT::store(t + i, acc);
  }
  for (; i < len; ++i) {
    T acc = t[i];
    for (int kk = 0; kk < KB; ++kk) acc += c[kk] * B[kk * ldb + i];
    t[i] = acc;
  }
}

template <typename T>
LANDSCAPE_AVX2 void update_avx2(const T* B, int64_t ldb, int64_t nb, const double* c,
                                T* r, int64_t len, T* t, int64_t ahead) {
  using VT = Avx2Vec<T>;
  constexpr int W = VT::kWidth;
  for (int64_t i = 0; i < len; ++i) t[i] = T(0);
  T ct[4];
  int64_t k = 0;
  for (; k + 4 <= nb; k += 4) {
    for (int kk = 0; kk < 4; ++kk) ct[kk] = static_cast<T>(c[k + kk]);
    accumulate_rows_avx2<T, 4>(B + k * ldb, ldb, ct, t, len, ahead);
  }
  const int rest = static_cast<int>(nb - k);
  for (int kk = 0; kk < rest; ++kk) ct[kk] = static_cast<T>(c[k + kk]);
  switch (rest) {
    case 3:
      accumulate_rows_avx2<T, 3>(B + k * ldb, ldb, ct, t, len, ahead);
      break;
    case 2:
      accumulate_rows_avx2<T, 2>(B + k * ldb, ldb, ct, t, len, ahead);
      break;
    case 1:
      accumulate_rows_avx2<T, 1>(B + k * ldb, ldb, ct, t, len, ahead);
      break;
    default:
      break;
  }
  int64_t i = 0;
  for (; i + W <= len; i += W) VT::store(r + i, VT::sub(VT::load(r + i), VT::load(t + i)));
  for (; i < len; ++i) r[i] -= t[i];
}

#endif  // LANDSCAPE_HAVE_AVX2

// ---------------------------------------------------------------------------------------
// Dispatch between the two versions (use_simd = false forces the portable loops; the unit
// tests check both).
// ---------------------------------------------------------------------------------------

// c[k] += B_k[0:len] . r[0:len] for k < nb (len <= kAccBlock). ahead: offset of the block
// the sweep reads next, prefetched on the way (0: none; the portable loops ignore it).
template <typename T>
inline void block_dots(const T* B, int64_t ldb, int64_t nb, const T* r, int64_t len, double* c,
                       bool use_simd, int64_t ahead = 0) {
#if LANDSCAPE_HAVE_AVX2
  if (use_simd && cpu_has_avx2_fma()) {
    dots_avx2<T>(B, ldb, nb, r, len, c, ahead);
    return;
  }
#endif
  (void)use_simd;
  (void)ahead;
  dots_generic<T>(B, ldb, nb, r, len, c);
}

// r[0:len] -= sum_k c[k] B_k[0:len]; t: scratch of len numbers; ahead as block_dots.
template <typename T>
inline void block_update(const T* B, int64_t ldb, int64_t nb, const double* c, T* r,
                         int64_t len, T* t, bool use_simd, int64_t ahead = 0) {
#if LANDSCAPE_HAVE_AVX2
  if (use_simd && cpu_has_avx2_fma()) {
    update_avx2<T>(B, ldb, nb, c, r, len, t, ahead);
    return;
  }
#endif
  (void)use_simd;
  (void)ahead;
  update_generic<T>(B, ldb, nb, c, r, len, t);
}

// Calls fn(b, len, ahead) for the blocks [b, b + len) of [begin, end) in order; ahead is
// the offset of the next block (block) when that one is a full block, else 0 (a prefetch
// never reaches past the range).
template <typename Fn>
inline void for_each_block(int64_t begin, int64_t end, int64_t block, Fn&& fn) {
  for (int64_t b = begin; b < end; b += block) {
    const int64_t len = std::min(block, end - b);
    fn(b, len, b + 2 * block <= end ? block : 0);
  }
}

// ---------------------------------------------------------------------------------------
// The passes over one part [begin, end) of one row, and the whole step.
// ---------------------------------------------------------------------------------------

// The step for m rows. Row i of the basis: vector k at Q + i * q_row_stride + k * q_vec_stride,
// elements contiguous; w row i at w + i * w_row_stride (contiguous); beta_prev[i] at
// beta_prev + i * beta_stride. Outputs contiguous: alpha [m], beta [m], q_next [m, n].
template <typename T>
struct LanczosStepProblem {
  const T* Q = nullptr;
  int64_t q_row_stride = 0;
  int64_t q_vec_stride = 0;
  const T* w = nullptr;
  int64_t w_row_stride = 0;
  const T* beta_prev = nullptr;
  int64_t beta_stride = 1;
  T* alpha = nullptr;
  T* beta = nullptr;
  T* q_next = nullptr;
  int64_t m = 0;
  int64_t n = 0;
  int64_t j = 0;
  bool full = true;
  int64_t threads = 1;  // threads that will run the step (only used to decide on prefetching)
};

template <typename T>
class LanczosStepPasses {
 public:
  LanczosStepPasses(const LanczosStepProblem<T>& p, bool use_simd)
      : p_(p),
        nb_(p.full ? p.j + 1 : 0),
        block_(block_elements(p.full ? p.j + 1 : 1, sizeof(T))),
        use_simd_(use_simd),
        first_ahead_(prefetch_basis(p.m * row_basis_bytes(p))),
        again_ahead_(prefetch_basis(std::min(p.m, std::max<int64_t>(p.threads, 1)) * row_basis_bytes(p))) {}

  int64_t basis_size() const { return nb_; }

  // pass 1: q_j . w over [begin, end).
  double alpha_part(int64_t i, int64_t begin, int64_t end) const {
    const T* qj = vec(i, p_.j);
    const T* w = p_.w + i * p_.w_row_stride;
    double s = 0.0;
    for_each_block(begin, end, block_, [&](int64_t b, int64_t len, int64_t) {
      block_dots<T>(qj + b, 0, 1, w + b, len, &s, use_simd_);
    });
    return s;
  }

  // pass 2: r = w - alpha q_j - beta_prev q_{j-1}; out[0:nb] += B r (full) or
  // out[0] += ||r||^2 (none).
  void recurrence_part(int64_t i, T alpha, int64_t begin, int64_t end, double* out) const {
    const T* qj = vec(i, p_.j);
    const T* qp = p_.j > 0 ? vec(i, p_.j - 1) : nullptr;
    const T bp = p_.j > 0 ? p_.beta_prev[i * p_.beta_stride] : T(0);
    const T* w = p_.w + i * p_.w_row_stride;
    T* r = p_.q_next + i * p_.n;
    const T* B = vec(i, 0);
    for_each_block(begin, end, block_, [&](int64_t b, int64_t len, int64_t ahead) {
      T* rb = r + b;
      const T* wb = w + b;
      const T* qb = qj + b;
      if (qp != nullptr) {
        const T* pb = qp + b;
        for (int64_t e = 0; e < len; ++e) rb[e] = (wb[e] - alpha * qb[e]) - bp * pb[e];
      } else {
        for (int64_t e = 0; e < len; ++e) rb[e] = wb[e] - alpha * qb[e];
      }
      if (nb_ > 0) {
        block_dots<T>(B + b, p_.q_vec_stride, nb_, rb, len, out, use_simd_, first_ahead_ ? ahead : 0);
      } else {
        block_dots<T>(rb, 0, 1, rb, len, out, use_simd_);
      }
    });
  }

  // passes 3 and 4: r -= B^T c; then out[0:nb] += B r (last = false) or out[0] += ||r||^2
  // (last = true). scratch: kAccBlock numbers.
  void reorthogonalize_part(int64_t i, const double* c, bool last, int64_t begin, int64_t end,
                            double* out, T* scratch) const {
    T* r = p_.q_next + i * p_.n;
    const T* B = vec(i, 0);
    for_each_block(begin, end, block_, [&](int64_t b, int64_t len, int64_t ahead) {
      T* rb = r + b;
      block_update<T>(B + b, p_.q_vec_stride, nb_, c, rb, len, scratch, use_simd_,
                      again_ahead_ ? ahead : 0);
      if (!last) {
        block_dots<T>(B + b, p_.q_vec_stride, nb_, rb, len, out, use_simd_);
      } else {
        block_dots<T>(rb, 0, 1, rb, len, out, use_simd_);
      }
    });
  }

  // pass 5: r *= scale.
  void scale_part(int64_t i, T scale, int64_t begin, int64_t end) const {
    T* r = p_.q_next + i * p_.n;
    for (int64_t e = begin; e < end; ++e) r[e] *= scale;
  }

  // beta from ||r||^2 (double); the factor that normalises r (1 where beta == 0).
  static T finish(double sumsq, T* beta) {
    const double norm = std::sqrt(sumsq);
    *beta = static_cast<T>(norm);
    return norm > 0.0 ? static_cast<T>(1.0 / norm) : T(1);
  }

  // All passes of row i over the whole row (one task per row).
  void whole_row(int64_t i, double* c1, double* c2, T* scratch) const {
    const int64_t n = p_.n;
    const T alpha = static_cast<T>(alpha_part(i, 0, n));
    p_.alpha[i] = alpha;
    double sumsq = 0.0;
    if (nb_ > 0) {
      std::fill(c1, c1 + nb_, 0.0);
      std::fill(c2, c2 + nb_, 0.0);
      recurrence_part(i, alpha, 0, n, c1);
      reorthogonalize_part(i, c1, false, 0, n, c2, scratch);
      reorthogonalize_part(i, c2, true, 0, n, &sumsq, scratch);
    } else {
      recurrence_part(i, alpha, 0, n, &sumsq);
    }
    const T scale = finish(sumsq, p_.beta + i);
    if (scale != T(1)) scale_part(i, scale, 0, n);
  }

 private:
  const T* vec(int64_t i, int64_t k) const {
    return p_.Q + i * p_.q_row_stride + k * p_.q_vec_stride;
  }

  LanczosStepProblem<T> p_;
  int64_t nb_;
  int64_t block_;
  bool use_simd_;
  // Prefetch the next block of the basis in the first sweep over it (pass 2: the basis of all
  // rows comes from memory when it does not fit in the cache), and in the later sweeps
  // (passes 3, 4: the rows being processed at once do not fit).
  bool first_ahead_;
  bool again_ahead_;

  static int64_t row_basis_bytes(const LanczosStepProblem<T>& p) {
    return (p.full ? p.j + 1 : 2) * p.n * static_cast<int64_t>(sizeof(T));
  }
};

// The whole step. parallel_for(begin, end, fn) runs fn(b, e) over a partition of
// [begin, end) (at::parallel_for in the kernel, a plain loop in the unit tests); parts is
// the number of parts per row (lanczos_parts).
template <typename T, typename ParallelFor>
void lanczos_step(const LanczosStepProblem<T>& p, int64_t parts, ParallelFor&& parallel_for,
                  bool use_simd = true) {
  const int64_t m = p.m, n = p.n;
  if (m == 0) return;
  const LanczosStepPasses<T> passes(p, use_simd);
  const int64_t nb = passes.basis_size();
  const int64_t width = std::max<int64_t>(nb, 1);
  parts = std::max<int64_t>(1, std::min<int64_t>(parts, std::max<int64_t>(1, n / kMinBlock)));

  if (parts == 1) {
    parallel_for(0, m, [&](int64_t begin, int64_t end) {
      std::vector<double> c(static_cast<size_t>(2 * width));
      std::vector<T> scratch(static_cast<size_t>(kAccBlock));
      for (int64_t i = begin; i < end; ++i) passes.whole_row(i, c.data(), c.data() + width, scratch.data());
    });
    return;
  }

  // Rows split into parts: one parallel loop per pass over the m * parts tasks, the partial
  // sums reduced in part order between passes.
  const int64_t tasks = m * parts;
  std::vector<double> partial(static_cast<size_t>(tasks * width));
  std::vector<double> c(static_cast<size_t>(m * width));
  std::vector<T> alpha(static_cast<size_t>(m));
  auto reduce = [&](int64_t count) {
    for (int64_t i = 0; i < m; ++i)
      for (int64_t k = 0; k < count; ++k) {
        double s = 0.0;
        for (int64_t q = 0; q < parts; ++q) s += partial[(i * parts + q) * width + k];
        c[i * width + k] = s;
      }
  };
  auto clear = [&] { std::fill(partial.begin(), partial.end(), 0.0); };
  auto range = [&](int64_t task, int64_t* begin, int64_t* end) { part_range(n, parts, task % parts, begin, end); };

  clear();
  parallel_for(0, tasks, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      int64_t b, e;
      range(t, &b, &e);
      partial[t * width] = passes.alpha_part(t / parts, b, e);
    }
  });
  reduce(1);
  for (int64_t i = 0; i < m; ++i) {
    alpha[i] = static_cast<T>(c[i * width]);
    p.alpha[i] = alpha[i];
  }

  clear();
  parallel_for(0, tasks, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      int64_t b, e;
      range(t, &b, &e);
      passes.recurrence_part(t / parts, alpha[t / parts], b, e, partial.data() + t * width);
    }
  });
  reduce(width);

  for (int pass = 0; nb > 0 && pass < 2; ++pass) {
    const bool last = pass == 1;
    const std::vector<double> coeffs = c;
    clear();
    parallel_for(0, tasks, [&](int64_t t0, int64_t t1) {
      std::vector<T> scratch(static_cast<size_t>(kAccBlock));
      for (int64_t t = t0; t < t1; ++t) {
        int64_t b, e;
        range(t, &b, &e);
        passes.reorthogonalize_part(t / parts, coeffs.data() + (t / parts) * width, last, b, e,
                                    partial.data() + t * width, scratch.data());
      }
    });
    reduce(last ? 1 : width);
  }

  std::vector<T> scale(static_cast<size_t>(m));
  for (int64_t i = 0; i < m; ++i) scale[i] = LanczosStepPasses<T>::finish(c[i * width], p.beta + i);
  parallel_for(0, tasks, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i = t / parts;
      if (scale[i] == T(1)) continue;
      int64_t b, e;
      range(t, &b, &e);
      passes.scale_part(i, scale[i], b, e);
    }
  });
}

}  // namespace lanczos
}  // namespace cpu
}  // namespace landscape
