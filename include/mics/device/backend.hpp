#pragma once
// The device seam. Everything numeric that the model and the engine do goes through a
// Backend: memory, streams and events, GEMM, and the transformer's kernels. The CPU
// backend (lib/device/cpu) runs them with OpenBLAS and OpenMP; a CUDA backend
// (lib/device/cuda) implements the same calls with cuBLAS and its own kernels. Model and
// engine code contains no BLAS, OpenMP-kernel or CUDA call.
//
// Conventions for every kernel below (read these once; the per-call comments rely on them)
// - Pointers are device pointers obtained from this backend (allocate / Buffer), except
//   where a comment says "host". On the CPU backend device memory is host memory.
// - `dt` is the compute type of the floating-point tensors of the call. A backend that
//   does not support `dt` for a call throws mics::Error (see Backend::supports).
//   CPU: f32, f64 and bf16 (docs/DESIGN.md section 11). CUDA: f32 and bf16 (f64 optional).
// - "Stat" tensors (LayerNorm mean/rstd, per-row losses) are in accum_dtype(dt).
// - All tensors are dense row-major; shapes are given in comments as [rows, cols] or
//   [B, T, C] with the last index fastest. Sizes are element counts (int64).
// - Kernels run in order on the backend's compute stream (compute_stream()); on the CPU
//   they have finished when the call returns. Calls that return a value to the host
//   (sum_squares, sum) synchronise the compute stream.
// - "writes" = overwrites the output; "adds into" = output += contribution. Parameter
//   gradients are always added into (the model zeroes a bucket's gradient first), so a
//   tied weight or a bucket shared by several uses accumulates correctly.
// - Inputs and outputs of one call never alias unless the comment allows it.
// - Threads: allocate/deallocate and the byte counters may be called from any host thread;
//   kernels and copies on one Backend object must come from one host thread at a time
//   (the CPU backend keeps per-object scratch and runs its own OpenMP threads inside).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mics/device/dtype.hpp"

namespace mics::device {

// ---------------------------------------------------------------------------------------
// Streams and events. On the CPU every operation is synchronous, so streams and events
// are trivial objects whose waits return at once; the engine is still written against
// them so that on CUDA communication overlaps computation.
class Stream {
public:
  virtual ~Stream() = default;
  virtual void synchronize() = 0;            // block the host until queued work is done
  virtual void* native() noexcept = 0;       // cudaStream_t on CUDA, nullptr on CPU
};

class Event {
public:
  virtual ~Event() = default;
  virtual void record(Stream& s) = 0;        // mark the current end of s's queue
  virtual void wait(Stream& s) = 0;          // make s wait (device-side) for the mark
  virtual void synchronize() = 0;            // block the host until the mark is reached
  virtual bool ready() = 0;                  // non-blocking: has the mark been reached?
  virtual void* native() noexcept = 0;       // cudaEvent_t on CUDA, nullptr on CPU
};

// Shape of one multi-head attention call. qkv is [B, T, 3*C] with C = NH*HS: the first C
// columns are the queries, then the keys, then the values, and inside each part head h
// occupies columns [h*HS, (h+1)*HS).
struct AttentionShape {
  std::int64_t B = 0, T = 0, NH = 0, HS = 0;
  bool causal = true;                        // GPT: causal mask; BERT: bidirectional
};

// AdamW hyper-parameters for one call (one contiguous range of a shard with one weight
// decay setting; the engine splits a shard into ranges at tensor boundaries where the
// decay differs). Update, the same as torch.optim.AdamW:
//   g  = grad * grad_scale
//   m  = beta1*m + (1-beta1)*g;      v = beta2*v + (1-beta2)*g*g
//   mh = m / (1 - beta1^step);       vh = v / (1 - beta2^step)
//   p  = p - lr*weight_decay*p - lr * mh / (sqrt(vh) + eps)
struct AdamWParams {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.0;
  double grad_scale = 1.0;                   // e.g. 1/(W*A) times the clipping factor
  std::int64_t step = 1;                     // 1-based, for bias correction
};

class Backend {
public:
  virtual ~Backend() = default;
  Backend() = default;
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  // --- identity -------------------------------------------------------------------------
  virtual std::string name() const = 0;                  // "cpu", "cuda:0"
  virtual bool is_host_memory() const = 0;               // true on CPU: pointers are host
  virtual bool supports(DType dt) const = 0;             // compute type usable in kernels
  // Dense peak in FLOP/s for `dt` when known (for MFU), 0 when unknown.
  virtual double peak_flops(DType dt) const { (void)dt; return 0.0; }
  // Number of threads the CPU backend uses (OpenMP and BLAS); 1 on GPU backends.
  virtual int threads() const { return 1; }
  // False for the emulated backend, whose kernels only take their modelled time: losses,
  // norms and every tensor's contents are then meaningless and reports must say so.
  virtual bool computes_values() const { return true; }
  // Kernel time the compute model has charged so far (emulated backend; 0 elsewhere).
  virtual double modelled_seconds() const { return 0.0; }

  // --- memory -----------------------------------------------------------------------------
  // Device memory, aligned to at least 256 bytes. allocate(0) returns nullptr.
  // Throws mics::Error naming the size when the device is out of memory.
  virtual void* allocate(std::size_t bytes) = 0;
  virtual void deallocate(void* p) noexcept = 0;
  // Page-locked host memory where it matters (staging for MPI); plain host memory on CPU.
  virtual void* allocate_host(std::size_t bytes) = 0;
  virtual void deallocate_host(void* p) noexcept = 0;
  // Bytes currently allocated through allocate() and their high-water mark (the engine's
  // memory accounting reads these).
  virtual std::size_t bytes_in_use() const = 0;
  // Total device memory in bytes when the backend knows it (the GPU's), 0 otherwise (the
  // CPU backend: host memory is shared by the ranks of a node, the caller divides it).
  virtual std::size_t memory_capacity() const { return 0; }
  virtual std::size_t peak_bytes_in_use() const = 0;
  virtual void reset_peak() = 0;

  // Copies between host and device and within the device. With a stream they are
  // asynchronous on that stream (host memory must then be from allocate_host); with
  // nullptr they run on the compute stream and have finished when they return.
  virtual void copy_to_device(void* dst, const void* host_src, std::size_t bytes,
                              Stream* s = nullptr) = 0;
  virtual void copy_to_host(void* host_dst, const void* src, std::size_t bytes,
                            Stream* s = nullptr) = 0;
  virtual void copy(void* dst, const void* src, std::size_t bytes, Stream* s = nullptr) = 0;

  // --- streams and events ---------------------------------------------------------------
  virtual Stream& compute_stream() = 0;                  // where all kernels below run
  virtual std::unique_ptr<Stream> create_stream() = 0;   // e.g. one per communication group
  virtual std::unique_ptr<Event> create_event() = 0;
  virtual void synchronize() = 0;                        // wait for every stream

  // --- elementwise and reductions (n elements of dt) ------------------------------------
  virtual void fill(DType dt, void* x, std::int64_t n, double value) = 0;          // x = value
  virtual void scale(DType dt, void* x, std::int64_t n, double alpha) = 0;         // x *= alpha
  virtual void axpy(DType dt, void* y, const void* x, std::int64_t n, double alpha) = 0;  // y += alpha*x
  // out = a + b; out may alias a or b (used for the residual stream).
  virtual void add(DType dt, void* out, const void* a, const void* b, std::int64_t n) = 0;
  // dst = (dst_dt) src, converting element types (round to nearest even into bf16).
  // With dst_dt == src_dt this is a copy.
  virtual void cast(DType dst_dt, void* dst, DType src_dt, const void* src,
                    std::int64_t n) = 0;
  // dst += alpha * (dst_dt) src: accumulate a (reduce-scattered, possibly bf16) gradient
  // into an f32/f64 gradient shard without a temporary.
  virtual void accumulate(DType dst_dt, void* dst, DType src_dt, const void* src,
                          std::int64_t n, double alpha = 1.0) = 0;
  // Host results; accumulate in at least f64 on CPU, f32-or-better on CUDA.
  virtual double sum_squares(DType dt, const void* x, std::int64_t n) = 0;  // gradient norm^2
  virtual double sum(DType dt, const void* x, std::int64_t n) = 0;          // e.g. summed losses

  // --- GEMM -----------------------------------------------------------------------------
  // Row-major: C[M,N] = alpha * op(A) * op(B) + beta * C, op(A) is [M,K], op(B) is [K,N].
  // A is stored [M,K] (lda >= K), or [K,M] (lda >= M) when trans_a; likewise B is [K,N]
  // or, with trans_b, [N,K]. A, B, C are all of type dt; bf16 accumulates in f32.
  // beta == 0 means C is not read (it may hold garbage or NaN).
  virtual void gemm(DType dt, bool trans_a, bool trans_b, std::int64_t M, std::int64_t N,
                    std::int64_t K, double alpha, const void* A, std::int64_t lda,
                    const void* B, std::int64_t ldb, double beta, void* C,
                    std::int64_t ldc) = 0;
  // `batch` independent GEMMs with the same shapes; operand i starts at A + i*stride_a
  // (strides in elements).
  virtual void gemm_strided_batched(DType dt, bool trans_a, bool trans_b, std::int64_t M,
                                    std::int64_t N, std::int64_t K, double alpha,
                                    const void* A, std::int64_t lda, std::int64_t stride_a,
                                    const void* B, std::int64_t ldb, std::int64_t stride_b,
                                    double beta, void* C, std::int64_t ldc,
                                    std::int64_t stride_c, std::int64_t batch) = 0;
  // Linear layer helpers around gemm, so that a backend may fuse them:
  // out[N,C] += bias[C] broadcast over rows.
  virtual void add_bias(DType dt, void* out, const void* bias, std::int64_t N,
                        std::int64_t C) = 0;
  // dbias[C] adds into it the column sums of dout[N,C].
  virtual void bias_backward(DType dt, void* dbias, const void* dout, std::int64_t N,
                             std::int64_t C) = 0;
  // A linear layer's forward: out[N,OC] writes inp[N,IC] weight[OC,IC]^T + bias[OC], plus
  // residual[N,OC] when residual is not null (it must not alias out). The default is the
  // GEMM and add_bias (after copying the residual into out); a backend may instead write
  // bias (+ residual) into out and let the GEMM add into it, one pass over out fewer.
  virtual void linear_forward(DType dt, void* out, const void* inp, const void* weight,
                              const void* bias, const void* residual, std::int64_t N,
                              std::int64_t OC, std::int64_t IC) {
    if (residual != nullptr) {
      copy(out, residual, static_cast<std::size_t>(N * OC) * dtype_size(dt));
      add_bias(dt, out, bias, N, OC);
      gemm(dt, false, true, N, OC, IC, 1.0, inp, IC, weight, IC, 1.0, out, OC);
    } else {
      gemm(dt, false, true, N, OC, IC, 1.0, inp, IC, weight, IC, 0.0, out, OC);
      add_bias(dt, out, bias, N, OC);
    }
  }

  // --- transformer kernels ----------------------------------------------------------------
  // Embedding. tokens: int32 [B*T] device, each in [0, V) (unchecked here: the model
  // validates on the host). wte [V,C], wpe [>=T, C] (row t is position t).
  // out[B*T, C] writes wte[tokens[i]] + wpe[i % T].
  virtual void embedding_forward(DType dt, void* out, const std::int32_t* tokens,
                                 const void* wte, const void* wpe, std::int64_t B,
                                 std::int64_t T, std::int64_t C) = 0;
  // dwte[V,C] and dwpe[>=T,C]: add into them the gradient from dout[B*T, C]. Either may
  // be nullptr to skip it. Must be deterministic: the same inputs give the same bits on
  // one backend (no float atomics in an unordered sequence), since the engine's tests
  // compare layouts bit for bit across replicas.
  virtual void embedding_backward(DType dt, void* dwte, void* dwpe, const void* dout,
                                  const std::int32_t* tokens, std::int64_t B,
                                  std::int64_t T, std::int64_t C) = 0;

  // LayerNorm over the last dimension of inp[N,C]: out writes (x-mean)*rstd*weight+bias,
  // with rstd = 1/sqrt(var + eps), var the biased variance. mean[N], rstd[N] (stat type)
  // write the statistics for the backward pass.
  virtual void layernorm_forward(DType dt, void* out, void* mean, void* rstd,
                                 const void* inp, const void* weight, const void* bias,
                                 std::int64_t N, std::int64_t C, double eps) = 0;
  // dinp[N,C] ADDS INTO (the residual stream's gradient flows through it unchanged);
  // dweight[C], dbias[C] add into.
  virtual void layernorm_backward(DType dt, void* dinp, void* dweight, void* dbias,
                                  const void* dout, const void* inp, const void* weight,
                                  const void* mean, const void* rstd, std::int64_t N,
                                  std::int64_t C) = 0;

  // GELU, tanh approximation: 0.5*x*(1 + tanh(sqrt(2/pi)*(x + 0.044715*x^3))).
  // out writes; may alias inp.
  virtual void gelu_forward(DType dt, void* out, const void* inp, std::int64_t n) = 0;
  // dinp writes dout * gelu'(inp); may alias dout.
  virtual void gelu_backward(DType dt, void* dinp, const void* inp, const void* dout,
                             std::int64_t n) = 0;
  // gelu_backward over [N,C] (dinp may alias dout), and dbias[C] adds into it the column
  // sums of the resulting dinp (the bias gradient of the layer before the GELU). The
  // default is the two calls; a backend may do both in one pass.
  virtual void gelu_backward_bias(DType dt, void* dinp, void* dbias, const void* inp,
                                  const void* dout, std::int64_t N, std::int64_t C) {
    gelu_backward(dt, dinp, inp, dout, N * C);
    bias_backward(dt, dbias, dinp, N, C);
  }

  // Scaled dot-product attention per (batch, head): softmax(q k^T / sqrt(HS) [+ causal
  // mask]) v. qkv [B,T,3C] (see AttentionShape), out [B,T,C] writes.
  // `saved` is a buffer of attention_saved_bytes(dt, shape) bytes the caller keeps from
  // forward to backward (the CPU backend stores each row's log-sum-exp, in f32 for bf16;
  // a CUDA backend may do the same). Any temporary workspace is the
  // backend's own business (allocated once and cached, never per call in steady state).
  virtual std::size_t attention_saved_bytes(DType dt, const AttentionShape& s) const = 0;
  virtual void attention_forward(DType dt, const AttentionShape& s, void* out, void* saved,
                                 const void* qkv) = 0;
  // dqkv [B,T,3C] writes the gradient w.r.t. qkv given dout [B,T,C]; qkv, out and saved
  // are the forward pass's.
  virtual void attention_backward(DType dt, const AttentionShape& s, void* dqkv,
                                  const void* dout, const void* qkv, const void* out,
                                  const void* saved) = 0;

  // Softmax cross-entropy over rows of logits [N, V] (row stride ld >= V; columns past V
  // are ignored and never written). targets: int32 [N] device; a target < 0 marks an
  // ignored row (BERT's unmasked positions, padding).
  // losses[N] (stat type) writes -log softmax(logits)[target], 0 for ignored rows.
  virtual void cross_entropy_forward(DType dt, void* losses, const void* logits,
                                     const std::int32_t* targets, std::int64_t N,
                                     std::int64_t V, std::int64_t ld) = 0;
  // dlogits [N, ld] writes (softmax(logits) - onehot(target)) * grad_scale for counted
  // rows and 0 for ignored rows (columns [0,V) only). dlogits may alias logits (in place).
  virtual void cross_entropy_backward(DType dt, void* dlogits, const void* logits,
                                      const std::int32_t* targets, std::int64_t N,
                                      std::int64_t V, std::int64_t ld,
                                      double grad_scale) = 0;
  // The same pair with a stat-type buffer lse[N] that the caller keeps from forward to
  // backward, so that a backend may save each row's log-sum-exp in the forward pass and
  // form the gradient in one pass over the logits (no second search for the maximum and
  // sum of exponentials). The defaults neither write nor read lse; a backend overrides
  // both or neither.
  virtual void cross_entropy_forward_lse(DType dt, void* losses, void* lse, const void* logits,
                                         const std::int32_t* targets, std::int64_t N,
                                         std::int64_t V, std::int64_t ld) {
    (void)lse;
    cross_entropy_forward(dt, losses, logits, targets, N, V, ld);
  }
  virtual void cross_entropy_backward_lse(DType dt, void* dlogits, const void* logits,
                                          const void* lse, const std::int32_t* targets,
                                          std::int64_t N, std::int64_t V, std::int64_t ld,
                                          double grad_scale) {
    (void)lse;
    cross_entropy_backward(dt, dlogits, logits, targets, N, V, ld, grad_scale);
  }

  // --- optimizer ---------------------------------------------------------------------------
  // AdamW on a shard range of n elements (see AdamWParams). dt is f32 (or f64 in tests):
  // param, m, v are of type dt; grad is of type grad_dt (f32/f64, or bf16).
  virtual void adamw(DType dt, void* param, void* m, void* v, DType grad_dt,
                     const void* grad, std::int64_t n, const AdamWParams& p) = 0;
  // adamw, then grad[0,n) = 0: the engine's gradient accumulator is ready for the next
  // step. The default is the two calls; a backend may zero in the same pass.
  virtual void adamw_zero_grad(DType dt, void* param, void* m, void* v, DType grad_dt,
                               void* grad, std::int64_t n, const AdamWParams& p) {
    adamw(dt, param, m, v, grad_dt, grad, n, p);
    fill(grad_dt, grad, n, 0.0);
  }
};

// A device allocation owned by one Buffer (RAII; move-only). Destroy it before its
// Backend.
class Buffer {
public:
  Buffer() = default;
  Buffer(Backend& be, std::size_t bytes) : be_(&be), p_(be.allocate(bytes)), bytes_(bytes) {}
  Buffer(Backend& be, DType dt, std::int64_t n)
      : Buffer(be, dtype_size(dt) * static_cast<std::size_t>(n)) {}
  ~Buffer() { release(); }
  Buffer(Buffer&& o) noexcept : be_(o.be_), p_(o.p_), bytes_(o.bytes_) {
    o.p_ = nullptr;
    o.bytes_ = 0;
  }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      release();
      be_ = o.be_; p_ = o.p_; bytes_ = o.bytes_;
      o.p_ = nullptr; o.bytes_ = 0;
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* get() const noexcept { return p_; }
  template <class T> T* as() const noexcept { return static_cast<T*>(p_); }
  std::size_t bytes() const noexcept { return bytes_; }
  void release() noexcept {
    if (p_ != nullptr) be_->deallocate(p_);
    p_ = nullptr;
    bytes_ = 0;
  }

private:
  Backend* be_ = nullptr;
  void* p_ = nullptr;
  std::size_t bytes_ = 0;
};

// Pointer arithmetic in elements of a runtime type.
inline void* offset(void* p, DType dt, std::int64_t elements) {
  return static_cast<char*>(p) + static_cast<std::size_t>(elements) * dtype_size(dt);
}
inline const void* offset(const void* p, DType dt, std::int64_t elements) {
  return static_cast<const char*>(p) + static_cast<std::size_t>(elements) * dtype_size(dt);
}

// ---------------------------------------------------------------------------------------
// Registry: which backends this build and machine offer. Tests iterate over
// available_backends() so that each test body is written once and runs on all of them.
//
// "cpu" is always available. "cuda" is listed when the library was built with
// MICS_HAVE_CUDA (lib/device/cuda present and MICS_ENABLE_CUDA on) and cudaGetDeviceCount
// reports a GPU.
std::vector<std::string> available_backends();

// threads <= 0: the CPU backend uses OMP_NUM_THREADS / omp_get_max_threads().
// device: GPU ordinal for "cuda". Throws mics::UsageError for an unknown or unavailable
// name, naming it and listing the available ones.
std::unique_ptr<Backend> make_backend(const std::string& name, int threads = 0,
                                      int device = 0);

std::unique_ptr<Backend> make_cpu_backend(int threads = 0);
// How the CPU backend multiplies bf16 matrices in this process: "amx" (Intel AMX tiles),
// "avx512-bf16" (AVX-512 BF16 dot products) or "portable" (f32 loops, several times
// slower than its f32 GEMM). MICS_BF16_GEMM caps the choice (lib/device/cpu/bf16_gemm.hpp).
std::string cpu_bf16_gemm_path();
// What multiplies f32 and f64 matrices on the CPU backend: "OpenBLAS <core> kernels", with
// the OPENBLAS_CORETYPE that chose them when one is set (a machine may pin older kernels).
std::string cpu_blas_kernels();

// The compute model (lib/device/emulated): host memory and real copies, but every kernel
// only waits (sleeping) max(FLOPs / (tflops x 1e12), bytes / (mem_gbps x 1e9)) seconds;
// mem_gbps = 0 leaves memory traffic out. Not among available_backends(): it computes
// nothing, so the numeric tests must not run on it. make_backend also accepts
// "emulated:TFLOPS[:GBPS]". Throws mics::UsageError for a non-positive rate.
std::unique_ptr<Backend> make_emulated_backend(double tflops, double mem_gbps = 0.0);

#ifdef MICS_HAVE_CUDA
// Implemented in lib/device/cuda. cuda_device_count() returns 0 (never throws) when no
// GPU or driver is present.
int cuda_device_count() noexcept;
std::unique_ptr<Backend> make_cuda_backend(int device = 0);
// The live CUDA backend whose compute stream is `native_compute_stream` (a cudaStream_t),
// or nullptr. Communication code handed only that stream creates its own streams through
// the backend (create_stream), so that the caching allocator also waits for the work
// queued on them before it hands a freed block out again.
Backend* cuda_backend_with_compute_stream(void* native_compute_stream) noexcept;
#endif

}  // namespace mics::device
