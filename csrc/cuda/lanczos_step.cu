// CUDA kernels of landscape::lanczos_step on raw pointers.
//
// This file includes only CUDA headers (no torch), so it compiles with plain nvcc on machines
// whose PyTorch has no CUDA headers (and in the CMake build). The torch-facing launcher is
// csrc/cuda/lanczos_step_cuda.cpp; it calls launch_lanczos_step_f32/_f64 on the current stream.
//
// For m rows, basis B = Q[i, :j + 1] (nb = j + 1 vectors, elements contiguous, rows and slots
// strided), w [m, n], the step is (see csrc/lanczos_step.cpp for the definition):
//   1. dot_tiles_kernel      partial[i, t]       = q_j . w over tile t     -> reduce: alpha
//   2. recurrence_kernel     r = w - alpha q_j - beta_prev q_{j-1} on tile t, then
//                            partial[i, k, t]    = B_k . r over the tile (full), or ||r||^2
//                                                                           -> reduce: c1
//   3. reorthogonalize_kernel r -= B^T c1 on tile t, then partial[i, k, t] = B_k . r
//                                                                           -> reduce: c2
//   4. reorthogonalize_kernel r -= B^T c2 on tile t, then ||r||^2           -> reduce: beta
//   5. scale_kernel          r *= 1 / beta (where beta > 0)
// One block per (row, tile of kTile elements): the update reads the tile of every basis
// vector once (coalesced, one thread per element) and the dot products re-read it from L1/L2
// right after, one warp per basis vector, with r in shared memory -- three sweeps over the
// basis in DRAM, like the CPU kernel. Partial sums are reduced in a fixed order by
// reduce_kernel (one warp per output), so results are deterministic. Dot products and norms
// accumulate in double; the update sum_k c_k B_k is formed in the input type with c_k
// rounded to it, as in the reference.
#include <cuda_runtime.h>

#include <cstdint>

namespace landscape {
namespace cuda {

namespace {

constexpr int kThreads = 256;  // 8 warps per block
constexpr int kWarps = kThreads / 32;
constexpr int kTile = 1024;    // elements of a row per block (4 per thread)
constexpr int kPerThread = kTile / kThreads;

enum ReduceMode : int { kPlain = 0, kAlpha = 1, kNorm = 2 };

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Sum of v over the block, valid in thread 0. scratch: kWarps doubles of shared memory.
__device__ __forceinline__ double block_sum(double v, double* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  double total = 0.0;
  if (threadIdx.x == 0) {
    for (int k = 0; k < kWarps; ++k) total += scratch[k];
  }
  return total;
}

struct TileRange {
  int64_t row, tile, begin, len;
};

__device__ __forceinline__ TileRange tile_of_block(int64_t n, int64_t tiles) {
  TileRange tr;
  tr.row = static_cast<int64_t>(blockIdx.x) / tiles;
  tr.tile = static_cast<int64_t>(blockIdx.x) % tiles;
  tr.begin = tr.tile * kTile;
  const int64_t rest = n - tr.begin;
  tr.len = rest < kTile ? rest : kTile;
  return tr;
}

// partial[(row * width + k) * tiles + tile] = B_k . r over the tile for k < nb, one warp per k;
// r_tile in shared memory.
template <typename T>
__device__ __forceinline__ void tile_dots(const T* __restrict__ basis, int64_t q_vec_stride,
                                          int64_t nb, const T* r_tile, const TileRange& tr,
                                          int64_t width, int64_t tiles,
                                          double* __restrict__ partial) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int64_t k = warp; k < nb; k += kWarps) {
    const T* b = basis + k * q_vec_stride + tr.begin;
    double acc = 0.0;
    for (int64_t e = lane; e < tr.len; e += 32) {
      acc += static_cast<double>(b[e]) * static_cast<double>(r_tile[e]);
    }
    acc = warp_sum(acc);
    if (lane == 0) partial[(tr.row * width + k) * tiles + tr.tile] = acc;
  }
}

// partial[(row * width) * tiles + tile] = ||r_tile||^2 (r_tile in shared memory).
template <typename T>
__device__ __forceinline__ void tile_sumsq(const T* r_tile, const TileRange& tr, int64_t width,
                                           int64_t tiles, double* __restrict__ partial,
                                           double* scratch) {
  double acc = 0.0;
  for (int64_t e = threadIdx.x; e < tr.len; e += kThreads) {
    const double v = static_cast<double>(r_tile[e]);
    acc += v * v;
  }
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) partial[(tr.row * width) * tiles + tr.tile] = acc;
}

// partial[row * tiles + tile] = x_row . y_row over the tile.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    dot_tiles_kernel(const T* __restrict__ x, int64_t x_row_stride, const T* __restrict__ y,
                     int64_t y_row_stride, int64_t n, int64_t tiles,
                     double* __restrict__ partial) {
  __shared__ double scratch[kWarps];
  const TileRange tr = tile_of_block(n, tiles);
  const T* xr = x + tr.row * x_row_stride + tr.begin;
  const T* yr = y + tr.row * y_row_stride + tr.begin;
  double acc = 0.0;
  for (int64_t e = threadIdx.x; e < tr.len; e += kThreads) {
    acc += static_cast<double>(xr[e]) * static_cast<double>(yr[e]);
  }
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) partial[tr.row * tiles + tr.tile] = acc;
}

// r = w - alpha q_j - beta_prev q_{j-1} on the tile; then the tile's B r (nb > 0) or ||r||^2.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    recurrence_kernel(const T* __restrict__ Q, int64_t q_row_stride, int64_t q_vec_stride,
                      const T* __restrict__ w, int64_t w_row_stride,
                      const T* __restrict__ alpha, const T* __restrict__ beta_prev,
                      int64_t beta_stride, int64_t j, int64_t nb, T* __restrict__ r,
                      int64_t n, int64_t tiles, int64_t width, double* __restrict__ partial) {
  __shared__ T r_tile[kTile];
  __shared__ double scratch[kWarps];
  const TileRange tr = tile_of_block(n, tiles);
  const T* basis = Q + tr.row * q_row_stride;
  const T* qj = basis + j * q_vec_stride + tr.begin;
  const T* qp = j > 0 ? basis + (j - 1) * q_vec_stride + tr.begin : nullptr;
  const T* wr = w + tr.row * w_row_stride + tr.begin;
  T* rr = r + tr.row * n + tr.begin;
  const T a = alpha[tr.row];
  const T bp = j > 0 ? beta_prev[tr.row * beta_stride] : T(0);
#pragma unroll
  for (int s = 0; s < kPerThread; ++s) {
    const int e = threadIdx.x + s * kThreads;
    if (e < tr.len) {
      T v = wr[e] - a * qj[e];
      if (qp != nullptr) v -= bp * qp[e];
      r_tile[e] = v;
      rr[e] = v;
    }
  }
  __syncthreads();
  if (nb > 0) {
    tile_dots<T>(basis, q_vec_stride, nb, r_tile, tr, width, tiles, partial);
  } else {
    tile_sumsq<T>(r_tile, tr, width, tiles, partial, scratch);
  }
}

// r -= sum_k c[row, k] B_k on the tile; then the tile's B r (last = false) or ||r||^2.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    reorthogonalize_kernel(const T* __restrict__ Q, int64_t q_row_stride, int64_t q_vec_stride,
                           int64_t nb, const double* __restrict__ coeffs, bool last,
                           T* __restrict__ r, int64_t n, int64_t tiles, int64_t width,
                           double* __restrict__ partial) {
  __shared__ T r_tile[kTile];
  __shared__ double scratch[kWarps];
  const TileRange tr = tile_of_block(n, tiles);
  const T* basis = Q + tr.row * q_row_stride + tr.begin;
  const double* c = coeffs + tr.row * width;
  T* rr = r + tr.row * n + tr.begin;
  T acc[kPerThread];
#pragma unroll
  for (int s = 0; s < kPerThread; ++s) acc[s] = T(0);
  for (int64_t k = 0; k < nb; ++k) {
    const T ck = static_cast<T>(c[k]);
    const T* b = basis + k * q_vec_stride;
#pragma unroll
    for (int s = 0; s < kPerThread; ++s) {
      const int e = threadIdx.x + s * kThreads;
      if (e < tr.len) acc[s] += ck * b[e];
    }
  }
#pragma unroll
  for (int s = 0; s < kPerThread; ++s) {
    const int e = threadIdx.x + s * kThreads;
    if (e < tr.len) {
      const T v = rr[e] - acc[s];
      r_tile[e] = v;
      rr[e] = v;
    }
  }
  __syncthreads();
  if (!last) {
    tile_dots<T>(Q + tr.row * q_row_stride, q_vec_stride, nb, r_tile, tr, width, tiles, partial);
  } else {
    tile_sumsq<T>(r_tile, tr, width, tiles, partial, scratch);
  }
}

// out[row * width + k] = sum_t partial[(row * width + k) * tiles + t] for k < count, one
// warp per (row, k), lanes over tiles in a fixed order. Mode kAlpha also writes
// alpha_out[row] = (T) sum (count = 1); mode kNorm writes beta_out[row] = (T) sqrt(sum)
// (count = 1).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    reduce_kernel(const double* __restrict__ partial, int64_t m, int64_t width, int64_t count,
                  int64_t tiles, double* __restrict__ out, T* __restrict__ alpha_out,
                  T* __restrict__ beta_out, int mode) {
  const int lane = threadIdx.x & 31;
  const int64_t item = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / 32;
  if (item >= m * count) return;
  const int64_t row = item / count, k = item % count;
  const double* p = partial + (row * width + k) * tiles;
  double acc = 0.0;
  for (int64_t t = lane; t < tiles; t += 32) acc += p[t];
  acc = warp_sum(acc);
  if (lane != 0) return;
  out[row * width + k] = acc;
  if (mode == kAlpha) alpha_out[row] = static_cast<T>(acc);
  if (mode == kNorm) beta_out[row] = static_cast<T>(sqrt(acc));
}

// r[row, :] *= 1 / sqrt(sumsq[row * width]) where the norm is positive.
template <typename T>
__global__ void scale_kernel(T* __restrict__ r, const double* __restrict__ sumsq, int64_t width,
                             int64_t m, int64_t n) {
  const int64_t total = m * n;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const double norm = sqrt(sumsq[(idx / n) * width]);
    if (norm > 0.0) r[idx] *= static_cast<T>(1.0 / norm);
  }
}

template <typename T>
__global__ void zero_kernel(T* __restrict__ a, T* __restrict__ b, int64_t m) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < m;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    a[i] = T(0);
    b[i] = T(0);
  }
}

unsigned grid_for(int64_t work, int threads) {
  const int64_t blocks = (work + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 ? 65535 : blocks));
}

template <typename T>
cudaError_t launch_reduce(const double* partial, int64_t m, int64_t width, int64_t count,
                          int64_t tiles, double* out, T* alpha_out, T* beta_out, int mode,
                          cudaStream_t stream) {
  const int64_t warps = m * count;
  const int64_t blocks = (warps + kWarps - 1) / kWarps;
  reduce_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      partial, m, width, count, tiles, out, alpha_out, beta_out, mode);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_lanczos_step_impl(const T* Q, int64_t q_row_stride, int64_t q_vec_stride,
                                     const T* w, int64_t w_row_stride, const T* beta_prev,
                                     int64_t beta_stride, T* alpha, T* beta, T* q_next,
                                     double* workspace, int64_t m, int64_t n, int64_t j,
                                     bool full, cudaStream_t stream) {
  if (m == 0) return cudaSuccess;
  if (n == 0) {
    zero_kernel<T><<<grid_for(m, kThreads), kThreads, 0, stream>>>(alpha, beta, m);
    return cudaGetLastError();
  }
  const int64_t nb = full ? j + 1 : 0;
  const int64_t width = nb > 1 ? nb : 1;
  const int64_t tiles = (n + kTile - 1) / kTile;
  if (m * tiles > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  const unsigned blocks = static_cast<unsigned>(m * tiles);
  // Workspace layout (lanczos_step_workspace_elements): partial [m, width, tiles],
  // sums [m, width].
  double* partial = workspace;
  double* sums = partial + m * width * tiles;

  dot_tiles_kernel<T><<<blocks, kThreads, 0, stream>>>(Q + j * q_vec_stride, q_row_stride, w,
                                                      w_row_stride, n, tiles, partial);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  // partial [m, 1, tiles] read with width 1: alpha[row] in sums[row].
  err = launch_reduce<T>(partial, m, 1, 1, tiles, sums, alpha, beta, kAlpha, stream);
  if (err != cudaSuccess) return err;

  recurrence_kernel<T><<<blocks, kThreads, 0, stream>>>(Q, q_row_stride, q_vec_stride, w,
                                                       w_row_stride, alpha, beta_prev,
                                                       beta_stride, j, nb, q_next, n, tiles,
                                                       width, partial);
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  if (full) {
    err = launch_reduce<T>(partial, m, width, nb, tiles, sums, alpha, beta, kPlain, stream);
    if (err != cudaSuccess) return err;
    for (int pass = 0; pass < 2; ++pass) {
      const bool last = pass == 1;
      // The kernel reads sums (the coefficients) and writes partial; the next reduce
      // overwrites sums only after the kernel is done (stream order).
      reorthogonalize_kernel<T><<<blocks, kThreads, 0, stream>>>(
          Q, q_row_stride, q_vec_stride, nb, sums, last, q_next, n, tiles, width, partial);
      err = cudaGetLastError();
      if (err != cudaSuccess) return err;
      err = launch_reduce<T>(partial, m, width, last ? 1 : nb, tiles, sums, alpha, beta,
                             last ? kNorm : kPlain, stream);
      if (err != cudaSuccess) return err;
    }
  } else {
    err = launch_reduce<T>(partial, m, width, 1, tiles, sums, alpha, beta, kNorm, stream);
    if (err != cudaSuccess) return err;
  }
  scale_kernel<T><<<grid_for(m * n, kThreads), kThreads, 0, stream>>>(q_next, sums, width, m, n);
  return cudaGetLastError();
}

}  // namespace

// ---- launchers (declared in csrc/cuda/lanczos_step_cuda.cpp) ------------------------------

// Doubles of workspace the launchers need for m rows of n elements and j (full or not).
int64_t lanczos_step_workspace_elements(int64_t m, int64_t n, int64_t j, bool full) {
  const int64_t width = full && j + 1 > 1 ? j + 1 : 1;
  const int64_t tiles = (n + kTile - 1) / kTile;
  return m * width * (tiles + 1);
}

cudaError_t launch_lanczos_step_f32(const float* Q, int64_t q_row_stride, int64_t q_vec_stride,
                                    const float* w, int64_t w_row_stride,
                                    const float* beta_prev, int64_t beta_stride, float* alpha,
                                    float* beta, float* q_next, double* workspace, int64_t m,
                                    int64_t n, int64_t j, bool full, cudaStream_t stream) {
  return launch_lanczos_step_impl<float>(Q, q_row_stride, q_vec_stride, w, w_row_stride,
                                         beta_prev, beta_stride, alpha, beta, q_next, workspace,
                                         m, n, j, full, stream);
}

cudaError_t launch_lanczos_step_f64(const double* Q, int64_t q_row_stride,
                                    int64_t q_vec_stride, const double* w, int64_t w_row_stride,
                                    const double* beta_prev, int64_t beta_stride,
                                    double* alpha, double* beta, double* q_next,
                                    double* workspace, int64_t m, int64_t n, int64_t j,
                                    bool full, cudaStream_t stream) {
  return launch_lanczos_step_impl<double>(Q, q_row_stride, q_vec_stride, w, w_row_stride,
                                          beta_prev, beta_stride, alpha, beta, q_next,
                                          workspace, m, n, j, full, stream);
}

}  // namespace cuda
}  // namespace landscape
