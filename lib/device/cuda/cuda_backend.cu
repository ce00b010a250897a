// The CUDA backend: cuBLAS GEMMs (bf16 inputs with f32 accumulation, or strict f32 — no
// TF32, so f32 results track the CPU backend), the kernels of kernels.cu and
// attention.cu, RAII streams and events, and a caching allocator.
//
// Allocator: cudaMalloc/cudaFree synchronise the whole device, which would serialise the
// engine's gather/compute/reduce-scatter overlap, so freed blocks are cached. A freed
// block may still be in use by work already queued on any of this backend's streams, so
// deallocate() records an event on each of them; the block is handed out again only when
// all those events have completed. bytes_in_use() counts the bytes callers asked for.
#include <algorithm>
#include <cstdlib>
#include <cmath>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>
#include <vector>

#include "cuda_common.cuh"
#include "mics/core/error.hpp"
#include "mics/device/backend.hpp"

namespace mics::device {
namespace cuda {
namespace {

cudaDataType_t cuda_type(DType dt) {
  switch (dt) {
    case DType::f32: return CUDA_R_32F;
    case DType::bf16: return CUDA_R_16BF;
    case DType::f64: return CUDA_R_64F;
  }
  return CUDA_R_32F;
}

// The backend's streams, shared with each CudaStream so that a stream outliving its
// backend (against the rules, but harmless) does not touch freed memory.
struct StreamRegistry {
  std::mutex mu;
  std::set<cudaStream_t> streams;
};

class CudaStream final : public Stream {
public:
  CudaStream(std::shared_ptr<StreamRegistry> reg, int device);
  ~CudaStream() override;
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;
  void synchronize() override { MICS_CHECK_CUDA(cudaStreamSynchronize(s_)); }
  void* native() noexcept override { return s_; }
  cudaStream_t get() const noexcept { return s_; }

private:
  std::shared_ptr<StreamRegistry> reg_;
  cudaStream_t s_ = nullptr;
};

class CudaEvent final : public Event {
public:
  CudaEvent() { MICS_CHECK_CUDA(cudaEventCreateWithFlags(&e_, cudaEventDisableTiming)); }
  ~CudaEvent() override { cudaEventDestroy(e_); }
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  void record(Stream& s) override {
    MICS_CHECK_CUDA(cudaEventRecord(e_, static_cast<cudaStream_t>(s.native())));
  }
  void wait(Stream& s) override {
    MICS_CHECK_CUDA(cudaStreamWaitEvent(static_cast<cudaStream_t>(s.native()), e_, 0));
  }
  void synchronize() override { MICS_CHECK_CUDA(cudaEventSynchronize(e_)); }
  bool ready() override {
    const cudaError_t rc = cudaEventQuery(e_);
    if (rc == cudaErrorNotReady) return false;
    MICS_CHECK_CUDA(rc);
    return true;
  }
  void* native() noexcept override { return e_; }

private:
  cudaEvent_t e_ = nullptr;
};

// Data-sheet dense peaks (FLOP/s) by device name, for MFU.
double peak_for(const std::string& name, DType dt) {
  auto has = [&](const char* s) { return name.find(s) != std::string::npos; };
  const bool pcie = has("PCIe") || has("PCIE");
  const bool nvl = has("NVL");
  if (dt == DType::bf16) {
    if (has("H100") || has("H200") || has("H800")) return pcie ? 756e12 : nvl ? 835e12 : 989e12;
    if (has("A100") || has("A800")) return 312e12;
    return 0.0;
  }
  if (dt == DType::f32) {  // CUDA cores, no TF32
    if (has("H100") || has("H200") || has("H800")) return pcie ? 51e12 : 67e12;
    if (has("A100")) return 19.5e12;
  }
  return 0.0;
}

class CudaBackend;

// Live backends by their compute stream, for cuda_backend_with_compute_stream().
struct LiveBackends {
  std::mutex mu;
  std::map<cudaStream_t, CudaBackend*> by_stream;
};
LiveBackends& live_backends() {
  static LiveBackends l;
  return l;
}

class CudaBackend final : public Backend, private Scratch {
public:
  explicit CudaBackend(int device) : device_(device) {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0)
      throw Error("cuda backend: no CUDA device is visible on this host");
    if (device < 0 || device >= count)
      throw UsageError("cuda backend: device " + std::to_string(device) +
                       " does not exist (this host shows " + std::to_string(count) + ")");
    MICS_CHECK_CUDA(cudaSetDevice(device_));
    cudaDeviceProp prop{};
    MICS_CHECK_CUDA(cudaGetDeviceProperties(&prop, device_));
    device_name_ = prop.name;
    memory_capacity_ = prop.totalGlobalMem;
    compute_ = std::make_unique<CudaStream>(registry_, device_);
    MICS_CHECK_CUBLAS(cublasCreate(&blas_));
    MICS_CHECK_CUBLAS(cublasSetStream(blas_, compute_->get()));
    MICS_CHECK_CUBLAS(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH));
    // cuBLAS picks Hopper's best kernels only with a workspace of this size.
    blas_ws_bytes_ = 32u << 20;
    MICS_CHECK_CUDA(cudaMalloc(&blas_ws_, blas_ws_bytes_));
    MICS_CHECK_CUBLAS(cublasSetWorkspace(blas_, blas_ws_, blas_ws_bytes_));
    MICS_CHECK_CUDA(cudaMalloc(&dev_result_, sizeof(double)));
    std::lock_guard<std::mutex> lock(live_backends().mu);
    live_backends().by_stream[compute_->get()] = this;
  }
  ~CudaBackend() override {
    {
      std::lock_guard<std::mutex> lock(live_backends().mu);
      live_backends().by_stream.erase(compute_->get());
    }
    cudaSetDevice(device_);
    cudaDeviceSynchronize();
    for (auto& kv : cached_) release_cached(kv.second);
    for (auto& kv : live_) cudaFree(kv.first);
    for (auto& sc : scratch_) cudaFree(sc.p);
    cudaFree(dev_result_);
    if (blas_ != nullptr) cublasDestroy(blas_);
    cudaFree(blas_ws_);
    compute_.reset();
  }

  std::string name() const override { return "cuda:" + std::to_string(device_); }
  bool is_host_memory() const override { return false; }
  bool supports(DType dt) const override { return dt == DType::f32 || dt == DType::bf16; }
  double peak_flops(DType dt) const override { return peak_for(device_name_, dt); }
  std::size_t memory_capacity() const override { return memory_capacity_; }

  // --- memory -----------------------------------------------------------------------------
  static std::size_t round_size(std::size_t b) {
    const std::size_t q = b < (1u << 20) ? 512 : (2u << 20);
    return (b + q - 1) / q * q;
  }
  void* allocate(std::size_t bytes) override {
    if (bytes == 0) return nullptr;
    const std::size_t cap = round_size(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    std::size_t real_cap = cap;
    void* p = take_cached(cap, real_cap);
    if (p == nullptr) {
      cudaError_t rc = cudaMalloc(&p, cap);
      if (rc == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        MICS_CHECK_CUDA(cudaDeviceSynchronize());
        for (auto& kv : cached_) release_cached(kv.second);
        cached_.clear();
        rc = cudaMalloc(&p, cap);
      }
      if (rc != cudaSuccess) {
        cudaGetLastError();
        std::size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        throw Error("cuda backend: out of device memory allocating " + std::to_string(bytes) +
                    " bytes on " + name() + " (" + std::to_string(in_use_) + " in use, " +
                    std::to_string(free_b) + " free of " + std::to_string(total_b) + ")");
      }
    }
    live_[p] = Live{bytes, real_cap};
    in_use_ += bytes;
    peak_ = std::max(peak_, in_use_);
    return p;
  }
  void deallocate(void* p) noexcept override {
    if (p == nullptr) return;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(p);
    if (it == live_.end()) return;  // not ours: never free foreign memory
    in_use_ -= it->second.bytes;
    retire(p, it->second.cap);
    live_.erase(it);
  }
  void* allocate_host(std::size_t bytes) override {
    if (bytes == 0) return nullptr;
    void* p = nullptr;
    if (cudaMallocHost(&p, bytes) != cudaSuccess) {
      cudaGetLastError();
      throw Error("cuda backend: cannot allocate " + std::to_string(bytes) +
                  " bytes of page-locked host memory");
    }
    return p;
  }
  void deallocate_host(void* p) noexcept override {
    if (p != nullptr) cudaFreeHost(p);
  }
  std::size_t bytes_in_use() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return in_use_;
  }
  std::size_t peak_bytes_in_use() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return peak_;
  }
  void reset_peak() override {
    std::lock_guard<std::mutex> lock(mu_);
    peak_ = in_use_;
  }

  cudaStream_t stream_of(Stream* s) { return s ? static_cast<cudaStream_t>(s->native()) : cs(); }
  void copy_to_device(void* dst, const void* src, std::size_t bytes, Stream* s) override {
    if (bytes == 0) return;
    MICS_CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_of(s)));
    if (s == nullptr) compute_->synchronize();
  }
  void copy_to_host(void* dst, const void* src, std::size_t bytes, Stream* s) override {
    if (bytes == 0) return;
    MICS_CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_of(s)));
    if (s == nullptr) compute_->synchronize();
  }
  // Device-to-device copies are ordered on their stream like any kernel; the host cannot
  // observe device memory without a later synchronising call, so none is made here.
  void copy(void* dst, const void* src, std::size_t bytes, Stream* s) override {
    if (bytes == 0 || dst == src) return;
    MICS_CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_of(s)));
  }

  // --- streams --------------------------------------------------------------------------
  Stream& compute_stream() override { return *compute_; }
  std::unique_ptr<Stream> create_stream() override {
    return std::make_unique<CudaStream>(registry_, device_);
  }
  std::unique_ptr<Event> create_event() override { return std::make_unique<CudaEvent>(); }
  void synchronize() override { MICS_CHECK_CUDA(cudaDeviceSynchronize()); }


  // --- elementwise ------------------------------------------------------------------------
  void fill(DType dt, void* x, std::int64_t n, double v) override {
    check_dt("fill", dt);
    launch_fill(dt, x, n, v, cs());
  }
  void scale(DType dt, void* x, std::int64_t n, double a) override {
    check_dt("scale", dt);
    launch_scale(dt, x, n, a, cs());
  }
  void axpy(DType dt, void* y, const void* x, std::int64_t n, double a) override {
    check_dt("axpy", dt);
    launch_axpy(dt, y, x, n, a, cs());
  }
  void add(DType dt, void* out, const void* a, const void* b, std::int64_t n) override {
    check_dt("add", dt);
    launch_add(dt, out, a, b, n, cs());
  }
  void cast(DType dd, void* dst, DType sd, const void* src, std::int64_t n) override {
    if (dd == sd) {
      copy(dst, src, static_cast<std::size_t>(n) * dtype_size(dd), nullptr);
      return;
    }
    launch_cast(dd, dst, sd, src, n, cs());
  }
  void accumulate(DType dd, void* dst, DType sd, const void* src, std::int64_t n,
                  double alpha) override {
    launch_accumulate(dd, dst, sd, src, n, alpha, cs());
  }
  double reduce(DType dt, const void* x, std::int64_t n, bool squares) {
    check_dt(squares ? "sum_squares" : "sum", dt);
    if (n <= 0) return 0.0;
    launch_reduce(dt, x, n, squares, dev_result_, *this, cs());
    double r = 0.0;
    MICS_CHECK_CUDA(cudaMemcpyAsync(&r, dev_result_, sizeof r, cudaMemcpyDeviceToHost, cs()));
    compute_->synchronize();
    return r;
  }
  double sum_squares(DType dt, const void* x, std::int64_t n) override {
    return reduce(dt, x, n, true);
  }
  double sum(DType dt, const void* x, std::int64_t n) override { return reduce(dt, x, n, false); }

  // --- GEMM -------------------------------------------------------------------------------
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: cuBLAS gets B first.
  // A and B are of type ab, C of type c (f32 scores from bf16 operands in attention).
  void gemm_ex(DType ab, DType c, bool ta, bool tb, std::int64_t M, std::int64_t N,
               std::int64_t K, double alpha, const void* A, std::int64_t lda,
               std::int64_t sa, const void* B, std::int64_t ldb, std::int64_t sb,
               double beta, void* C, std::int64_t ldc, std::int64_t sc, std::int64_t batch) {
    if (M == 0 || N == 0 || batch == 0) return;
    if (K == 0) {
      for (std::int64_t i = 0; i < batch; ++i)
        launch_scale_matrix(c, offset(C, c, i * sc), M, N, ldc, beta, cs());
      return;
    }
    auto i32 = [](std::int64_t v, const char* what) {
      if (v < 0 || v > 0x7fffffff)
        throw Error(std::string("cuda backend: gemm ") + what + " = " + std::to_string(v) +
                    " does not fit cuBLAS's 32-bit integer");
      return static_cast<int>(v);
    };
    const float fa = static_cast<float>(alpha), fb = static_cast<float>(beta);
    const cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasComputeType_t ct = CUBLAS_COMPUTE_32F;  // f32 accumulation, no TF32
    if (batch == 1) {
      MICS_CHECK_CUBLAS(cublasGemmEx(blas_, opb, opa, i32(N, "N"), i32(M, "M"), i32(K, "K"), &fa,
                                  B, cuda_type(ab), i32(ldb, "ldb"), A, cuda_type(ab),
                                  i32(lda, "lda"), &fb, C, cuda_type(c), i32(ldc, "ldc"), ct,
                                  CUBLAS_GEMM_DEFAULT));
    } else {
      MICS_CHECK_CUBLAS(cublasGemmStridedBatchedEx(
          blas_, opb, opa, i32(N, "N"), i32(M, "M"), i32(K, "K"), &fa, B, cuda_type(ab),
          i32(ldb, "ldb"), sb, A, cuda_type(ab), i32(lda, "lda"), sa, &fb, C, cuda_type(c),
          i32(ldc, "ldc"), sc, i32(batch, "batch"), ct, CUBLAS_GEMM_DEFAULT));
    }
  }
  void gemm(DType dt, bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K,
            double alpha, const void* A, std::int64_t lda, const void* B, std::int64_t ldb,
            double beta, void* C, std::int64_t ldc) override {
    check_dt("gemm", dt);
    gemm_ex(dt, dt, ta, tb, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
  }
  void gemm_strided_batched(DType dt, bool ta, bool tb, std::int64_t M, std::int64_t N,
                            std::int64_t K, double alpha, const void* A, std::int64_t lda,
                            std::int64_t sa, const void* B, std::int64_t ldb, std::int64_t sb,
                            double beta, void* C, std::int64_t ldc, std::int64_t sc,
                            std::int64_t batch) override {
    check_dt("gemm_strided_batched", dt);
    gemm_ex(dt, dt, ta, tb, M, N, K, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch);
  }
  void add_bias(DType dt, void* out, const void* bias, std::int64_t N, std::int64_t C) override {
    launch_add_bias(dt, out, bias, N, C, cs());
  }
  void bias_backward(DType dt, void* dbias, const void* dout, std::int64_t N,
                     std::int64_t C) override {
    launch_bias_backward(dt, dbias, dout, N, C, *this, cs());
  }

  // --- transformer kernels ----------------------------------------------------------------
  void embedding_forward(DType dt, void* out, const std::int32_t* tokens, const void* wte,
                         const void* wpe, std::int64_t B, std::int64_t T,
                         std::int64_t C) override {
    launch_embedding_forward(dt, out, tokens, wte, wpe, B, T, C, cs());
  }
  void embedding_backward(DType dt, void* dwte, void* dwpe, const void* dout,
                          const std::int32_t* tokens, std::int64_t B, std::int64_t T,
                          std::int64_t C) override {
    launch_embedding_backward(dt, dwte, dwpe, dout, tokens, B, T, C, *this, cs());
  }
  void layernorm_forward(DType dt, void* out, void* mean, void* rstd, const void* inp,
                         const void* w, const void* b, std::int64_t N, std::int64_t C,
                         double eps) override {
    launch_layernorm_forward(dt, out, mean, rstd, inp, w, b, N, C, eps, cs());
  }
  void layernorm_backward(DType dt, void* dinp, void* dw, void* db, const void* dout,
                          const void* inp, const void* w, const void* mean, const void* rstd,
                          std::int64_t N, std::int64_t C) override {
    launch_layernorm_backward(dt, dinp, dw, db, dout, inp, w, mean, rstd, N, C, *this, cs());
  }
  void gelu_forward(DType dt, void* out, const void* inp, std::int64_t n) override {
    launch_gelu_forward(dt, out, inp, n, cs());
  }
  void gelu_backward(DType dt, void* dinp, const void* inp, const void* dout,
                     std::int64_t n) override {
    launch_gelu_backward(dt, dinp, inp, dout, n, cs());
  }

  // --- attention --------------------------------------------------------------------------
  // Per batch row and chunk of heads: S = scale Q K^T (f32, batched over heads), row
  // softmax into P (dt) saving the log-sum-exp, O = P V. The [T,T] matrices of a chunk are
  // scratch, bounded by kAttnScratch; only lse [B,NH,T] (f32) is kept for the backward.
  static constexpr std::size_t kAttnScratch = std::size_t(768) << 20;
  std::int64_t heads_per_chunk(DType dt, const AttentionShape& s) const {
    const std::size_t per_head =
        static_cast<std::size_t>(s.T) * static_cast<std::size_t>(s.T) * (4 + dtype_size(dt));
    const std::int64_t h = static_cast<std::int64_t>(kAttnScratch / std::max<std::size_t>(per_head, 1));
    return std::clamp<std::int64_t>(h, 1, s.NH);
  }
  // MICS_ATTENTION=flash selects the fused kernels (flash_attention.cu) for bf16 with head
  // size 64 or 128, forward and backward; the default stays the GEMM path until they have
  // been checked on a GPU (test_device_cuda runs both).
  static bool use_flash_forward() {
    const char* e = std::getenv("MICS_ATTENTION");
    return e != nullptr && std::string(e) == "flash";
  }
  static bool use_flash_backward() { return use_flash_forward(); }
  std::size_t attention_saved_bytes(DType, const AttentionShape& s) const override {
    return sizeof(float) * static_cast<std::size_t>(s.B * s.NH * s.T);
  }
  void attention_forward(DType dt, const AttentionShape& s, void* out, void* saved,
                         const void* qkv) override {
    check_dt("attention_forward", dt);
    const std::int64_t T = s.T, HS = s.HS, C = s.NH * HS, C3 = 3 * C;
    if (s.B * T * C == 0) return;
    float* lse = static_cast<float*>(saved);
    if (dt == DType::bf16 && use_flash_forward() &&
        flash_attention_forward(out, lse, qkv, s.B, T, s.NH, HS, s.causal, cs()))
      return;
    const double sc = 1.0 / std::sqrt(static_cast<double>(HS));
    const std::int64_t hc = heads_per_chunk(dt, s);
    float* S = static_cast<float*>(get(6, sizeof(float) * hc * T * T));
    void* P = get(7, dtype_size(dt) * hc * T * T);
    for (std::int64_t b = 0; b < s.B; ++b)
      for (std::int64_t h0 = 0; h0 < s.NH; h0 += hc) {
        const std::int64_t nh = std::min(hc, s.NH - h0);
        const void* q = offset(qkv, dt, b * T * C3 + h0 * HS);
        const void* k = offset(q, dt, C);
        const void* v = offset(q, dt, 2 * C);
        gemm_ex(dt, DType::f32, false, true, T, T, HS, sc, q, C3, HS, k, C3, HS, 0.0, S, T,
                T * T, nh);
        launch_softmax_rows(dt, P, lse + (b * s.NH + h0) * T, S, nh * T, T, s.causal, cs());
        gemm_ex(dt, dt, false, false, T, HS, T, 1.0, P, T, T * T, v, C3, HS, 0.0,
                offset(out, dt, b * T * C + h0 * HS), C, HS, nh);
      }
  }
  void attention_backward(DType dt, const AttentionShape& s, void* dqkv, const void* dout,
                          const void* qkv, const void* out, const void* saved) override {
    check_dt("attention_backward", dt);
    const std::int64_t T = s.T, HS = s.HS, C = s.NH * HS, C3 = 3 * C;
    if (s.B * T * C == 0) return;
    const float* lse = static_cast<const float*>(saved);
    if (dt == DType::bf16 && use_flash_backward() && (HS == 64 || HS == 128)) {
      float* Dall = static_cast<float*>(get(8, sizeof(float) * s.B * s.NH * T));
      for (std::int64_t b = 0; b < s.B; ++b)
        launch_attention_rowdot(dt, Dall + b * s.NH * T, offset(dout, dt, b * T * C),
                                offset(out, dt, b * T * C), T, 0, s.NH, HS, C, cs());
      if (flash_attention_backward(dqkv, dout, qkv, lse, Dall, s.B, T, s.NH, HS, s.causal, cs()))
        return;
    }
    const double sc = 1.0 / std::sqrt(static_cast<double>(HS));
    const std::int64_t hc = heads_per_chunk(dt, s);
    float* S = static_cast<float*>(get(6, sizeof(float) * hc * T * T));
    void* P = get(7, dtype_size(dt) * hc * T * T);
    float* D = static_cast<float*>(get(8, sizeof(float) * hc * T));
    for (std::int64_t b = 0; b < s.B; ++b)
      for (std::int64_t h0 = 0; h0 < s.NH; h0 += hc) {
        const std::int64_t nh = std::min(hc, s.NH - h0);
        const std::int64_t qo = b * T * C3 + h0 * HS, oo = b * T * C + h0 * HS;
        const void* q = offset(qkv, dt, qo);
        const void* k = offset(q, dt, C);
        const void* v = offset(q, dt, 2 * C);
        void* dq = offset(dqkv, dt, qo);
        void* dk = offset(dq, dt, C);
        void* dv = offset(dq, dt, 2 * C);
        const void* dO = offset(dout, dt, oo);
        // P from the saved log-sum-exp
        gemm_ex(dt, DType::f32, false, true, T, T, HS, sc, q, C3, HS, k, C3, HS, 0.0, S, T,
                T * T, nh);
        launch_probs_from_lse(dt, P, S, lse + (b * s.NH + h0) * T, nh * T, T, s.causal, cs());
        // dV = P^T dO
        gemm_ex(dt, dt, true, false, T, HS, T, 1.0, P, T, T * T, dO, C, HS, 0.0, dv, C3, HS, nh);
        // dP = dO V^T (f32, into S); D = rowsum(dO * O)
        gemm_ex(dt, DType::f32, false, true, T, T, HS, 1.0, dO, C, HS, v, C3, HS, 0.0, S, T,
                T * T, nh);
        launch_attention_rowdot(dt, D, offset(dout, dt, b * T * C), offset(out, dt, b * T * C),
                                T, h0, nh, HS, C, cs());
        // dS = P (dP - D) scale, in place of P
        launch_softmax_backward(dt, P, S, D, nh * T, T, sc, cs());
        // dQ = dS K ; dK = dS^T Q
        gemm_ex(dt, dt, false, false, T, HS, T, 1.0, P, T, T * T, k, C3, HS, 0.0, dq, C3, HS, nh);
        gemm_ex(dt, dt, true, false, T, HS, T, 1.0, P, T, T * T, q, C3, HS, 0.0, dk, C3, HS, nh);
      }
  }

  void cross_entropy_forward(DType dt, void* losses, const void* logits,
                             const std::int32_t* targets, std::int64_t N, std::int64_t V,
                             std::int64_t ldv) override {
    launch_cross_entropy_forward(dt, losses, logits, targets, N, V, ldv, cs());
  }
  void cross_entropy_backward(DType dt, void* dlogits, const void* logits,
                              const std::int32_t* targets, std::int64_t N, std::int64_t V,
                              std::int64_t ldv, double grad_scale) override {
    launch_cross_entropy_backward(dt, dlogits, logits, targets, N, V, ldv, grad_scale, cs());
  }

  void adamw(DType dt, void* param, void* m, void* v, DType gdt, const void* grad,
             std::int64_t n, const AdamWParams& p) override {
    const double bc1 = 1.0 - std::pow(p.beta1, static_cast<double>(p.step));
    const double bc2 = 1.0 - std::pow(p.beta2, static_cast<double>(p.step));
    launch_adamw(dt, param, m, v, gdt, grad, n, p.lr, p.beta1, p.beta2, p.eps,
                 p.lr * p.weight_decay, p.grad_scale, bc1, bc2, cs());
  }

private:
  struct Live { std::size_t bytes, cap; };
  struct Cached { void* p; std::vector<cudaEvent_t> events; };
  struct ScratchBuf { void* p = nullptr; std::size_t bytes = 0; };

  cudaStream_t cs() const { return compute_->get(); }
  void check_dt(const char* what, DType dt) const {
    if (!supports(dt)) unsupported(what, dt);
  }

  // Files block p (capacity cap) in the cache, usable again once the work queued now on
  // every stream of this backend has passed. Needs mu_.
  void retire(void* p, std::size_t cap) noexcept {
    Cached c{p, {}};
    std::lock_guard<std::mutex> reg_lock(registry_->mu);
    for (cudaStream_t s : registry_->streams) {
      cudaEvent_t e = nullptr;
      if (cudaEventCreateWithFlags(&e, cudaEventDisableTiming) != cudaSuccess) continue;
      cudaEventRecord(e, s);
      c.events.push_back(e);
    }
    cached_.emplace(cap, std::move(c));
  }

  static void release_cached(Cached& c) {
    for (cudaEvent_t e : c.events) cudaEventDestroy(e);
    c.events.clear();
    cudaFree(c.p);
  }
  // A cached block of at least `cap` bytes (and at most twice that, so that small requests
  // do not pin large blocks) whose pending uses have all completed; nullptr if none.
  void* take_cached(std::size_t cap, std::size_t& real_cap) {
    for (auto it = cached_.lower_bound(cap); it != cached_.end() && it->first <= 2 * cap; ++it) {
      bool idle = true;
      for (cudaEvent_t e : it->second.events)
        if (cudaEventQuery(e) != cudaSuccess) { idle = false; break; }
      if (!idle) continue;
      for (cudaEvent_t e : it->second.events) cudaEventDestroy(e);
      void* p = it->second.p;
      // The block keeps its capacity, so that a later free files it under the right size.
      real_cap = it->first;
      cached_.erase(it);
      return p;
    }
    return nullptr;
  }

  // Scratch (private base): one growing buffer per slot, on the compute stream. A buffer
  // that grows goes to the block cache instead of cudaFree (which would synchronise the
  // device in the middle of a step); queued kernels may still read it, so it is reused
  // only after they pass, like any freed block. Scratch is not counted in bytes_in_use().
  void* get(int slot, std::size_t bytes) override {
    ScratchBuf& b = scratch_[static_cast<std::size_t>(slot)];
    if (bytes == 0) bytes = 1;
    if (b.bytes >= bytes) return b.p;
    const std::size_t want = round_size(std::max(bytes, b.bytes + b.bytes / 2));
    std::lock_guard<std::mutex> lock(mu_);
    if (b.p != nullptr) retire(b.p, b.bytes);
    b.p = nullptr;
    b.bytes = 0;
    std::size_t cap = want;
    void* p = take_cached(want, cap);
    if (p == nullptr && cudaMalloc(&p, want) != cudaSuccess) {
      cudaGetLastError();
      throw Error("cuda backend: out of device memory for " + std::to_string(want) +
                  " bytes of kernel workspace on " + name());
    }
    b.p = p;
    b.bytes = cap;
    return b.p;
  }

  int device_;
  std::string device_name_;
  std::size_t memory_capacity_ = 0;
  std::unique_ptr<CudaStream> compute_;
  cublasHandle_t blas_ = nullptr;
  void* blas_ws_ = nullptr;
  std::size_t blas_ws_bytes_ = 0;
  double* dev_result_ = nullptr;
  mutable std::mutex mu_;
  std::shared_ptr<StreamRegistry> registry_ = std::make_shared<StreamRegistry>();
  std::unordered_map<void*, Live> live_;
  std::multimap<std::size_t, Cached> cached_;
  std::size_t in_use_ = 0, peak_ = 0;
  ScratchBuf scratch_[9];
};

CudaStream::CudaStream(std::shared_ptr<StreamRegistry> reg, int device) : reg_(std::move(reg)) {
  MICS_CHECK_CUDA(cudaSetDevice(device));
  MICS_CHECK_CUDA(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking));
  std::lock_guard<std::mutex> lock(reg_->mu);
  reg_->streams.insert(s_);
}
CudaStream::~CudaStream() {
  {
    std::lock_guard<std::mutex> lock(reg_->mu);
    reg_->streams.erase(s_);
  }
  cudaStreamDestroy(s_);
}

}  // namespace
}  // namespace cuda

int cuda_device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

Backend* cuda_backend_with_compute_stream(void* native_compute_stream) noexcept {
  auto& l = cuda::live_backends();
  std::lock_guard<std::mutex> lock(l.mu);
  auto it = l.by_stream.find(static_cast<cudaStream_t>(native_compute_stream));
  return it == l.by_stream.end() ? nullptr : it->second;
}

std::unique_ptr<Backend> make_cuda_backend(int device) {
  return std::make_unique<cuda::CudaBackend>(device);
}

}  // namespace mics::device
