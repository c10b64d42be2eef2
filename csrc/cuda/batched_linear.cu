// CUDA kernels of landscape::batched_linear and landscape::fused_mlp2 on raw pointers.
//
// This file includes only CUDA headers (no torch), so it compiles with plain nvcc on machines
// whose PyTorch has no CUDA headers (and in the CMake build). The torch-facing launcher is
// csrc/cuda/batched_linear_cuda.cpp; it calls the launch_* functions below on the current
// stream. All tensors are contiguous, row-major.
//
// Straightforward implementations: correct first, tuned later.
//   batched_linear: a 16x16 tiled GEMM per point whose weight tile is synthesised from the
//                   basis and the coefficients while it is loaded into shared memory.
//   fused_mlp2:     one block per (point, sample tile); hidden chunks live in shared memory
//                   and are applied to W2_k at once, so the [K, N, H] hidden tensor is never
//                   written to global memory.
#include <cuda_runtime.h>

#include <cstdint>

namespace landscape {
namespace cuda {

namespace {

constexpr int kTile = 16;          // batched_linear: 16 x 16 output tile, 16-wide k steps
constexpr int kMaxBasis = 64;      // coefficients of one point cached in shared memory
constexpr int kMlpSamples = 16;    // fused_mlp2: samples per block
constexpr int kMlpHiddenChunk = 64;
constexpr int kMlpThreads = 256;

// As torch.relu / torch.tanh: NaN stays NaN (a comparison with NaN is false, so the test is
// written to fall through to v; v > 0 ? v : 0 or fmax(v, 0) would give 0), -0 stays -0.
template <typename T>
__device__ __forceinline__ T activate(T v, int activation) {
  if (activation == 1) return v < T(0) ? T(0) : v;
  if (activation == 2) return tanh(v);
  return v;
}

// out[k, n, o] = sum_i x[k?, n, i] * W_k[o, i] + b_k[o],  W_k = sum_j C[k, j] B[j].
// grid: (ceil(out / 16), ceil(N / 16), K); block: (16, 16).
// x_point_stride = 0 for a shared input, N * in for a per-point input.
template <typename T>
__global__ void batched_linear_kernel(const T* __restrict__ x, int64_t x_point_stride,
                                      const T* __restrict__ basis_weight,
                                      const T* __restrict__ basis_bias,
                                      const T* __restrict__ coeffs, T* __restrict__ out,
                                      int64_t N, int64_t in_features, int64_t out_features,
                                      int64_t J) {
  __shared__ T x_tile[kTile][kTile + 1];
  __shared__ T w_tile[kTile][kTile + 1];
  __shared__ T c_shared[kMaxBasis];
  const int64_t k = blockIdx.z;
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t o0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int tid = ty * kTile + tx;
  for (int j = tid; j < J; j += kTile * kTile) c_shared[j] = coeffs[k * J + j];
  __syncthreads();

  const T* xk = x + k * x_point_stride;
  const int64_t basis_stride = out_features * in_features;
  T acc = T(0);
  for (int64_t i0 = 0; i0 < in_features; i0 += kTile) {
    // x tile: row n0 + ty, column i0 + tx
    const int64_t xn = n0 + ty, xi = i0 + tx;
    x_tile[ty][tx] = (xn < N && xi < in_features) ? xk[xn * in_features + xi] : T(0);
    // weight tile synthesised on the fly: row o0 + ty, column i0 + tx
    const int64_t wo = o0 + ty, wi = i0 + tx;
    T w = T(0);
    if (wo < out_features && wi < in_features) {
      const T* b = basis_weight + wo * in_features + wi;
      for (int64_t j = 0; j < J; ++j) w += c_shared[j] * b[j * basis_stride];
    }
    w_tile[ty][tx] = w;
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kTile; ++i) acc += x_tile[ty][i] * w_tile[tx][i];
    __syncthreads();
  }
  const int64_t n = n0 + ty, o = o0 + tx;
  if (n < N && o < out_features) {
    if (basis_bias != nullptr) {
      for (int64_t j = 0; j < J; ++j) acc += c_shared[j] * basis_bias[j * out_features + o];
    }
    out[(k * N + n) * out_features + o] = acc;
  }
}

// out[k, m] = sum_j C[k, j] basis[j, m]; grid-stride over K * M.
template <typename T>
__global__ void combine_basis_kernel(const T* __restrict__ coeffs, const T* __restrict__ basis,
                                     T* __restrict__ out, int64_t K, int64_t J, int64_t M) {
  const int64_t total = K * M;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t k = idx / M, m = idx % M;
    T acc = T(0);
    for (int64_t j = 0; j < J; ++j) acc += coeffs[k * J + j] * basis[j * M + m];
    out[idx] = acc;
  }
}

// One block per (sample tile, point): grid (ceil(N / kMlpSamples), K).
// Dynamic shared memory: x tile [S, in], hidden chunk [S, HC], accumulators [S, O].
// w1 [K, H, in], b1 [K, H] (or null), w2 [K, O, H], b2 [K, O] (or null): per-point weights
// synthesised beforehand by combine_basis_kernel.
template <typename T>
__global__ void fused_mlp2_kernel(const T* __restrict__ x, const T* __restrict__ w1,
                                  const T* __restrict__ b1, const T* __restrict__ w2,
                                  const T* __restrict__ b2, T* __restrict__ out, int64_t N,
                                  int64_t in_features, int64_t H, int64_t O, int activation) {
  extern __shared__ unsigned char shared_raw[];
  T* x_tile = reinterpret_cast<T*>(shared_raw);           // [S, in]
  T* hidden = x_tile + kMlpSamples * in_features;         // [S, HC]
  T* acc = hidden + kMlpSamples * kMlpHiddenChunk;        // [S, O]
  const int64_t k = blockIdx.y;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kMlpSamples;
  const int64_t rows = min(static_cast<int64_t>(kMlpSamples), N - n0);
  const int tid = threadIdx.x;

  for (int64_t idx = tid; idx < kMlpSamples * in_features; idx += blockDim.x) {
    const int64_t s = idx / in_features;
    x_tile[idx] = s < rows ? x[(n0 + s) * in_features + idx % in_features] : T(0);
  }
  for (int64_t idx = tid; idx < kMlpSamples * O; idx += blockDim.x) acc[idx] = T(0);
  __syncthreads();

  const T* w1k = w1 + k * H * in_features;
  const T* w2k = w2 + k * O * H;
  for (int64_t h0 = 0; h0 < H; h0 += kMlpHiddenChunk) {
    const int64_t chunk = min(static_cast<int64_t>(kMlpHiddenChunk), H - h0);
    // hidden[s, hh] = act(x[s] . W1_k[h0 + hh] + b1_k[h0 + hh])
    for (int64_t idx = tid; idx < kMlpSamples * kMlpHiddenChunk; idx += blockDim.x) {
      const int64_t s = idx / kMlpHiddenChunk, hh = idx % kMlpHiddenChunk;
      T v = T(0);
      if (hh < chunk) {
        const T* wrow = w1k + (h0 + hh) * in_features;
        const T* xrow = x_tile + s * in_features;
        for (int64_t i = 0; i < in_features; ++i) v += xrow[i] * wrow[i];
        if (b1 != nullptr) v += b1[k * H + h0 + hh];
        v = activate(v, activation);
      }
      hidden[idx] = v;
    }
    __syncthreads();
    // acc[s, o] += hidden[s, :chunk] . W2_k[o, h0:h0 + chunk]
    for (int64_t idx = tid; idx < kMlpSamples * O; idx += blockDim.x) {
      const int64_t s = idx / O, o = idx % O;
      const T* wrow = w2k + o * H + h0;
      const T* hrow = hidden + s * kMlpHiddenChunk;
      T v = T(0);
      for (int64_t hh = 0; hh < chunk; ++hh) v += hrow[hh] * wrow[hh];
      acc[idx] += v;
    }
    __syncthreads();
  }
  for (int64_t idx = tid; idx < rows * O; idx += blockDim.x) {
    const int64_t s = idx / O, o = idx % O;
    out[(k * N + n0 + s) * O + o] = acc[idx] + (b2 != nullptr ? b2[k * O + o] : T(0));
  }
}

template <typename T>
cudaError_t launch_combine_basis(const T* coeffs, const T* basis, T* out, int64_t K, int64_t J,
                                 int64_t M, cudaStream_t stream) {
  const int64_t total = K * M;
  if (total == 0) return cudaSuccess;
  const int threads = 256;
  const int64_t blocks = (total + threads - 1) / threads;
  const unsigned grid = static_cast<unsigned>(blocks < 65535 ? blocks : 65535);
  combine_basis_kernel<T><<<grid, threads, 0, stream>>>(coeffs, basis, out, K, J, M);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_batched_linear_impl(const T* x, bool per_point_input, const T* basis_weight,
                                       const T* basis_bias, const T* coeffs, T* out, int64_t K,
                                       int64_t N, int64_t in_features, int64_t out_features,
                                       int64_t J, cudaStream_t stream) {
  if (J > kMaxBasis) return cudaErrorInvalidValue;
  if (K == 0 || N == 0 || out_features == 0) return cudaSuccess;
  if (K > 65535 || (N + kTile - 1) / kTile > 65535) return cudaErrorInvalidConfiguration;
  const dim3 block(kTile, kTile);
  const dim3 grid(static_cast<unsigned>((out_features + kTile - 1) / kTile),
                  static_cast<unsigned>((N + kTile - 1) / kTile), static_cast<unsigned>(K));
  batched_linear_kernel<T><<<grid, block, 0, stream>>>(
      x, per_point_input ? N * in_features : 0, basis_weight, basis_bias, coeffs, out, N,
      in_features, out_features, J);
  return cudaGetLastError();
}

template <typename T>
size_t fused_mlp2_shared_bytes(int64_t in_features, int64_t O) {
  return sizeof(T) * static_cast<size_t>(kMlpSamples * (in_features + kMlpHiddenChunk + O));
}

template <typename T>
cudaError_t launch_fused_mlp2_impl(const T* x, const T* w1_basis, const T* b1_basis,
                                   const T* w2_basis, const T* b2_basis, const T* coeffs,
                                   T* out, T* workspace, int64_t K, int64_t N,
                                   int64_t in_features, int64_t H, int64_t O, int64_t J,
                                   int activation, cudaStream_t stream) {
  if (K == 0 || N == 0 || O == 0) return cudaSuccess;
  if (K > 65535) return cudaErrorInvalidConfiguration;
  // Workspace layout (see fused_mlp2_workspace_elements): W1 [K, H, in], b1 [K, H],
  // W2 [K, O, H], b2 [K, O].
  T* w1 = workspace;
  T* b1 = w1 + K * H * in_features;
  T* w2 = b1 + K * H;
  T* b2 = w2 + K * O * H;
  cudaError_t err = launch_combine_basis<T>(coeffs, w1_basis, w1, K, J, H * in_features, stream);
  if (err != cudaSuccess) return err;
  if (b1_basis != nullptr) {
    err = launch_combine_basis<T>(coeffs, b1_basis, b1, K, J, H, stream);
    if (err != cudaSuccess) return err;
  }
  err = launch_combine_basis<T>(coeffs, w2_basis, w2, K, J, O * H, stream);
  if (err != cudaSuccess) return err;
  if (b2_basis != nullptr) {
    err = launch_combine_basis<T>(coeffs, b2_basis, b2, K, J, O, stream);
    if (err != cudaSuccess) return err;
  }
  const size_t shared = fused_mlp2_shared_bytes<T>(in_features, O);
  if (shared > 48 * 1024) {
    err = cudaFuncSetAttribute(fused_mlp2_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(shared));
    if (err != cudaSuccess) return err;
  }
  const dim3 grid(static_cast<unsigned>((N + kMlpSamples - 1) / kMlpSamples),
                  static_cast<unsigned>(K));
  fused_mlp2_kernel<T><<<grid, kMlpThreads, shared, stream>>>(
      x, w1, b1_basis != nullptr ? b1 : nullptr, w2, b2_basis != nullptr ? b2 : nullptr, out, N,
      in_features, H, O, activation);
  return cudaGetLastError();
}

}  // namespace

// ---- launchers (declared in csrc/cuda/batched_linear_cuda.cpp) ----------------------------

int64_t fused_mlp2_workspace_elements(int64_t K, int64_t in_features, int64_t H, int64_t O) {
  return K * (H * in_features + H + O * H + O);
}

cudaError_t launch_batched_linear_f32(const float* x, bool per_point_input,
                                      const float* basis_weight, const float* basis_bias,
                                      const float* coeffs, float* out, int64_t K, int64_t N,
                                      int64_t in_features, int64_t out_features, int64_t J,
                                      cudaStream_t stream) {
  return launch_batched_linear_impl<float>(x, per_point_input, basis_weight, basis_bias, coeffs,
                                           out, K, N, in_features, out_features, J, stream);
}

cudaError_t launch_batched_linear_f64(const double* x, bool per_point_input,
                                      const double* basis_weight, const double* basis_bias,
                                      const double* coeffs, double* out, int64_t K, int64_t N,
                                      int64_t in_features, int64_t out_features, int64_t J,
                                      cudaStream_t stream) {
  return launch_batched_linear_impl<double>(x, per_point_input, basis_weight, basis_bias,
                                            coeffs, out, K, N, in_features, out_features, J,
                                            stream);
}

cudaError_t launch_fused_mlp2_f32(const float* x, const float* w1_basis, const float* b1_basis,
                                  const float* w2_basis, const float* b2_basis,
                                  const float* coeffs, float* out, float* workspace, int64_t K,
                                  int64_t N, int64_t in_features, int64_t H, int64_t O,
                                  int64_t J, int activation, cudaStream_t stream) {
  return launch_fused_mlp2_impl<float>(x, w1_basis, b1_basis, w2_basis, b2_basis, coeffs, out,
                                       workspace, K, N, in_features, H, O, J, activation,
                                       stream);
}

cudaError_t launch_fused_mlp2_f64(const double* x, const double* w1_basis,
                                  const double* b1_basis, const double* w2_basis,
                                  const double* b2_basis, const double* coeffs, double* out,
                                  double* workspace, int64_t K, int64_t N, int64_t in_features,
                                  int64_t H, int64_t O, int64_t J, int activation,
                                  cudaStream_t stream) {
  return launch_fused_mlp2_impl<double>(x, w1_basis, b1_basis, w2_basis, b2_basis, coeffs, out,
                                        workspace, K, N, in_features, H, O, J, activation,
                                        stream);
}

}  // namespace cuda
}  // namespace landscape
