// CPU vector helpers shared by the torch-free kernel headers (batched_linear_kernels.h,
// lanczos_step_kernels.h), like torchvision's csrc/ops/cpu/roi_align_common.h.
//
// The vector loops of the kernels have an AVX2+FMA version, compiled with a function-level
// target attribute (LANDSCAPE_AVX2) and selected at run time with cpu_has_avx2_fma(), and a
// portable fallback: the library never needs -march=native. Avx2Vec<T> gives the float and
// double micro-kernels one body.
#pragma once

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define LANDSCAPE_HAVE_AVX2 1
#include <immintrin.h>
#else
#define LANDSCAPE_HAVE_AVX2 0
#endif

namespace landscape {
namespace cpu {

#if LANDSCAPE_HAVE_AVX2

// Marks a function compiled for AVX2+FMA; call it only where cpu_has_avx2_fma() is true.
#define LANDSCAPE_AVX2 __attribute__((target("avx2,fma")))

// Minimal AVX2 vector traits: unaligned load/store, broadcast, arithmetic, horizontal sum.
template <typename T>
struct Avx2Vec;

template <>
struct Avx2Vec<float> {
  using V = __m256;
  static constexpr int kWidth = 8;
  LANDSCAPE_AVX2 static inline V load(const float* p) { return _mm256_loadu_ps(p); }
  LANDSCAPE_AVX2 static inline void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  LANDSCAPE_AVX2 static inline V set1(float v) { return _mm256_set1_ps(v); }
  LANDSCAPE_AVX2 static inline V zero() { return _mm256_setzero_ps(); }
  LANDSCAPE_AVX2 static inline V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  LANDSCAPE_AVX2 static inline V add(V a, V b) { return _mm256_add_ps(a, b); }
  LANDSCAPE_AVX2 static inline V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  LANDSCAPE_AVX2 static inline V max(V a, V b) { return _mm256_max_ps(a, b); }
  // max(0, v) keeps a NaN v (maxp returns its second operand when either is NaN) and -0,
  // as torch.relu does; max(v, 0) would turn NaN into 0.
  LANDSCAPE_AVX2 static inline V relu(V v) { return _mm256_max_ps(_mm256_setzero_ps(), v); }
  LANDSCAPE_AVX2 static inline float hsum(V v) {
    __m128 lo = _mm256_castps256_ps128(v);
    __m128 hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    __m128 shuf = _mm_movehdup_ps(lo);
    __m128 sums = _mm_add_ps(lo, shuf);
    shuf = _mm_movehl_ps(shuf, sums);
    sums = _mm_add_ss(sums, shuf);
    return _mm_cvtss_f32(sums);
  }
};

template <>
struct Avx2Vec<double> {
  using V = __m256d;
  static constexpr int kWidth = 4;
  LANDSCAPE_AVX2 static inline V load(const double* p) { return _mm256_loadu_pd(p); }
  LANDSCAPE_AVX2 static inline void store(double* p, V v) { _mm256_storeu_pd(p, v); }
  LANDSCAPE_AVX2 static inline V set1(double v) { return _mm256_set1_pd(v); }
  LANDSCAPE_AVX2 static inline V zero() { return _mm256_setzero_pd(); }
  LANDSCAPE_AVX2 static inline V fmadd(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  LANDSCAPE_AVX2 static inline V add(V a, V b) { return _mm256_add_pd(a, b); }
  LANDSCAPE_AVX2 static inline V sub(V a, V b) { return _mm256_sub_pd(a, b); }
  LANDSCAPE_AVX2 static inline V max(V a, V b) { return _mm256_max_pd(a, b); }
  // max(0, v) keeps a NaN v (maxp returns its second operand when either is NaN) and -0,
  // as torch.relu does; max(v, 0) would turn NaN into 0.
  LANDSCAPE_AVX2 static inline V relu(V v) { return _mm256_max_pd(_mm256_setzero_pd(), v); }
  LANDSCAPE_AVX2 static inline double hsum(V v) {
    __m128d lo = _mm256_castpd256_pd128(v);
    __m128d hi = _mm256_extractf128_pd(v, 1);
    lo = _mm_add_pd(lo, hi);
    __m128d hi64 = _mm_unpackhi_pd(lo, lo);
    return _mm_cvtsd_f64(_mm_add_sd(lo, hi64));
  }
};

// Software prefetch of the cache line at p into L2.
template <typename T>
LANDSCAPE_AVX2 inline void prefetch_line(const T* p) {
  _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T1);
}

// Whether this CPU runs the LANDSCAPE_AVX2 functions (checked once).
inline bool cpu_has_avx2_fma() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
}

#else

inline bool cpu_has_avx2_fma() { return false; }

#endif  // LANDSCAPE_HAVE_AVX2

}  // namespace cpu
}  // namespace landscape
